"""Scheduled triggers: what no single outbox event causes, found by the worker's cron jobs. Energy ripe, energy
expiring within 12 h, a streak at risk in the resident's evening, overtaken by a friend on this week's board, a
challenge ending within 24 h, and the weekly report on Monday morning, local time.

Each run may repeat or overlap another: the inbox is unique per (resident, event id, kind), and each trigger's
event id is a uuid5 of the trigger and its period or subject (the 4-hour bucket, the local day, the friend and
week, the challenge, the ISO week), so with the resident as the key's other half a resident is told once per
period whatever the cron does. Work goes in batches of residents (keyset on the id), one transaction and one
statement per batch; residents already told are skipped in SQL, so a later run of the hour costs little."""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import asyncpg
from redis.asyncio import Redis

from gamification.progress.rules import rules, streak_of
from notifications.inbox.templates import templates
from notifications.notify import BATCH as NOTIFY_BATCH
from notifications.notify import notify_many
from wallet.book.snapshots import COMMITTED_BETWEEN
from wallet.db import connection, engine

__all__ = ["BATCH", "NAMESPACE", "OVERTAKEN_CURSOR", "challenge_ending", "energy_expiring", "energy_ripe",
           "event_id", "overtaken", "streak_at_risk", "weekly_report"]

NAMESPACE = uuid.UUID("3c5e0f9a-7d41-5b8e-9f12-6a0c4d2e8b71")
BATCH = 1_000  # residents per transaction
RIPE_SPACING = timedelta(hours=4)  # at most one energy_ripe message per resident in this long
OVERTAKEN_CURSOR = "notify:overtaken:snapshot"  # the book snapshot the last overtaken run compared at
SHANGHAI = ZoneInfo("Asia/Shanghai")


def event_id(trigger: str, subject: str) -> uuid.UUID:
    """The same for every run that tells of the same thing; the resident completes the inbox's unique key."""
    return uuid.uuid5(NAMESPACE, f"{trigger}:{subject}")


# -- shared ---------------------------------------------------------------------------------------------


@cache
def _zone_names() -> tuple[str, ...]:
    return tuple(sorted(available_timezones()))  # what a resident's time_zone may be (wallet/holders)


def _zones_at(now: datetime, hour: int, weekday: int | None = None) -> dict[str, date]:
    """The time zones whose local time is `hour`:00–`hour`:59 (on `weekday`) at `now`, with their local date."""
    out = {}
    for name in _zone_names():
        local = now.astimezone(ZoneInfo(name))
        if local.hour == hour and (weekday is None or local.weekday() == weekday):
            out[name] = local.date()
    return out


def _days_around(now: datetime) -> list[date]:
    """Every local date some time zone has at `now` (offsets run from -12 h to +14 h)."""
    utc = now.astimezone(UTC).date()
    return [utc - timedelta(days=1), utc, utc + timedelta(days=1)]


async def _batches(sql: str, *args: Any, batch: int) -> AsyncIterator[list[asyncpg.Record]]:
    """Rows of `sql` a batch at a time: it orders by `holder` and takes the two last parameters, the holder to
    start after and how many."""
    after = uuid.UUID(int=0)
    while True:
        async with connection() as conn:
            rows = await conn.fetch(sql, *args, after, batch)
        if rows:
            yield rows
        if len(rows) < batch:
            return
        after = rows[-1]["holder"]


async def _tell(kind: str, told: dict[uuid.UUID, list[tuple[uuid.UUID, dict[str, Any]]]], now: datetime) -> int:
    """One transaction: every (resident, params) under its event id."""
    new = 0
    if not any(told.values()):
        return 0
    async with engine().transaction() as tx:
        for eid, items in told.items():
            new += await notify_many(tx.connection, [h for h, _ in items], kind, [p for _, p in items],
                                     event_id=eid, at=now)
    return new


def _mass(grams: int) -> tuple[str, str]:
    if abs(grams) >= 1000:
        return f"{grams / 1000:,.1f}千克", f"{grams / 1000:,.1f} kg"
    return f"{grams}克", f"{grams} g"


def _units(goal_kind: str, n: int) -> tuple[str, str]:
    """An amount in a challenge's goal kind (whole units: grams, energy or actions), in zh-CN and en."""
    if goal_kind == "grams":
        zh, en = _mass(n)
        return f"{zh}减排", f"{en} CO2e"
    if goal_kind == "energy":
        return f"{n:,}能量", f"{n:,} energy"
    return f"{n:,}次绿色行动", f"{n:,} green actions"


def _balls_en(n: int) -> str:
    return "1 energy ball" if n == 1 else f"{n} energy balls"


# -- energy ---------------------------------------------------------------------------------------------

_RIPE = """
SELECT b.holder, count(*)::int AS balls, sum(b.amount)::bigint AS amount
FROM energy_ball b JOIN holder h ON h.id = b.holder AND h.status = 'active'
WHERE b.state = 'growing' AND b.ripens_at <= $1::timestamptz AND b.expires_at > $1::timestamptz AND b.holder > $4
GROUP BY b.holder
HAVING max(b.ripens_at) > $2::timestamptz AND NOT EXISTS (
  SELECT 1 FROM inbox_message m WHERE m.holder_id = b.holder AND m.kind = 'energy_ripe' AND m.created_at > $3)
ORDER BY b.holder LIMIT $5"""


async def energy_ripe(*, now: datetime | None = None, since: timedelta = timedelta(hours=1),
                      batch: int = BATCH) -> int:
    """Residents with a ball that ripened in the last `since` (longer than the cron's interval, so a missed run
    is caught up) and is still uncollected: how many ripe balls wait and their energy. At most one message per
    resident in `RIPE_SPACING` (a ball ripening meanwhile waits for the next), keyed by the 4-hour bucket."""
    now = now or datetime.now(UTC)
    eid = event_id("energy_ripe", str(int(now.timestamp()) // int(RIPE_SPACING.total_seconds())))
    told = 0
    async for rows in _batches(_RIPE, now, now - since, now - RIPE_SPACING, batch=batch):
        told += await _tell("energy_ripe", {eid: [(r["holder"], {
            "count": r["balls"], "amount": r["amount"], "balls_en": _balls_en(r["balls"])}) for r in rows]}, now)
    return told


_EXPIRING = """
SELECT b.holder, h.time_zone, d.eid, count(*)::int AS balls, sum(b.amount)::bigint AS amount,
       min(b.expires_at) AS first
FROM energy_ball b JOIN holder h ON h.id = b.holder AND h.status = 'active'
JOIN unnest($3::date[], $4::uuid[]) AS d(day, eid) ON d.day = ($1::timestamptz AT TIME ZONE h.time_zone)::date
WHERE b.state = 'growing' AND b.ripens_at <= $1::timestamptz AND b.expires_at > $1::timestamptz
  AND b.expires_at <= $2::timestamptz AND b.holder > $5
  AND NOT EXISTS (SELECT 1 FROM inbox_message m
                  WHERE m.holder_id = b.holder AND m.event_id = d.eid AND m.kind = 'energy_expiring')
GROUP BY b.holder, h.time_zone, d.eid ORDER BY b.holder LIMIT $6"""


def _clock(moment: datetime, zone: ZoneInfo, now: datetime) -> tuple[str, str]:
    """A time within the next day as the resident reads it: 21:30, or 明天08:30 / 08:30 tomorrow."""
    local = moment.astimezone(zone)
    if local.date() == now.astimezone(zone).date():
        return f"{local:%H:%M}", f"{local:%H:%M}"
    return f"明天{local:%H:%M}", f"{local:%H:%M} tomorrow"


async def energy_expiring(*, now: datetime | None = None, within: timedelta = timedelta(hours=12),
                          batch: int = BATCH) -> int:
    """Residents with ripe, uncollected balls expiring within `within`: their energy and when the first one
    expires, in their local time. Once per resident per local day."""
    now = now or datetime.now(UTC)
    days = _days_around(now)
    eids = [event_id("energy_expiring", d.isoformat()) for d in days]
    told = 0
    async for rows in _batches(_EXPIRING, now, now + within, days, eids, batch=batch):
        out: dict[uuid.UUID, list[tuple[uuid.UUID, dict[str, Any]]]] = defaultdict(list)
        for r in rows:
            at_zh, at_en = _clock(r["first"], ZoneInfo(r["time_zone"]), now)
            hours = max(1, math.ceil((r["first"] - now).total_seconds() / 3600))
            out[r["eid"]].append((r["holder"], {"count": r["balls"], "amount": r["amount"], "time": at_zh,
                                                "time_en": at_en, "hours": hours, "balls_en": _balls_en(r["balls"])}))
        told += await _tell("energy_expiring", out, now)
    return told


# -- streak ---------------------------------------------------------------------------------------------

# Residents living in the zones $1 (whose local date is $2, told under event id $3 of kind $5) with a book
# entry on or after $6 days before that date; the book's head (one row per resident) changed since $4 first.
_LOCAL_HOUR = """
SELECT h.id AS holder, z.day, z.eid FROM holder h
JOIN unnest($1::text[], $2::date[], $3::uuid[]) AS z(zone, day, eid) ON z.zone = h.time_zone
JOIN book_head b ON b.holder_id = h.id AND b.updated_at >= $4::timestamptz
WHERE h.status = 'active' AND h.id > $7 AND NOT EXISTS (
  SELECT 1 FROM inbox_message m WHERE m.holder_id = h.id AND m.event_id = z.eid AND m.kind = $5)
  AND EXISTS (SELECT 1 FROM book_entry e WHERE e.holder = h.id AND e.local_day >= z.day - $6::int)
ORDER BY h.id LIMIT $8"""
# The days that count toward a streak (gamification/progress/service.py `_DAYS`): a positive sum that day.
_DAYS = """
SELECT holder, local_day FROM book_entry WHERE holder = ANY($1::uuid[])
GROUP BY holder, local_day HAVING sum(reduction_mg) > 0 ORDER BY holder, local_day"""


async def streak_at_risk(*, now: datetime | None = None, hour: int = 20, batch: int = BATCH) -> int:
    """In the residents' local evening (`hour`:00–`hour`:59 where they live, so the cron runs every few minutes
    all day): a streak of at least 2 days still alive, and nothing credited today yet. Only residents with an
    entry recent enough for a streak to be alive (a missed day spends a saved freeze) are read. Once per
    resident per local day."""
    now = now or datetime.now(UTC)
    zones = _zones_at(now, hour)
    if not zones:
        return 0
    reach = rules().freezes_max + 1  # the oldest last day a streak survives, in days before today
    eids = [event_id("streak_at_risk", d.isoformat()) for d in zones.values()]
    told = 0
    async for rows in _batches(_LOCAL_HOUR, list(zones), list(zones.values()), eids,
                               now - timedelta(days=reach + 2), "streak_at_risk", reach, batch=batch):
        days: dict[uuid.UUID, list[date]] = defaultdict(list)
        async with connection() as conn:
            for d in await conn.fetch(_DAYS, [r["holder"] for r in rows]):
                days[d["holder"]].append(d["local_day"])
        out: dict[uuid.UUID, list[tuple[uuid.UUID, dict[str, Any]]]] = defaultdict(list)
        for r in rows:
            streak = streak_of(days[r["holder"]], r["day"])
            if streak.at_risk and streak.current >= 2:
                out[r["eid"]].append((r["holder"], {"days": streak.current}))
        told += await _tell("streak_at_risk", out, now)
    return told


# -- overtaken ------------------------------------------------------------------------------------------

_MOVED = f"""
SELECT DISTINCT e.holder FROM book_entry e JOIN holder h ON h.id = e.holder AND h.status = 'active'
WHERE {COMMITTED_BETWEEN} AND e.occurred_at >= $3 AND e.occurred_at < $4
  AND NOT EXISTS (SELECT 1 FROM competition_exclusion x WHERE x.holder = e.holder)
ORDER BY e.holder"""  # noqa: S608 - constant fragments
# Mirrors the friends board (gamification/leaderboards/service.py `friends_board`): friends see each other
# whether or not they show on public boards; anyone excluded from competition is left out.
_FRIENDS = """
SELECT p.mover, p.friend FROM (
  SELECT m.holder AS mover, f.holder_b AS friend FROM unnest($1::uuid[]) AS m(holder)
  JOIN friendship f ON f.holder_a = m.holder
  UNION ALL
  SELECT m.holder, f.holder_a FROM unnest($1::uuid[]) AS m(holder) JOIN friendship f ON f.holder_b = m.holder) p
JOIN holder h ON h.id = p.friend AND h.status = 'active'
WHERE NOT EXISTS (SELECT 1 FROM competition_exclusion x WHERE x.holder = p.friend)"""
# This week's totals as the previous run's snapshot ($1) and this run's ($2) saw them: PostgreSQL is the truth,
# Redis only remembers which snapshot was compared last.
_TOTALS = """
SELECT holder, count(*) FILTER (WHERE seen_then)::int AS n_then,
       coalesce(sum(mg) FILTER (WHERE seen_then), 0)::bigint AS mg_then,
       count(*) FILTER (WHERE seen_now)::int AS n_now, coalesce(sum(mg) FILTER (WHERE seen_now), 0)::bigint AS mg_now
FROM (SELECT e.holder, e.reduction_mg AS mg, pg_visible_in_snapshot(e.txid, $1::text::pg_snapshot) AS seen_then,
             pg_visible_in_snapshot(e.txid, $2::text::pg_snapshot) AS seen_now
      FROM book_entry e WHERE e.holder = ANY($3::uuid[]) AND e.occurred_at >= $4 AND e.occurred_at < $5) v
GROUP BY holder"""


def _passed(me: asyncpg.Record, friend: asyncpg.Record) -> bool:
    """The friend is ahead of me on the board now (whole grams, as boards rank) and was not at the previous
    run, when I was on the board already (a resident with no entry this week is not on it)."""
    if not me["n_now"] or not me["n_then"]:
        return False
    ahead_now = friend["mg_now"] // 1000 > me["mg_now"] // 1000
    ahead_then = friend["n_then"] > 0 and friend["mg_then"] // 1000 > me["mg_then"] // 1000
    return ahead_now and not ahead_then


async def overtaken(redis: Redis, *, tz: ZoneInfo = SHANGHAI, now: datetime | None = None,
                    batch: int = BATCH) -> int:
    """Residents whose friend passed them on this week's board (ISO week in the boards' zone `tz`) since the
    last run: the friends with entries committed since then are compared with their friends, at the previous
    run's book snapshot and at this one's. Once per (resident, friend, week). The first run (or one after
    Redis lost the cursor) only remembers where the book is."""
    now = now or datetime.now(UTC)
    local = now.astimezone(tz).date()
    monday = local - timedelta(days=local.weekday())
    start = datetime.combine(monday, datetime.min.time(), tz)
    year, week, _ = monday.isocalendar()
    week_key = f"w{year}-{week:02d}"
    end = start + timedelta(days=7)
    raw = await redis.get(OVERTAKEN_CURSOR)
    done = raw.decode() if isinstance(raw, bytes) else raw
    async with connection() as conn:
        target = await conn.fetchval("SELECT pg_current_snapshot()::text")
        movers = [] if done is None else [r["holder"] for r in await conn.fetch(_MOVED, done, target, start, end)]
    told = 0
    for i in range(0, len(movers), batch):
        part = movers[i:i + batch]
        async with engine().transaction() as tx:
            conn = tx.connection
            pairs = await conn.fetch(_FRIENDS, part)
            involved = sorted(set(part) | {p["friend"] for p in pairs})
            totals = {r["holder"]: r for r in await conn.fetch(_TOTALS, done, target, involved, start, end)}
            names = {r["id"]: r["nickname"] for r in await conn.fetch(
                "SELECT id, nickname FROM holder WHERE id = ANY($1::uuid[])", part)}
            passed: dict[uuid.UUID, list[tuple[uuid.UUID, dict[str, Any]]]] = defaultdict(list)
            for p in pairs:
                mover, me = totals.get(p["mover"]), totals.get(p["friend"])
                if me is not None and mover is not None and _passed(me, mover):
                    theirs, mine = mover["mg_now"] // 1000, me["mg_now"] // 1000
                    (t_zh, t_en), (m_zh, m_en), (g_zh, g_en) = _mass(theirs), _mass(mine), _mass(theirs - mine)
                    passed[p["mover"]].append((p["friend"], {
                        "friend": names.get(p["mover"]) or "?", "friend_total": t_zh, "friend_total_en": t_en,
                        "mine": m_zh, "mine_en": m_en, "gap": g_zh, "gap_en": g_en, "week": week_key}))
            for mover, items in passed.items():
                told += await notify_many(conn, [h for h, _ in items], "overtaken", [p for _, p in items],
                                          event_id=event_id("overtaken", f"{mover}:{week_key}"), at=now)
    await redis.set(OVERTAKEN_CURSOR, target, ex=8 * 86400)  # after the messages: a crash re-runs, told once
    return told


# -- challenges -----------------------------------------------------------------------------------------

# Progress as the challenge page shows it (gamification/challenges/service.py): excluded residents' part out.
_ENDING = """
SELECT c.id, c.title_zh, c.title_en, c.goal_kind, c.goal, c.progress - coalesce((
  SELECT sum(CASE c.goal_kind WHEN 'grams' THEN floor(p.amount::numeric / 1000)::bigint ELSE p.amount END)
  FROM challenge_participant p JOIN competition_exclusion x ON x.holder = p.holder WHERE p.challenge = c.id),
  0)::bigint AS progress
FROM challenge c WHERE c.result IS NULL AND c.starts_at <= $1 AND c.ends_at > $1 AND c.ends_at <= $2
ORDER BY c.ends_at, c.id"""
_PARTICIPANTS = """
SELECT p.holder FROM challenge_participant p WHERE p.challenge = $1 AND NOT EXISTS (
  SELECT 1 FROM inbox_message m WHERE m.holder_id = p.holder AND m.event_id = $2 AND m.kind = 'challenge_ending')
  AND p.holder > $3 ORDER BY p.holder LIMIT $4"""


async def challenge_ending(*, now: datetime | None = None, within: timedelta = timedelta(hours=24),
                           batch: int = NOTIFY_BATCH) -> int:
    """Every participant of each running challenge that ends within `within`, once per challenge: its title,
    progress and goal. A challenge of 100,000 participants is one statement per `batch` of them."""
    now = now or datetime.now(UTC)
    async with connection() as conn:
        ending = await conn.fetch(_ENDING, now, now + within)
    told = 0
    for c in ending:
        eid = event_id("challenge_ending", str(c["id"]))
        progress, progress_en = _units(c["goal_kind"], int(c["progress"]))
        goal, goal_en = _units(c["goal_kind"], int(c["goal"]))
        params = {"challenge_id": c["id"], "challenge": c["title_zh"], "challenge_en": c["title_en"],
                  "progress": progress, "progress_en": progress_en, "goal": goal, "goal_en": goal_en,
                  "percent": max(0, int(c["progress"])) * 100 // int(c["goal"])}
        async for rows in _batches(_PARTICIPANTS, c["id"], eid, batch=batch):
            async with engine().transaction() as tx:
                told += await notify_many(tx.connection, [r["holder"] for r in rows], "challenge_ending", params,
                                          event_id=eid, at=now)
    return told


# -- weekly report --------------------------------------------------------------------------------------

_WEEKS = """
SELECT holder, coalesce(sum(reduction_mg) FILTER (WHERE local_day >= $2), 0)::bigint AS last_mg,
       coalesce(sum(reduction_mg) FILTER (WHERE local_day < $2), 0)::bigint AS before_mg
FROM book_entry WHERE holder = ANY($1::uuid[]) AND local_day >= $2::date - 7 AND local_day < $2::date + 7
GROUP BY holder"""
_TOP = """
SELECT DISTINCT ON (holder) holder, category FROM book_entry
WHERE holder = ANY($1::uuid[]) AND local_day >= $2::date AND local_day < $2::date + 7
GROUP BY holder, category HAVING sum(reduction_mg) > 0 ORDER BY holder, sum(reduction_mg) DESC, category"""


# My rank among my friends and me (as on the friends board: excluded residents leave it) last week and the week
# before, by each member's grams in those weeks.
_FRIEND_RANKS = """
WITH me AS (SELECT unnest($1::uuid[]) AS holder),
circle AS (
  SELECT m.holder AS me, m.holder AS member FROM me m
  UNION
  SELECT m.holder, CASE WHEN f.holder_a = m.holder THEN f.holder_b ELSE f.holder_a END
  FROM me m JOIN friendship f ON f.holder_a = m.holder OR f.holder_b = m.holder),
totals AS (
  SELECT c.me, c.member,
         coalesce(sum(e.reduction_mg) FILTER (WHERE e.local_day >= $2), 0) / 1000 AS last_g,
         coalesce(sum(e.reduction_mg) FILTER (WHERE e.local_day < $2), 0) / 1000 AS before_g
  FROM circle c LEFT JOIN book_entry e ON e.holder = c.member AND e.local_day >= $2::date - 7
       AND e.local_day < $2::date + 7
  WHERE c.member = c.me OR NOT EXISTS (SELECT 1 FROM competition_exclusion x WHERE x.holder = c.member)
  GROUP BY c.me, c.member)
SELECT t.me AS holder, count(*) AS circle,
       1 + count(*) FILTER (WHERE t.last_g > mine.last_g) AS last_rank,
       1 + count(*) FILTER (WHERE t.before_g > mine.before_g) AS before_rank
FROM totals t JOIN totals mine ON mine.me = t.me AND mine.member = t.me
GROUP BY t.me"""


def _rank(row: asyncpg.Record | None) -> tuple[str, str]:
    """'在好友中排第2名（前一周第4名）。' and its English, or nothing for a resident without friends."""
    if row is None or row["circle"] < 2:
        return "", ""
    last, before = row["last_rank"], row["before_rank"]
    if last == before:
        return f"在好友中仍排第{last}名。", f"You are still #{last} among your friends. "
    return (f"在好友中排第{last}名（前一周第{before}名）。",
            f"You are #{last} among your friends (#{before} the week before). ")


def _trend(last: int, before: int) -> tuple[str, str, str]:
    """(change, zh, en): a signed percentage against the week before, or "new" when it had nothing."""
    if before <= 0:
        if last <= 0:
            return "+0%", "与前一周持平", "the same as the week before"
        return "new", "前一周还没有记录", "with nothing the week before"
    pct = round((last - before) * 100 / before)
    if pct > 0:
        return f"+{pct}%", f"比前一周多{pct}%", f"up {pct}% on the week before"
    if pct < 0:
        return f"{pct}%", f"比前一周少{-pct}%", f"down {-pct}% on the week before"
    return "+0%", "与前一周持平", "the same as the week before"


def _report(week: str, last_mg: int, before_mg: int, category: str | None,
            ranks: asyncpg.Record | None = None) -> dict[str, Any]:
    entry = templates()["weekly_report"]
    grams, grams_en = _mass(last_mg // 1000)
    change, trend, trend_en = _trend(last_mg // 1000, before_mg // 1000)
    tip = entry["tips"].get(category or "", entry["tips"]["none"])
    top, top_en = "", ""
    if category in entry["categories"]:
        names = entry["categories"][category]
        top, top_en = f"减排最多的是「{names['zh-CN']}」。", f"Most of it came from {names['en']}. "
    rank, rank_en = _rank(ranks)
    return {"week": week, "grams": grams, "grams_en": grams_en, "change": change, "trend": trend,
            "trend_en": trend_en, "category": category or "", "top": top, "top_en": top_en,
            "rank": rank, "rank_en": rank_en, "tip": tip["zh-CN"], "tip_en": tip["en"]}


async def weekly_report(*, now: datetime | None = None, hour: int = 9, batch: int = BATCH) -> int:
    """On Monday at `hour`:00–`hour`:59 local time, for residents with a book entry in the last 8 weeks: last
    week's (their local Monday to Sunday) grams, the change against the week before, their rank among their
    friends then and the week before, their top category and a tip for it. Once per resident per ISO week."""
    now = now or datetime.now(UTC)
    by_day: dict[date, list[str]] = defaultdict(list)
    for zone, day in _zones_at(now, hour, weekday=0).items():
        by_day[day].append(zone)
    told = 0
    for monday, zones in by_day.items():
        last_monday = monday - timedelta(days=7)
        year, number, _ = last_monday.isocalendar()
        week = f"{year}-W{number:02d}"
        eid = event_id("weekly_report", week)
        async for rows in _batches(_LOCAL_HOUR, zones, [monday] * len(zones), [eid] * len(zones),
                                   now - timedelta(weeks=8, days=2), "weekly_report", 56, batch=batch):
            holders = [r["holder"] for r in rows]
            async with connection() as conn:
                weeks = {r["holder"]: r for r in await conn.fetch(_WEEKS, holders, last_monday)}
                top = {r["holder"]: r["category"] for r in await conn.fetch(_TOP, holders, last_monday)}
                ranks = {r["holder"]: r for r in await conn.fetch(_FRIEND_RANKS, holders, last_monday)}
            out = [(h, _report(week, weeks[h]["last_mg"] if h in weeks else 0,
                               weeks[h]["before_mg"] if h in weeks else 0, top.get(h), ranks.get(h)))
                   for h in holders]
            told += await _tell("weekly_report", {eid: out}, now)
    return told
