"""Helpers for the notification delivery tests: the fake providers of push_support answering per device token
(and able to hold one message in flight), a `Sender` wired to them the way the worker wires its channels, and
short ways to tell a resident something and read back what became of each delivery."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from notifications.channels.apns import ApnsChannel
from notifications.channels.base import Channel
from notifications.channels.fcm import FcmChannel
from notifications.channels.log import LogChannel
from notifications.delivery.send import Policy, Sender
from notifications.live import live_channel
from notifications.notify import notify
from tests.push_support import FakeApns, FakeClock, FakeGoogle, Reply
from tests.support import Resident
from wallet.db import connection

FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
UNREGISTERED = Reply(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": "Requested entity was not found.",
                                     "details": [{"@type": FCM_ERROR, "errorCode": "UNREGISTERED"}]}})


def fcm_error(status: int, code: str, retry_after: str | None = None) -> Reply:
    return Reply(status, {"error": {"code": status, "status": code, "message": f"{code} (fake)"}},
                 {"retry-after": retry_after} if retry_after else {})


class Google(FakeGoogle):
    """FakeGoogle answering chosen tokens their own way (`by_token`), and holding the first send that carries
    `hold` in its body until `release` is set (a provider that does not answer)."""

    def __init__(self, clock: FakeClock) -> None:
        self.by_token: dict[str, Reply] = {}
        self.hold: str | None = None
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        super().__init__(clock)

    async def _route(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if self.hold is not None and path.startswith("/v1/") and self.hold.encode() in body:
            self.hold = None
            self.held.set()
            await self.release.wait()
        return await super()._route(method, path, headers, body)

    def _send(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        reply = super()._send(path, headers, body)
        if reply.status != 200:
            return reply
        return self.by_token.get((self.sends[-1]["message"] or {}).get("token"), reply)

    def to(self, token: str) -> list[dict[str, Any]]:
        """The FCM messages sent to one token, in order."""
        return [s["message"] for s in self.sends if (s["message"] or {}).get("token") == token]


class Apple(FakeApns):
    """FakeApns answering chosen device tokens their own way."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.by_token: dict[str, Reply] = {}

    def handle(self, pairs: list[tuple[str, str]], raw: bytes) -> Reply:
        reply = super().handle(pairs, raw)
        token = dict(pairs).get(":path", "").rsplit("/", 1)[-1]
        return self.by_token.get(token, reply) if reply.status == 200 else reply

    def to(self, token: str) -> list[Any]:
        return [r for r in self.requests if r.path == f"/3/device/{token}"]


@dataclass
class Providers:
    google: Google
    apple: Apple
    redis: Redis
    channels: dict[str, Channel] = field(default_factory=dict)

    def sender(self, **policy: Any) -> Sender:
        return Sender(self.channels, self.redis, Policy(**policy))

    @property
    def problems(self) -> list[str]:
        return self.google.problems + self.apple.problems


@asynccontextmanager
async def providers() -> AsyncIterator[Providers]:
    clock = FakeClock()
    google, apple = await Google(clock).start(), await Apple(clock).start()
    redis = Redis.from_url(os.environ["REDIS_URL"])
    channels: dict[str, Channel] = {"fcm": FcmChannel(google.config(), clock=clock, timeout_s=5),
                                    "apns": ApnsChannel(apple.config(), clock=clock, timeout_s=5),
                                    "log": LogChannel()}
    try:
        yield Providers(google, apple, redis, channels)
    finally:
        google.release.set()
        for channel in channels.values():
            await channel.aclose()
        await redis.aclose()
        await google.close()
        await apple.close()


async def settle_leftovers() -> None:
    """Earlier tests' pending deliveries (deferred, retrying) would be claimed by this test's steps, which
    run with `now` hours ahead: settle them so each test's sender sees only its own residents."""
    async with connection() as conn:
        await conn.execute("""UPDATE delivery SET state = 'skipped', reason = 'test: settled before another test',
                                     done_at = now(), claimed_until = NULL WHERE state = 'pending'""")


def fcm_token() -> str:
    return f"fcm-{secrets.token_urlsafe(24)}:APA91b{secrets.token_hex(8)}"


def apns_token() -> str:
    return secrets.token_hex(32)


def phone(resident: Resident, platform: str = "fcm") -> tuple[int, str]:
    """A phone registered over HTTP by the resident's session: (device id, token)."""
    token = fcm_token() if platform == "fcm" else apns_token()
    r = resident.post("/v1/me/devices", json={"platform": platform, "token": token, "app_version": "7.0.0"})
    assert r.status_code == 200, r.text
    return r.json()["id"], token


async def tell(holder: str | uuid.UUID, kind: str, params: dict[str, Any] | None = None, *,
               event: uuid.UUID | None = None) -> int:
    """notify() one resident; the inbox message id."""
    holder_id = uuid.UUID(str(holder))
    event = event or uuid.uuid4()
    async with connection() as conn:
        await notify(conn, holder_id, kind, params or {}, event_id=event)
        return await conn.fetchval("SELECT id FROM inbox_message WHERE holder_id = $1 AND event_id = $2 AND kind = $3",
                                   holder_id, event, kind)


async def deliveries(message_id: int) -> dict[str, dict[str, Any]]:
    """A message's deliveries by "live" or "push:<device id>"."""
    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT id, channel, device, state, attempts, due_at, claimed_until, reason, provider_id FROM delivery
               WHERE message = $1""", message_id)
    return {("live" if r["channel"] == "live" else f"push:{r['device']}"): dict(r) for r in rows}


async def push_of(message_id: int, device: int) -> dict[str, Any]:
    return (await deliveries(message_id))[f"push:{device}"]


async def device_ids(holder: str | uuid.UUID) -> set[int]:
    async with connection() as conn:
        return {r["id"] for r in await conn.fetch("SELECT id FROM device WHERE holder = $1", uuid.UUID(str(holder)))}


async def live_events(redis: Redis, *holders: str | uuid.UUID) -> Any:
    """A subscribed pub/sub on the residents' live channels; read with `next_events`."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(*(live_channel(uuid.UUID(str(h))) for h in holders))
    for _ in holders:
        assert (await pubsub.get_message(timeout=10))["type"] == "subscribe"
    return pubsub


async def next_events(pubsub: Any, n: int) -> list[tuple[str, dict[str, Any]]]:
    """The next `n` published events as (channel, decoded JSON); fails after a generous timeout."""
    got = []
    while len(got) < n:
        message = await pubsub.get_message(timeout=10)
        assert message is not None, f"only {len(got)} of {n} live events arrived: {got}"
        if message["type"] == "message":
            got.append((message["channel"].decode(), json.loads(message["data"])))
    return got


def tomorrow_at(hour: int, minute: int = 0) -> datetime:
    """An instant tomorrow (UTC), so every delivery planned now is already due at it."""
    day = (datetime.now(UTC) + timedelta(days=1)).date()
    return datetime.combine(day, time(hour, minute), tzinfo=UTC)


def daytime_zone() -> str:
    """A time zone where it is now between 05:00 and 19:00, so 'today' there does not end during the test."""
    now = datetime.now(UTC)
    for zone in ("Asia/Shanghai", "Europe/London", "America/Los_Angeles"):
        if 5 <= now.astimezone(ZoneInfo(zone)).hour < 19:
            return zone
    raise AssertionError("three zones eight hours apart: one is in daytime")
