"""A fixed-window rate limiter in Redis, correct across worker processes: INCR and PEXPIRE run as one
Lua script, so no two processes can both read "under the limit" and both pass."""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis

from api.settings import RateLimit
from wallet.errors import DomainError

__all__ = ["RateLimiter"]

_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
"""


_CONSUME = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n == tonumber(ARGV[1]) then redis.call('EXPIREAT', KEYS[1], ARGV[3]) end
if n > tonumber(ARGV[2]) then
  redis.call('DECRBY', KEYS[1], ARGV[1])
  return {0, n - tonumber(ARGV[1])}
end
return {1, n}
"""


class RateLimiter:
    def __init__(self, redis: Redis, prefix: str = "rl") -> None:
        self._redis = redis
        self._prefix = prefix
        self._hit = redis.register_script(_HIT)
        self._consume = redis.register_script(_CONSUME)

    def key(self, scope: str, subject: str) -> str:
        """Subjects (logins, IPs) are hashed so the keyspace holds no personal data."""
        return f"{self._prefix}:{scope}:{hashlib.sha256(subject.encode()).hexdigest()[:32]}"

    async def hit(self, scope: str, subject: str, limit: RateLimit) -> None:
        count, ttl_ms = await self._hit(keys=[self.key(scope, subject)], args=[limit.window_s * 1000])
        if int(count) > limit.count:
            retry_after_s = max(1, -(-int(ttl_ms) // 1000))
            raise DomainError(
                "rate_limited", "rate-limited",
                f"Too many attempts; try again in {retry_after_s} seconds.", retry_after_s=retry_after_s,
            )

    async def consume_daily(self, scope: str, subject: str, *, quota: int, cost: int, now_s: int) -> int:
        """Take `cost` units of a daily (UTC) quota, or none: a refused request does not use the quota up.
        Returns what is left today."""
        day = now_s // 86400
        next_day_s = (day + 1) * 86400
        key = self._daily_key(scope, subject, now_s)
        ok, used = await self._consume(keys=[key], args=[cost, quota, next_day_s + 3600])
        if not int(ok):
            retry_after_s = max(1, next_day_s - now_s)
            raise DomainError(
                "rate_limited", "daily-quota-exceeded",
                f"The daily quota of {quota} activities is used up ({int(used)} today, this request has {cost}); "
                f"it resets at 00:00 UTC, in {retry_after_s} seconds.",
                retry_after_s=retry_after_s,
            )
        return quota - int(used)

    async def refund_daily(self, scope: str, subject: str, *, cost: int, now_s: int) -> None:
        """Give back what a request took when it turned out to change nothing (a raced replay)."""
        await self._redis.decrby(self._daily_key(scope, subject, now_s), cost)

    def _daily_key(self, scope: str, subject: str, now_s: int) -> str:
        return f"{self.key(scope, subject)}:{now_s // 86400}"

    async def reset(self, scope: str, subject: str) -> None:
        await self._redis.delete(self.key(scope, subject))
