"""Keeping the community aggregates: each step adds the book entries committed since the cursor's PostgreSQL
snapshot to every scope they belong to, in one statement, and moves the cursor in the same transaction, so an
entry is counted once whatever happens (a crash rolls the step back whole; the next one takes the same
entries). The worker steps every second, so the pages and the city and enterprise ledgers are about a second
behind the book.

An entry counts where its resident lives and works when it is counted (the book does not record places): a
resident who moves takes their future, not their past, to the new community."""

from __future__ import annotations

from dataclasses import dataclass

from wallet.book.snapshots import COMMITTED_BETWEEN
from wallet.db import engine

__all__ = ["Step", "scopes_of_entry", "step"]

# The scopes one entry adds to: everyone, its city (`city:` when the resident set none), district and community
# when set, the resident's team when in one, and the partner that reported it (`partner:self` for the
# resident's own reports). The city and partner scopes each partition the book, which the consistency check
# relies on.
SCOPES_SQL = """ARRAY[
    'all',
    'city:' || coalesce(h.city, ''),
    CASE WHEN h.city IS NOT NULL AND h.district IS NOT NULL THEN 'district:' || h.city || '|' || h.district END,
    CASE WHEN h.city IS NOT NULL AND h.district IS NOT NULL AND h.community IS NOT NULL
         THEN 'community:' || h.city || '|' || h.district || '|' || h.community END,
    CASE WHEN m.team IS NOT NULL THEN 'team:' || m.team END,
    'partner:' || coalesce(e.partner::text, 'self')]"""

_STEP = f"""
WITH new AS (
  SELECT s.scope, e.behaviour, e.category, e.local_day AS day, e.holder, e.kind, e.reduction_mg
  FROM book_entry e JOIN holder h ON h.id = e.holder
  LEFT JOIN team_member m ON m.holder = e.holder AND m.left_at IS NULL
  CROSS JOIN LATERAL unnest({SCOPES_SQL}) AS s(scope)
  WHERE s.scope IS NOT NULL
    AND {COMMITTED_BETWEEN}),
days AS (
  INSERT INTO community_day (scope, behaviour, category, day, reduction_mg, credits, reversals)
  SELECT scope, behaviour, min(category), day, sum(reduction_mg), count(*) FILTER (WHERE kind = 'credit'),
         count(*) FILTER (WHERE kind = 'reversal')
  FROM new GROUP BY scope, behaviour, day
  ON CONFLICT (scope, behaviour, day) DO UPDATE SET
    reduction_mg = community_day.reduction_mg + EXCLUDED.reduction_mg,
    credits = community_day.credits + EXCLUDED.credits, reversals = community_day.reversals + EXCLUDED.reversals
  RETURNING 1),
people AS (
  INSERT INTO community_participant (scope, day, holder)
  SELECT DISTINCT scope, day, holder FROM new WHERE kind = 'credit'
  ON CONFLICT (scope, day, holder) DO NOTHING
  RETURNING 1),
members AS (
  INSERT INTO community_member (scope, holder)
  SELECT DISTINCT scope, holder FROM new WHERE kind = 'credit'
  ON CONFLICT (scope, holder) DO NOTHING
  RETURNING scope),
counted AS (
  INSERT INTO community_scope (scope, participants) SELECT scope, count(*) FROM members GROUP BY scope
  ON CONFLICT (scope) DO UPDATE SET participants = community_scope.participants + EXCLUDED.participants)
SELECT (SELECT count(*) FROM new WHERE scope = 'all') AS entries, (SELECT count(*) FROM days) AS rows,
       (SELECT count(*) FROM people) AS participants
"""  # noqa: S608 - constant fragments


_LOCK_WAIT = "SELECT snapshot FROM community_cursor WHERE id = 1 FOR UPDATE"
_LOCK_SKIP = _LOCK_WAIT + " SKIP LOCKED"


@dataclass(frozen=True, slots=True)
class Step:
    entries: int  # book entries counted
    rows: int  # (scope, behaviour, day) rows written
    participants: int  # new (scope, day, resident) participations


async def step(*, wait: bool = False) -> Step:
    """Count what the book gained since the cursor. Without `wait`, a step that finds another running (the
    worker's cron starts one each second) does nothing."""
    async with engine().transaction() as tx:
        conn = tx.connection
        done = await conn.fetchval(
            _LOCK_WAIT if wait else _LOCK_SKIP)
        if done is None:
            return Step(0, 0, 0)
        target = await conn.fetchval("SELECT pg_current_snapshot()::text")
        row = await conn.fetchrow(_STEP, done, target)
        await conn.execute("UPDATE community_cursor SET snapshot = $1, updated_at = now() WHERE id = 1", target)
    return Step(row["entries"], row["rows"], row["participants"])


def scopes_of_entry(city: str | None, district: str | None, community: str | None, team: int | None,
                    partner: str | None) -> list[str]:
    """The same scopes as SCOPES_SQL, for readers that name a scope (pages, ledgers, tests)."""
    out = ["all", f"city:{city or ''}"]
    if city and district:
        out.append(f"district:{city}|{district}")
        if community:
            out.append(f"community:{city}|{district}|{community}")
    if team is not None:
        out.append(f"team:{team}")
    out.append(f"partner:{partner or 'self'}")
    return out
