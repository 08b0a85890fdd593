"""Sending what notify() planned: claim due deliveries, judge each against the resident's settings at this
moment (turned off, quiet hours, daily cap, message already read), send it on its channel, record the outcome.

- **Nothing lost:** a claim is a lease (`claimed_until`), not a state; a worker that dies mid-send leaves its
  claims to expire and the next step sends them. The attempt is counted at the claim, so a message that kills
  its sender is given up after `attempts_max` like any other.
- **Never twice for a retry:** each delivery is one row per (message, channel, device); a sent one is never
  claimed again. Only a crash between a provider's answer and recording it can repeat a push; the push carries
  the inbox message id for the app to drop the copy.
- **Retries** back off exponentially (or as the provider's Retry-After says); after the last one the delivery
  is `dead` with the reason: the dead-letter record operators list.
- **Quiet hours** defer a push to the end of the window in the resident's time zone (the live stream is not
  held back: the app is open). **The daily cap** counts messages pushed since local midnight; beyond it a push
  is skipped (the inbox keeps the message).
- **Shards:** residents are split into `shards` by a hash of their id; a step claims from one shard only, and
  the worker runs at most one sender per shard at a time (a Redis lock each), so one resident's deliveries are
  never sent by two senders at once (the cap stays exact) while several worker processes share a burst. Within
  a step each resident's deliveries go in order, in one task."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from redis.asyncio import Redis

from notifications.catalogue import triggers
from notifications.channels.base import Channel, Push, Sent
from notifications.inbox.templates import render_stored
from notifications.live import publish
from wallet.db import connection

__all__ = ["Policy", "Sender", "Step", "next_quiet_end", "quiet_now"]

log = logging.getLogger("carbon_wallet.notifications")


@dataclass(frozen=True, slots=True)
class Policy:
    attempts_max: int = 8
    lease_s: float = 120.0  # a claim not recorded by then is due again (the sender died)
    backoff_s: float = 15.0  # the first retry; doubling, at most `backoff_max_s`
    backoff_max_s: float = 3600.0
    batch: int = 1_000  # deliveries claimed per step
    concurrency: int = 100  # residents sent to at once
    prune_guard: int = 20  # in one chunk, this many dead tokens on one platform, most of its sends: suspect us


@dataclass(slots=True)
class Step:
    claimed: int = 0
    sent: int = 0
    deferred: int = 0
    retried: int = 0
    skipped: int = 0
    dead: int = 0

    def add(self, other: Step) -> None:
        for name in ("claimed", "sent", "deferred", "retried", "skipped", "dead"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(slots=True)
class _Result:
    id: int
    state: str  # pending (deferred or retried) | sent | skipped | dead
    due_at: datetime | None = None
    reason: str | None = None
    provider_id: str | None = None
    refund: int = 0  # a deferral is not an attempt
    prune: int | None = None  # a device whose token is dead
    answered: bool = False  # a provider answered this push (what the pruning guard counts)


def quiet_now(start: int | None, end: int | None, local: datetime) -> bool:
    """Whether `local` falls in the window [start, end) (minutes after midnight; it may wrap midnight)."""
    if start is None or end is None:
        return False
    minute = local.hour * 60 + local.minute
    return start <= minute < end if start < end else (minute >= start or minute < end)


def _instants(wall: datetime, zone: Any) -> list[datetime]:
    """The UTC instants whose local clock in `zone` first reads `wall`: one usually, two in the hour a DST end
    repeats, and for a wall time a DST start skips, the instant the clock jumps past it."""
    found = []
    for fold in (0, 1):
        at = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if at.astimezone(zone).replace(tzinfo=None) == wall:
            found.append(at)
    if found:
        return sorted(set(found))
    at = min(wall.replace(tzinfo=zone, fold=f).astimezone(UTC) for f in (0, 1))
    while at.astimezone(zone).replace(tzinfo=None) < wall:  # inside the gap: at most an hour, minute by minute
        at += timedelta(minutes=1)
    return [at.replace(second=0, microsecond=0)]


def next_quiet_end(end: int, local: datetime) -> datetime:
    """The next instant (in UTC) the local clock reads `end`, today or tomorrow: wall-clock time in the resident's
    zone, compared as instants, so a DST change neither shifts it nor makes it lie in the past."""
    zone, now = local.tzinfo, local.astimezone(UTC)
    day = local.date()
    for _ in range(3):
        for at in _instants(datetime(day.year, day.month, day.day, end // 60, end % 60), zone):
            if at > now:
                return at
        day += timedelta(days=1)
    raise AssertionError("unreachable: a window end within three days")


_CLAIM = """
WITH c AS (
  SELECT id FROM delivery
  WHERE state = 'pending' AND due_at <= $1 AND (claimed_until IS NULL OR claimed_until < $1)
    AND ($4 = 1 OR mod(abs(hashtext(holder::text)), $4) = $5)
  ORDER BY due_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
UPDATE delivery d SET claimed_until = $1 + make_interval(secs => $3), attempts = d.attempts + 1
FROM c WHERE d.id = c.id
RETURNING d.id
"""

_CONTEXT = """
SELECT d.id, d.holder, d.channel, d.device, d.attempts, d.message, m.kind, m.params, m.trigger, m.link,
       m.created_at, m.read_at, h.status, h.language, h.time_zone, s.quiet_start, s.quiet_end,
       coalesce(s.daily_cap, $2) AS daily_cap, v.platform, v.token,
       (SELECT p.enabled FROM notification_preference p
        WHERE p.holder = d.holder AND p.trigger = m.trigger AND p.channel = d.channel) AS chosen
FROM delivery d JOIN inbox_message m ON m.id = d.message JOIN holder h ON h.id = d.holder
LEFT JOIN notification_settings s ON s.holder = d.holder
LEFT JOIN device v ON v.id = d.device AND v.holder = d.holder  -- a phone now signed in as someone else is gone
WHERE d.id = ANY($1::bigint[]) ORDER BY d.holder, d.message, d.id
"""

_UNREAD = """
SELECT holder_id, count(*) AS n FROM inbox_message WHERE holder_id = ANY($1::uuid[]) AND read_at IS NULL
GROUP BY holder_id
"""

# Messages of capped triggers pushed since the resident's local midnight (one per message, however many phones).
_PUSHED_TODAY = """
SELECT d.holder, count(DISTINCT d.message) AS n FROM delivery d
JOIN holder h ON h.id = d.holder JOIN inbox_message m ON m.id = d.message
WHERE d.holder = ANY($1::uuid[]) AND d.channel = 'push' AND d.state = 'sent' AND m.trigger = ANY($2::text[])
  AND d.done_at >= (date_trunc('day', $3::timestamptz AT TIME ZONE h.time_zone) AT TIME ZONE h.time_zone)
GROUP BY d.holder
"""

_RECORD = """
UPDATE delivery d SET state = r.state, due_at = coalesce(r.due_at, d.due_at), reason = r.reason,
       provider_id = coalesce(r.provider_id, d.provider_id), claimed_until = NULL,
       attempts = d.attempts - r.refund, done_at = CASE WHEN r.state = 'pending' THEN NULL ELSE now() END
FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::int[])
     AS r(id, state, due_at, reason, provider_id, refund)
WHERE d.id = r.id
"""


@dataclass
class Sender:
    """Channels by name ("fcm", "apns", "log"; a platform without its provider configured goes to "log"), the
    Redis client the live stream publishes on, and the policy."""

    channels: Mapping[str, Channel]
    redis: Redis
    policy: Policy = field(default_factory=Policy)
    cap_default: int = 10

    async def step(self, *, now: datetime | None = None, shard: int = 0, shards: int = 1) -> Step:
        """Claim up to `policy.batch` due deliveries of one shard of residents and settle each one."""
        now = now or datetime.now(UTC)
        async with connection() as conn:
            ids = [r["id"] for r in await conn.fetch(_CLAIM, now, self.policy.batch, self.policy.lease_s, shards,
                                                     shard)]
            if not ids:
                return Step()
            rows = await conn.fetch(_CONTEXT, ids, self.cap_default)
            holders = sorted({r["holder"] for r in rows})
            unread = {r["holder_id"]: r["n"] for r in await conn.fetch(_UNREAD, holders)}
            capped = [t.key for t in triggers().values() if t.capped]
            pushed = {r["holder"]: r["n"] for r in await conn.fetch(_PUSHED_TODAY, holders, capped, now)}
        by_holder: dict[uuid.UUID, list[asyncpg.Record]] = defaultdict(list)
        for r in rows:
            by_holder[r["holder"]].append(r)
        done = Step(claimed=len(ids))
        groups = list(by_holder.items())
        for start in range(0, len(groups), self.policy.concurrency):
            chunk = groups[start:start + self.policy.concurrency]
            results = [x for part in await asyncio.gather(*(
                self._resident(h, rs, now, unread.get(h, 0), pushed.get(h, 0)) for h, rs in chunk)) for x in part]
            self._guard(results, {r["id"]: r["platform"] for _, rs in chunk for r in rs})
            await self._record(results)
            for res in results:
                name = res.state if res.state != "pending" else ("deferred" if res.refund else "retried")
                setattr(done, name, getattr(done, name) + 1)
        return done

    async def _resident(self, holder: uuid.UUID, rows: list[asyncpg.Record], now: datetime, unread: int,
                        pushed: int) -> list[_Result]:
        """One resident's deliveries, in message order, so the daily cap counts exactly."""
        out: list[_Result] = []
        counted: set[int] = set()
        for r in rows:
            trigger = triggers().get(r["trigger"])
            if r["status"] != "active" or trigger is None:
                out.append(_Result(r["id"], "skipped", reason="resident-inactive" if trigger else "unknown-trigger"))
                continue
            enabled = trigger.locked if r["channel"] == "push" and trigger.locked else (
                r["chosen"] if r["chosen"] is not None else (trigger.push if r["channel"] == "push" else True))
            if not enabled:
                out.append(_Result(r["id"], "skipped", reason="turned-off"))
                continue
            if r["channel"] == "live":
                out.append(await self._live(r, unread, now))
                continue
            if r["token"] is None:
                out.append(_Result(r["id"], "skipped", reason="device-removed"))
                continue
            if r["read_at"] is not None:
                out.append(_Result(r["id"], "skipped", reason="already-read"))
                continue
            local = now.astimezone(ZoneInfo(r["time_zone"]))
            if trigger.quiet and quiet_now(r["quiet_start"], r["quiet_end"], local):
                out.append(_Result(r["id"], "pending", due_at=next_quiet_end(r["quiet_end"], local), refund=1,
                                   reason="quiet-hours"))
                continue
            if trigger.capped and r["message"] not in counted:
                if pushed >= r["daily_cap"]:
                    out.append(_Result(r["id"], "skipped", reason="daily-cap"))
                    continue
            result = await self._push(r, unread, now)
            if result.state == "sent" and trigger.capped and r["message"] not in counted:
                counted.add(r["message"])
                pushed += 1
            out.append(result)
        return out

    def _text(self, r: asyncpg.Record) -> tuple[str, str] | _Result:
        """The title and body in the resident's language, or the delivery given up: a message its template
        cannot fill (a kind removed, a placeholder its stored params lack) would fail the same way every time."""
        text = render_stored(r["kind"], r["language"], r["params"])
        if text is None:
            return _Result(r["id"], "dead", reason=f"template {r['kind']} cannot be filled from its stored params")
        return text

    async def _live(self, r: asyncpg.Record, unread: int, now: datetime) -> _Result:
        text = self._text(r)
        if isinstance(text, _Result):
            return text
        title, body = text
        try:
            await publish(self.redis, r["holder"], {
                "id": r["message"], "kind": r["kind"], "trigger": r["trigger"], "title": title, "body": body,
                "link": r["link"], "created_at": r["created_at"].isoformat(), "unread": unread})
        except Exception as exc:  # Redis unreachable: retried like a provider error
            return self._retry(r, Sent("retry", f"live stream: {exc!r}"[:300]), now)
        return _Result(r["id"], "sent")

    async def _push(self, r: asyncpg.Record, unread: int, now: datetime) -> _Result:
        text = self._text(r)
        if isinstance(text, _Result):
            return text
        title, body = text
        channel = self.channels.get(r["platform"]) or self.channels["log"]
        push = Push(token=r["token"], title=title, body=body, deep_link=r["link"],
                    data={"kind": r["kind"], "trigger": r["trigger"], "inbox_id": str(r["message"])},
                    collapse_key=r["trigger"], badge=unread, message_id=f"inbox-{r['message']}")
        try:
            sent = await channel.send(push)
        except Exception as exc:  # a channel bug must not lose the delivery
            log.exception("push channel raised", extra={"delivery": r["id"], "channel": channel.name})
            sent = Sent("retry", f"channel error: {exc!r}"[:300])
        if sent.outcome == "sent":
            return _Result(r["id"], "sent", provider_id=sent.provider_id[:200] or None, answered=True)
        if sent.outcome == "invalid_token":
            return _Result(r["id"], "skipped", reason=f"invalid-token: {sent.detail}"[:300], prune=r["device"],
                           answered=True)
        if sent.outcome == "failed":
            return _Result(r["id"], "dead", reason=f"{channel.name} refused: {sent.detail}"[:300], answered=True)
        return self._retry(r, sent, now)

    def _retry(self, r: asyncpg.Record, sent: Sent, now: datetime) -> _Result:
        if r["attempts"] >= self.policy.attempts_max:
            return _Result(r["id"], "dead", reason=f"gave up after {r['attempts']} attempts: {sent.detail}"[:300])
        wait = min(self.policy.backoff_s * 2 ** (r["attempts"] - 1), self.policy.backoff_max_s)
        if sent.retry_after_s is not None:
            wait = max(wait, sent.retry_after_s)
        return _Result(r["id"], "pending", due_at=now + timedelta(seconds=wait), reason=sent.detail[:300] or None)

    def _guard(self, results: list[_Result], platforms: dict[int, str | None]) -> None:
        """Many dead tokens at once on one platform look like our misconfiguration (a wrong bundle id, a
        sandbox key), not like residents' phones: keep the devices and give those deliveries up instead."""
        tried: dict[str, int] = defaultdict(int)
        dead: dict[str, int] = defaultdict(int)
        for res in results:
            platform = platforms.get(res.id)
            if platform and res.answered:
                tried[platform] += 1
                dead[platform] += res.prune is not None
        for platform, n in dead.items():
            if n >= self.policy.prune_guard and 2 * n > tried[platform]:
                log.error("most push tokens of one platform reported dead at once: not pruning",
                          extra={"platform": platform, "dead": n, "tried": tried[platform]})
                for res in results:
                    if res.prune is not None and platforms.get(res.id) == platform:
                        res.state, res.prune = "dead", None
                        res.reason = f"not pruned, suspected misconfiguration: {res.reason}"[:300]

    async def _record(self, results: list[_Result]) -> None:
        if not results:
            return
        async with connection() as conn, conn.transaction():
            await conn.execute(_RECORD, [r.id for r in results], [r.state for r in results],
                               [r.due_at for r in results], [r.reason for r in results],
                               [r.provider_id for r in results], [r.refund for r in results])
            gone = sorted({r.prune for r in results if r.prune is not None})
            if gone:
                await conn.execute("DELETE FROM device WHERE id = ANY($1::bigint[])", gone)
                await conn.execute(
                    """UPDATE delivery SET state = 'skipped', reason = 'device-removed', done_at = now(),
                           claimed_until = NULL
                       WHERE device = ANY($1::bigint[]) AND state = 'pending'""", gone)
