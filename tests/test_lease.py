"""Redis leases (`wallet.lease`): exclusive for as long as the holder lives, however long it works, and free
within the TTL once the holder dies. The dying holder is a real process killed with SIGKILL, as the tests of
worker crashes do and as production does; a plain lock left behind by such a kill once blocked the
leaderboards for five minutes."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.support import ROOT
from wallet.lease import lease

HOLDER = textwrap.dedent("""
    import asyncio, os, sys
    from redis.asyncio import Redis
    from wallet.lease import lease

    async def main() -> None:
        async with lease(Redis.from_url(os.environ["REDIS_URL"]), sys.argv[1], ttl=float(sys.argv[2])) as held:
            print("held" if held else "refused", flush=True)
            await asyncio.sleep(3600)

    asyncio.run(main())
""")


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(os.environ["REDIS_URL"])
    yield client
    await client.aclose()


def name() -> str:
    return f"test:lease:{uuid.uuid4().hex[:8]}"


async def test_a_holder_keeps_its_lease_past_the_ttl_and_gives_it_back_when_done(redis: Redis) -> None:
    key = name()
    async with lease(redis, key, ttl=0.3) as held:
        assert held
        for _ in range(6):  # 1.2 s: four TTLs, bridged by renewals
            await asyncio.sleep(0.2)
            async with lease(redis, key, ttl=0.3) as other:
                assert not other, "a live holder's lease was taken"
        assert held and not held.lost
    assert await redis.exists(key) == 0
    async with lease(redis, key, ttl=0.3) as after:
        assert after


async def test_a_waiter_gets_the_lease_as_soon_as_the_holder_lets_go(redis: Redis) -> None:
    key = name()
    order: list[str] = []

    async def first() -> None:
        async with lease(redis, key, ttl=5) as held:
            assert held
            order.append("first in")
            await asyncio.sleep(0.3)
            order.append("first out")

    async def second() -> None:
        await asyncio.sleep(0.05)
        async with lease(redis, key, ttl=5, wait=3) as held:
            assert held
            order.append("second in")

    await asyncio.gather(first(), second())
    assert order == ["first in", "first out", "second in"]


async def test_a_killed_holder_frees_its_lease_within_the_ttl(redis: Redis) -> None:
    key = name()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", HOLDER, key, "1", cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE,
                                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        assert (await proc.stdout.readline()).strip() == b"held"
        await asyncio.sleep(1.5)  # alive past its TTL: still held
        async with lease(redis, key) as taken:
            assert not taken
    finally:
        proc.kill()
        await proc.wait()
    async with lease(redis, key, wait=5) as taken:
        assert taken, "a dead holder's lease outlived its TTL"
        assert 0 < await redis.pttl(key) <= 15_000


async def test_a_lease_lost_underneath_its_holder_says_so_and_leaves_the_new_holder_alone(redis: Redis) -> None:
    key = name()
    first = lease(redis, key, ttl=0.3)
    held = await first.__aenter__()
    assert held
    await redis.delete(key)  # Redis wiped under the holder
    async with lease(redis, key, ttl=30) as second:
        assert second
        await asyncio.sleep(0.3)  # the first holder's next renewal finds the lease gone
        assert held.lost and not held
        await first.__aexit__(None, None, None)
        assert await redis.exists(key) == 1, "the first holder released the second holder's lease"
    assert await redis.exists(key) == 0
