"""The in-app live stream: Server-Sent Events fed by Litestar channels over Redis pub/sub, so an event published by
the worker (`notifications.live.publish`) reaches the resident on whichever API process holds the connection.

Pub/sub keeps no history, so PostgreSQL's inbox is the record: a client reconnecting with `Last-Event-ID` first
gets the inbox messages it missed. Each process keeps one pub/sub connection to Redis however many streams it
serves; each stream ends when the access token it was opened with expires, so a revoked session stops listening
within one token lifetime and the client reconnects with a fresh token and its `Last-Event-ID`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.background_tasks import BackgroundTask
from litestar.channels import ChannelsPlugin, Subscriber
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.auth.middleware import Principal
from api.auth.tokens import AccessClaims
from api.problems import problem_responses
from api.security import BEARER
from notifications.live import live_channel, missed_events

__all__ = ["HEARTBEAT_S", "LiveController", "live_plugin"]

# A comment line this often keeps proxies and NATs from closing an idle stream (the environment variable is for
# tests, which cannot wait 15 s).
HEARTBEAT_S = float(os.environ.get("CW_LIVE_HEARTBEAT_S", "15"))
SSE_MEDIA_TYPE = "text/event-stream"
RETRY_MS = 3_000  # how long a disconnected EventSource waits before reconnecting
BACKLOG_MAX = 1_000  # events held for one slow client; beyond that new ones wait for the replay on reconnect
SEEN_MAX = 1_000  # ids remembered per stream to drop duplicates (replay overlap, a retried job publishing twice)
RECONNECT_S = (0.2, 5.0)  # first and longest pause before the pub/sub connection tries Redis again

log = logging.getLogger("carbon_wallet.live")
_encode = msgspec.json.Encoder().encode
_KEEP_ALIVE = ServerSentEventMessage(data=None, comment="keep-alive")  # data=None: no empty `data:` line (an event)
_releasing: set[asyncio.Task[None]] = set()  # unsubscriptions in flight, referenced until done

Req = Request[Principal, AccessClaims, State]


class _PubSubBackend(RedisChannelsPubSubBackend):
    """Litestar's backend lets one Redis error end its event loop, after which the process delivers nothing until
    restarted. This one tells the plugin (`on_lost`: whatever was published meanwhile is gone, so open streams end
    and their clients reconnect and replay from the inbox), waits, and reads again: redis-py reconnects and
    re-subscribes every channel it still holds."""

    def __init__(self, *, redis: Redis) -> None:
        super().__init__(redis=redis)
        self.on_lost: Callable[[], None] = lambda: None

    async def stream_events(self) -> AsyncGenerator[tuple[str, Any], None]:
        pause = RECONNECT_S[0]
        while True:
            try:
                async for item in super().stream_events():
                    pause = RECONNECT_S[0]
                    yield item
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("live pub/sub lost Redis (%s); retrying in %.1fs", type(exc).__name__, pause)
                self.on_lost()
                await asyncio.sleep(pause)
                pause = min(pause * 2, RECONNECT_S[1])

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        names = list(channels)
        connection = self._pub_sub.connection
        if connection is not None and connection.is_connected:
            try:
                await super().unsubscribe(names)
                return
            except RedisError:
                pass
        # Redis is gone, and with it this connection's subscriptions: forget them, or the reconnect would subscribe
        # them again for nobody (and don't try a connect per stream that ends because of the outage).
        for name in names:
            self._pub_sub.channels.pop(name.encode(), None)
            self._pub_sub.pending_unsubscribe_channels.discard(name.encode())

    async def on_shutdown(self) -> None:
        try:
            await super().on_shutdown()
        finally:
            await self._redis.aclose()


class _LivePlugin(ChannelsPlugin):
    """Litestar registers a subscriber before it asks Redis to SUBSCRIBE; if that fails the channel looks subscribed
    for good and the holder hears nothing in this process again. Undo the registration on failure, and serialise
    (un)subscribing so a connect racing a disconnect of the same holder cannot end up unsubscribed in Redis. When
    the backend loses Redis, every open stream ends so its client reconnects with `Last-Event-ID`."""

    def __init__(self, backend: _PubSubBackend) -> None:
        super().__init__(backend, arbitrary_channels_allowed=True, subscriber_max_backlog=BACKLOG_MAX)
        self._membership = asyncio.Lock()
        backend.on_lost = self._end_streams

    def _end_streams(self) -> None:
        for subscribers in self._channels.values():
            for subscriber in subscribers:
                subscriber.put_nowait(None)  # ends its stream (see `_next`)

    async def subscribe(self, channels: str | Iterable[str], history: int | None = None) -> Subscriber:
        names = [channels] if isinstance(channels, str) else list(channels)
        async with self._membership:
            before = {name: set(self._channels.get(name, ())) for name in names}
            try:
                return await super().subscribe(names, history)
            except BaseException:
                self._channels.update(before)
                self._prune(names)
                raise

    async def unsubscribe(self, subscriber: Subscriber, channels: str | Iterable[str] | None = None) -> None:
        names = list(self._channels) if channels is None else [channels] if isinstance(channels, str) else [*channels]
        async with self._membership:
            await super().unsubscribe(subscriber, names)
            self._prune(names)

    def _prune(self, names: Iterable[str]) -> None:
        """Litestar keeps an entry for every channel ever used: one per resident who ever connected, for good."""
        for name in names:
            if name in self._channels and not self._channels[name]:
                del self._channels[name]


def live_plugin(redis: Redis) -> ChannelsPlugin:
    """The channels plugin for live streams. Give it a client of its own, made in `create_app` from the Redis URL:
    plugins are built before the lifespan that makes `app.state.redis`, redis-py connects lazily (on the serving
    loop), and the pub/sub connection is long-lived. Don't set `health_check_interval` on it: its PING reads the
    reply on the connection the pub/sub loop is reading. The plugin closes the client at shutdown."""
    return _LivePlugin(_PubSubBackend(redis=redis))


class _Seen:
    """Event ids already sent on one stream, the oldest forgotten first."""

    def __init__(self, ids: Iterable[int]) -> None:
        self._ids: dict[int, None] = {}
        for event_id in ids:
            self.first_time(event_id)

    def first_time(self, event_id: int) -> bool:
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > SEEN_MAX:
            del self._ids[next(iter(self._ids))]
        return True


def _releaser(channels: ChannelsPlugin, subscriber: Subscriber, channel: str) -> Callable[[], Awaitable[None]]:
    """An idempotent unsubscribe that finishes even when the request is being cancelled (client gone, shutdown):
    it runs as a task of its own, so a cancelled caller cannot leave the Redis subscription behind."""
    task: asyncio.Task[None] | None = None

    async def release() -> None:
        nonlocal task
        if task is None:
            task = asyncio.create_task(channels.unsubscribe(subscriber, channel))
            _releasing.add(task)
            task.add_done_callback(_releasing.discard)
        await asyncio.shield(task)

    return release


def _last_event_id(value: str | None) -> int | None:
    value = (value or "").strip()
    if value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return None  # absent or not an inbox message id: nothing to replay


def _message(event: Mapping[str, Any]) -> ServerSentEventMessage:
    return ServerSentEventMessage(data=_encode(event).decode(), event="notification", id=event["id"])


def _decode(raw: bytes) -> dict[str, Any] | None:
    try:
        event = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        event = None
    if isinstance(event, dict) and type(event.get("id")) is int:
        return event
    log.warning("live event without an integer id dropped")
    return None


async def _next(events: AsyncGenerator[bytes, None]) -> bytes | None:
    try:
        return await anext(events)
    except StopAsyncIteration:  # told to end: Redis was lost
        return None


async def _events(
    subscriber: Subscriber, replay: list[dict[str, Any]], seen: _Seen, expires_at: float,
    release: Callable[[], Awaitable[None]],
) -> AsyncGenerator[ServerSentEventMessage, None]:
    incoming = subscriber.iter_events()
    waiting: asyncio.Task[bytes | None] | None = None
    try:
        for event in replay:
            yield _message(event)
        yield ServerSentEventMessage(data=None, comment="live", retry=RETRY_MS)  # subscribed and caught up
        while (left := expires_at - time.time()) > 0:
            waiting = waiting or asyncio.create_task(_next(incoming))
            done, _ = await asyncio.wait({waiting}, timeout=min(HEARTBEAT_S, left))
            if not done:
                yield _KEEP_ALIVE
                continue
            raw, waiting = waiting.result(), None
            if raw is None:
                return
            event = _decode(raw)
            if event is not None and seen.first_time(event["id"]):
                yield _message(event)
    finally:
        if waiting is not None:
            waiting.cancel()
        await release()


class LiveController(Controller):
    path = "/v1/me"
    tags = ["me"]
    security = BEARER

    @get(
        "/stream", operation_id="streamMyNotifications", summary="My live notifications (Server-Sent Events)",
        media_type=SSE_MEDIA_TYPE, cache=False,
        responses={
            200: ResponseSpec(str, media_type=SSE_MEDIA_TYPE, generate_examples=False, description=(
                "An endless `text/event-stream`: `notification` events, `: live` and `: keep-alive` comments.")),
            # 400 only documents what Litestar would answer for a malformed header, as a problem like all errors.
            **problem_responses(400, 401, 503),
        },
    )
    async def stream(
        self,
        request: Req,
        channels: ChannelsPlugin,
        last_event_id: Annotated[str | None, Parameter(
            header="Last-Event-ID", required=False,
            description="The id of the last notification received; the ones after it (at most 100) come first.",
        )] = None,
    ) -> ServerSentEvent:
        """New notifications as they happen, for an open app: `event: notification`, `id:` the inbox message id,
        `data:` JSON with id, kind, trigger, title, body (in my language), link, created_at and my unread count.
        A `: live` comment says the stream is caught up, `: keep-alive` comes every 15 s. The stream ends when the
        access token expires: reconnect with a fresh token and `Last-Event-ID` to miss nothing."""
        holder_id = request.user.holder_id
        after = _last_event_id(last_event_id)
        channel = live_channel(holder_id)
        subscriber = await channels.subscribe(channel)  # before reading the inbox, so nothing falls in between
        release = _releaser(channels, subscriber, channel)
        try:
            replay = await missed_events(holder_id, after) if after is not None else []
        except BaseException:
            await release()
            raise
        seen = _Seen([*([after] if after is not None else []), *(event["id"] for event in replay)])
        return ServerSentEvent(
            _events(subscriber, replay, seen, float(request.auth.expires_at), release),
            background=BackgroundTask(release),  # the generator may never start if the client leaves at once
        )
