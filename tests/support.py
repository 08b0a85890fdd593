"""Test helpers: real API and worker processes on the session's real PostgreSQL and Valkey."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ApiProcess:
    """`uvicorn --factory api.app:create_app` with extra environment, serving on a free loopback port."""

    def __init__(self, log_dir: Path, *, workers: int = 1, **env: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"api-{self.port}.log"
        self._env = {**os.environ, **env}
        self._workers = workers
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30) -> ApiProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", str(self._workers), "--no-access-log"],
            cwd=ROOT, env=self._env, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT,
        )
        wait_until(lambda: _status(self.base_url + "/ready") == 200, timeout_s, self.log_path)
        return self

    def stop(self) -> None:
        terminate(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class WorkerProcess:
    """`arq api.worker.WorkerSettings` as its own process, so tests can kill it like production would."""

    def __init__(self, log_dir: Path, **env: str) -> None:
        self.log_path = log_dir / f"worker-{uuid.uuid4().hex[:8]}.log"
        self._env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "arq", "api.worker.WorkerSettings"],
            cwd=ROOT, env=self._env, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
        )
        return self

    def kill(self) -> None:
        """SIGKILL, then wait out the leases it may have held (`wallet.lease`, at most 15 s), so the next test's
        follower step does not find the boards taken by a dead worker."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            wait_for_leases(self._env["REDIS_URL"])

    def stop(self) -> None:
        terminate(self.proc)


def wait_for_leases(redis_url: str) -> None:
    from redis import Redis
    from redis.exceptions import RedisError

    from api.worker import SENDER_LEASE
    from gamification.leaderboards.follow import LOCK
    from wallet.lease import TTL

    with Redis.from_url(redis_url, socket_connect_timeout=2) as redis:
        try:
            redis.ping()
        except RedisError:  # a test's own Redis that it has stopped: nothing to wait for
            return
        deadline = time.monotonic() + TTL + 2
        while redis.exists(LOCK) or any(redis.scan_iter(f"{SENDER_LEASE}*", count=100)):
            assert time.monotonic() < deadline, "a killed worker's lease outlived its TTL"
            time.sleep(0.1)


def terminate(proc: subprocess.Popen[bytes] | None, grace_s: float = 10) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within `grace_s`."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def race(
    n: int, open_client: Callable[[], httpx.Client], act: Callable[[httpx.Client], httpx.Response]
) -> list[httpx.Response]:
    """Run `act` on `n` threads released together by a barrier. Each thread opens and warms its own
    connection first, so the requests really arrive at the same moment."""
    barrier = threading.Barrier(n)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def one() -> None:
        with open_client() as http:
            http.get("/health")
            barrier.wait()
            response = act(http)
            response.read()
        with lock:
            results.append(response)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == n, "every racing request must finish"
    return results


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return -1


def wait_until(check: Any, timeout_s: float, log_path: Path | None = None, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval_s)
    tail = log_path.read_text(errors="replace")[-2000:] if log_path and log_path.exists() else ""
    raise AssertionError(f"condition not met within {timeout_s}s\n{tail}")


def unique_email(tag: str = "r") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


def unique_phone() -> str:
    return "139" + str(uuid.uuid4().int % 10**8).zfill(8)


@dataclass
class Resident:
    """A registered holder with live tokens, for tests that act as that resident."""

    client: httpx.Client
    login: str
    password: str
    holder_id: str
    session_id: str
    access_token: str
    refresh_token: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.post(path, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    def patch(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.patch(path, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.request("DELETE", path, headers={**self.headers, **kw.pop("headers", {})}, **kw)


def register(client: httpx.Client, *, email: str | None = None, password: str = PASSWORD, **body: Any) -> Resident:
    email = email or unique_email()
    payload = {"email": email, "password": password, **body}
    if body.get("phone"):
        payload.pop("email")
    r = client.post("/v1/auth/register", json=payload)
    assert r.status_code == 201, r.text
    data = r.json()
    return Resident(
        client=client, login=payload.get("email") or payload["phone"], password=password,
        holder_id=data["holder_id"], session_id=data["session_id"],
        access_token=data["access_token"], refresh_token=data["refresh_token"],
    )


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """Every error is RFC 9457: problem+json, the status repeated in the body, a stable code and a detail."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status
    assert body["type"].endswith("/" + body["code"])
    assert body["detail"]
    if code is not None:
        assert body["code"] == code, body
    return body


def stop_quietly(*things: Any) -> None:
    for thing in things:
        with contextlib.suppress(Exception):
            thing.stop()


async def deliver_pending_events() -> int:
    """Relay passes with their handlers run in-process until nothing is due: what a worker does, without arq
    in between. One pass takes at most RELAY_BATCH_MAX events, oldest first, and every credited activity
    records one, so a single pass may not reach the newest. Needs the `db` fixture's pool."""
    from api.events import EVENT_HANDLERS
    from wallet.outbox.service import handle_event, relay_due_events

    delivered = 0
    while True:
        queued: list[uuid.UUID] = []

        async def enqueue(event_id: uuid.UUID, attempt: int, queued: list[uuid.UUID] = queued) -> None:
            queued.append(event_id)

        if not await relay_due_events(enqueue, redeliver_after_s=0):
            return delivered
        for event_id in queued:  # each is marked handled, so the next pass moves on
            await handle_event(event_id, EVENT_HANDLERS)
        delivered += len(queued)
