"""Faults: a worker killed with SIGKILL loses nothing and repeats nothing (LEDGER "faults" row, L8, L11).

A redemption whose request died right after reserving (simulated by reserving through the service and never
fulfilling) is fulfilled by a real worker process; after that worker is killed and another one sweeps again,
it is still resolved exactly once. A worker killed while the expiry job is working through a backlog of due
energy balls leaves, after a restart, every ball expired exactly once. Each scenario ends with a clean
`check_ledger()`. The redemption scenario waits for the worker's 15-second settle cron twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.ledger_support import (
    Kit,
    assert_ledger_ok,
    balances,
    fund,
    grow,
    make_kit,
    new_holder,
    new_holders,
    new_reward,
    source_for,
)
from tests.support import WorkerProcess
from wallet.db import connection
from wallet.mall.catalogue import get_reward
from wallet.mall.redeem import reserve


@pytest.fixture(scope="module")
async def kit(db: object, passwords: Any, settings: Any) -> Kit:
    return await make_kit(passwords, settings)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout_s}s\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


async def make_due(redemption_id: int) -> None:
    async with connection() as conn:
        await conn.execute("UPDATE redemption SET next_attempt_at = now() - interval '1 second' WHERE id = $1",
                           redemption_id)


async def redemption_state(redemption_id: int) -> dict[str, Any]:
    async with connection() as conn:
        row = await conn.fetchrow(
            """SELECT d.state, d.voucher_code, d.resolve_transfer,
                      (SELECT count(*) FROM ledger_transfer t WHERE t.resolves = d.reserve_transfer) AS resolutions
               FROM redemption d WHERE d.id = $1""", redemption_id)
    return dict(row)


async def test_a_redemption_whose_request_died_is_fulfilled_by_the_worker_exactly_once(kit: Kit,
                                                                                       work_dir: Path) -> None:
    holder = await new_holder(kit.template, "crash")
    await fund(kit, holder, 100)
    reward = await new_reward(price=10, stock=5)
    # The API process dies right after reserving: nothing ever calls fulfil for this redemption.
    stranded, created = await reserve(holder, reward["id"], idempotency_key="stranded")
    assert created and stranded["state"] == "pending"
    await make_due(stranded["id"])

    first = WorkerProcess(work_dir).start()
    try:
        await eventually(lambda: _fulfilled(stranded["id"]), 60, first.log_path)
    finally:
        first.kill()  # SIGKILL, as a crash would
    after_first = await redemption_state(stranded["id"])

    # A second worker sweeps again (a probe redemption shows that it did) and leaves the first as it was.
    probe, _ = await reserve(holder, reward["id"], idempotency_key="probe")
    await make_due(probe["id"])
    second = WorkerProcess(work_dir).start()
    try:
        await eventually(lambda: _fulfilled(probe["id"]), 60, second.log_path)
    finally:
        second.kill()

    assert await redemption_state(stranded["id"]) == after_first
    assert after_first["state"] == "fulfilled" and after_first["resolutions"] == 1
    assert after_first["voucher_code"].startswith("CW-")
    assert await balances(holder) == {"available": 80, "balls": 0, "held": 0}
    assert (await get_reward(reward["id"]))["stock"] == 3
    await assert_ledger_ok()


async def _fulfilled(redemption_id: int) -> bool:
    return (await redemption_state(redemption_id))["state"] == "fulfilled"


async def test_a_worker_killed_while_expiring_balls_leaves_each_expired_exactly_once(kit: Kit,
                                                                                     work_dir: Path) -> None:
    holders = await new_holders(kit.template, 4, "lapse")
    balls: list[int] = []
    for holder in holders:  # 4,000 balls: the sweep works through them 1,000 per transaction
        balls += [b for b, _ in await grow(await source_for(holder, kit.partner), [1] * 1000, window_s=1)]
    await asyncio.sleep(1.1)

    async def expired() -> int:
        async with connection() as conn:
            return await conn.fetchval(
                "SELECT count(*) FROM energy_ball WHERE id = ANY($1::bigint[]) AND state = 'expired'", balls)

    first = WorkerProcess(work_dir).start()
    try:
        await eventually(lambda: _positive(expired()), 60, first.log_path)
    finally:
        first.kill()
    print(f"worker killed with {await expired()} of {len(balls)} balls expired")

    second = WorkerProcess(work_dir).start()
    try:
        await eventually(lambda: _equal(expired(), len(balls)), 60, second.log_path)
    finally:
        second.stop()

    async with connection() as conn:
        ends = await conn.fetch("SELECT key FROM ledger_transfer WHERE key = ANY($1::text[])",
                                [f"ball:{b}:{end}" for b in balls for end in ("collected", "expired")])
    assert sorted(r["key"] for r in ends) == sorted(f"ball:{b}:expired" for b in balls)
    for holder in holders:
        assert await balances(holder) == {"available": 0, "balls": 0, "held": 0}
    await assert_ledger_ok()


async def _positive(count: Awaitable[int]) -> bool:
    return await count > 0


async def _equal(count: Awaitable[int], total: int) -> bool:
    return await count == total
