"""A fake merchant for mall tests: a real HTTP server on 127.0.0.1 (an outside party, so a local server is the
honest stand-in) that checks what the wallet sends before it answers.

Every call is recorded with the problems found in it: a body that is not the `redemption.fulfil` message, an
`Idempotency-Key` that is not the `webhook-id` or not `redemption-{id}`, or a Standard Webhooks signature that
does not verify with the partner's webhook secret. A call with problems is answered `401`, as a real merchant
would refuse it; the others get the answer the test scripted (`answer(...)`, or a queue of them).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from wallet.errors import DomainError
from wallet.partners.signatures import verify

__all__ = ["FakeMerchant", "MerchantCall"]


@dataclass
class MerchantCall:
    """One request the merchant received: lower-cased headers, the raw body, and what was wrong with it."""

    path: str
    headers: dict[str, str]
    body: bytes
    problems: list[str] = field(default_factory=list)

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


def problems_of(headers: dict[str, str], body: bytes, secret: str) -> list[str]:
    """What a careful merchant would object to in a fulfilment call."""
    found: list[str] = []
    if not headers.get("content-type", "").startswith("application/json"):
        found.append(f"content-type is {headers.get('content-type')!r}")
    try:
        message = json.loads(body)
    except ValueError:
        return [*found, "body is not JSON"]
    if not isinstance(message, dict):
        return [*found, "body is not a JSON object"]
    if message.get("type") != "redemption.fulfil":
        found.append(f"type is {message.get('type')!r}")
    for name, kind in (("redemption_id", int), ("reward_code", str), ("energy_price", int)):
        if not isinstance(message.get(name), kind) or isinstance(message.get(name), bool):
            found.append(f"{name} missing or not {kind.__name__}: {message.get(name)!r}")
    expected = f"redemption-{message.get('redemption_id')}"
    if headers.get("idempotency-key") != expected:
        found.append(f"idempotency-key {headers.get('idempotency-key')!r} is not {expected!r}")
    if headers.get("webhook-id") != headers.get("idempotency-key"):
        found.append(f"webhook-id {headers.get('webhook-id')!r} differs from the idempotency-key")
    try:
        verify([secret], headers, body)
    except DomainError as exc:
        found.append(f"signature: {exc.code}: {exc.detail}")
    return found


class FakeMerchant:
    """`with FakeMerchant(webhook_secret) as merchant:` serves on `merchant.url` until the block ends."""

    def __init__(self, webhook_secret: str) -> None:
        self.secret = webhook_secret
        self.calls: list[MerchantCall] = []
        self._default: tuple[int, Any] = (200, {"voucher_code": "M-DEFAULT"})
        self._queue: deque[tuple[int, Any]] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/fulfil"

    def answer(self, status: int, body: Any = None, *, times: int | None = None) -> None:
        """Answer the next `times` calls like this (every call from now on when `times` is None). `body` is sent
        as JSON, or as it is when it is bytes."""
        with self._lock:
            if times is None:
                self._default = (status, body)
                self._queue.clear()
            else:
                self._queue.extend([(status, body)] * times)

    @property
    def problems(self) -> list[str]:
        return [p for call in self.calls for p in call.problems]

    def __enter__(self) -> FakeMerchant:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def _next(self, call: MerchantCall) -> tuple[int, Any]:
        with self._lock:
            self.calls.append(call)
            if call.problems:
                return 401, {"error": "; ".join(call.problems)}
            return self._queue.popleft() if self._queue else self._default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        merchant = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                call = MerchantCall(self.path, headers, body, problems_of(headers, body, merchant.secret))
                status, answer = merchant._next(call)
                raw = answer if isinstance(answer, bytes) else b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
