"""Request ids, one JSON access-log line per request, and Prometheus metrics.

The wrapper sits around Litestar's own ASGI handler, outside routing, so 404s and 405s are logged,
counted and carry an `X-Request-ID` like every other response.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["JsonFormatter", "configure_logging", "install_request_context"]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
REQUESTS = Counter("cw_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "cw_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
access_log = logging.getLogger("carbon_wallet.access")


class JsonFormatter(logging.Formatter):
    _skip = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update({k: v for k, v in record.__dict__.items() if k not in self._skip})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("arq", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def _route_template(scope: Scope) -> str:
    """The route's template (`/v1/me/sessions/{session_id}`), never the raw path: bounded labels."""
    return scope.get("path_template") or "unmatched"


def install_request_context(app: Litestar, *, log_requests: bool) -> None:
    inner: ASGIApp = app.asgi_handler

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope["state"]["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await inner(scope, receive, send_with_id)
        finally:
            elapsed_s = time.perf_counter() - started
            route = _route_template(scope)
            REQUESTS.labels(scope["method"], route, str(status)).inc()
            LATENCY.labels(scope["method"], route).observe(elapsed_s)
            if log_requests:
                user = scope.get("user")
                access_log.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed_s * 1000, 2),
                        "holder_id": str(getattr(user, "holder_id", "")) or None,
                    },
                )

    app.asgi_handler = handle
