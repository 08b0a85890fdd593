"""Redis leases: a lock that a live holder keeps renewing, so a dead one frees it within seconds.

A plain Redis lock must outlive its longest holder, so its expiry is minutes; when a worker is killed
mid-step the lock stays taken for those minutes and everyone waiting on it times out. A lease instead
expires `ttl` seconds after its holder stops renewing (every `ttl / 3` from a background task), however
long the work under it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

__all__ = ["TTL", "Lease", "lease"]

TTL = 15.0
log = logging.getLogger("carbon_wallet.lease")


class Lease:
    """Whether the lease was taken (`held`) and whether it was lost on the way (`lost`: Redis wiped, or the
    holder's event loop stalled past the TTL), so work that must be exclusive can stop."""

    def __init__(self, held: bool) -> None:
        self.held = held
        self.lost = False

    def __bool__(self) -> bool:
        return self.held and not self.lost


async def _renew(lock: Lock, ttl: float, state: Lease) -> None:
    while True:
        await asyncio.sleep(ttl / 3)
        try:
            await lock.reacquire()
        except (LockError, RedisError) as exc:
            state.lost = True
            log.warning("lease lost", extra={"lease": lock.name, "error": repr(exc)})
            return


@contextlib.asynccontextmanager
async def lease(redis: Redis, name: str, *, ttl: float = TTL, wait: float = 0) -> AsyncIterator[Lease]:
    """Hold `name` for the block, waiting up to `wait` seconds for it (0: don't wait). The block always runs;
    check the yielded lease's truth before doing exclusive work."""
    lock = redis.lock(name, timeout=ttl, blocking=wait > 0, blocking_timeout=wait if wait > 0 else None)
    if not await lock.acquire():
        yield Lease(False)
        return
    state = Lease(True)
    renewer = asyncio.create_task(_renew(lock, ttl, state))
    try:
        yield state
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        if not state.lost:
            with contextlib.suppress(LockError):
                await lock.release()
