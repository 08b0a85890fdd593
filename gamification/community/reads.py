"""Reading the community aggregates: a scope's summary for its public page, the city programme ledger (region ×
category × day), the enterprise ledger (a partner's residents' reductions by behaviour and month), and the check
that the three ledgers (city, enterprise, resident: the book itself) add up to the same total.

Everything here reads `community_day` / `community_participant`, which the follower keeps; nothing scans the
book, except the consistency check, whose job is to compare with it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from wallet.db import connection, engine
from wallet.errors import DomainError

__all__ = ["Consistency", "city_ledger", "consistency", "enterprise_ledger", "scope_summary"]

LEDGER_DAYS_MAX = 366
GRANULARITY = ("city", "district", "community")


async def scope_summary(scope: str, *, today: date, days: int = 30, top: int = 5) -> dict[str, Any]:
    """What a public page shows of a scope: totals (all time and the last `days`), participants (all time, a
    counter the step keeps), one point per day of the last `days` (zeros included), the breakdown by category and
    the top behaviours, all in mg."""
    since = today - timedelta(days=days - 1)
    async with engine().transaction() as tx:  # one snapshot: the numbers agree with one another
        conn = tx.connection
        totals = await conn.fetchrow(
            """SELECT coalesce(sum(reduction_mg), 0)::bigint AS total_mg,
                      coalesce(sum(reduction_mg) FILTER (WHERE day >= $2), 0)::bigint AS recent_mg,
                      coalesce(sum(credits - reversals), 0)::bigint AS actions
               FROM community_day WHERE scope = $1""", scope, since)
        participants = await conn.fetchval(
            "SELECT coalesce(max(participants), 0) FROM community_scope WHERE scope = $1", scope)
        by_day = {r["day"]: r["mg"] for r in await conn.fetch(
            """SELECT day, sum(reduction_mg)::bigint AS mg FROM community_day
               WHERE scope = $1 AND day BETWEEN $2 AND $3 GROUP BY day""", scope, since, today)}
        categories = await conn.fetch(
            """SELECT category, sum(reduction_mg)::bigint AS mg FROM community_day WHERE scope = $1
               GROUP BY category HAVING sum(reduction_mg) > 0 ORDER BY mg DESC, category""", scope)
        behaviours = await conn.fetch(
            """SELECT behaviour, min(category) AS category, sum(reduction_mg)::bigint AS mg,
                      sum(credits - reversals)::bigint AS actions
               FROM community_day WHERE scope = $1 GROUP BY behaviour HAVING sum(reduction_mg) > 0
               ORDER BY mg DESC, behaviour LIMIT $2""", scope, top)
        counted_at = await conn.fetchval("SELECT updated_at FROM community_cursor WHERE id = 1")
    return {
        "scope": scope, "total_mg": totals["total_mg"], "recent_mg": totals["recent_mg"],
        "actions": totals["actions"], "participants": participants, "days": days, "counted_at": counted_at,
        "series": [(since + timedelta(days=i), by_day.get(since + timedelta(days=i), 0)) for i in range(days)],
        "categories": [(r["category"], r["mg"]) for r in categories],
        "behaviours": [dict(r) for r in behaviours],
    }


def _window(from_day: date, to_day: date) -> None:
    if to_day < from_day:
        raise DomainError("invalid", "invalid-range", "to_day must not be before from_day.", field="to_day")
    if (to_day - from_day).days >= LEDGER_DAYS_MAX:
        raise DomainError("invalid", "range-too-long", f"At most {LEDGER_DAYS_MAX} days at a time.", field="to_day")


async def city_ledger(city: str, *, from_day: date, to_day: date, by: str = "district") -> dict[str, Any]:
    """The city programme ledger: reductions, actions and participants by region × category × day, for the city
    as a whole (`by=city`), its districts or its communities."""
    if by not in GRANULARITY:
        raise DomainError("invalid", "invalid-granularity", "by is city, district or community.", field="by")
    _window(from_day, to_day)
    pattern = {"city": f"city:{city}", "district": f"district:{city}|%", "community": f"community:{city}|%|%"}[by]
    op = "=" if by == "city" else "LIKE"
    async with engine().transaction() as tx:
        conn = tx.connection
        rows = await conn.fetch(
            f"""SELECT d.scope, d.category, d.day, sum(d.reduction_mg)::bigint AS reduction_mg,
                       sum(d.credits)::bigint AS credits, sum(d.reversals)::bigint AS reversals,
                       (SELECT count(*) FROM community_participant p
                        WHERE p.scope = d.scope AND p.day = d.day) AS participants_that_day
                FROM community_day d WHERE d.scope {op} $1 AND d.day BETWEEN $2 AND $3
                GROUP BY d.scope, d.category, d.day ORDER BY d.day, d.scope, d.category""",  # noqa: S608
            pattern, from_day, to_day)
        total = await conn.fetchrow(
            """SELECT coalesce(sum(reduction_mg), 0)::bigint AS reduction_mg,
                      coalesce(sum(credits), 0)::bigint AS credits, coalesce(sum(reversals), 0)::bigint AS reversals
               FROM community_day WHERE scope = $1 AND day BETWEEN $2 AND $3""", f"city:{city}", from_day, to_day)
        participants = await conn.fetchval(
            """SELECT count(DISTINCT holder) FROM community_participant
               WHERE scope = $1 AND day BETWEEN $2 AND $3""", f"city:{city}", from_day, to_day)
        counted_at = await conn.fetchval("SELECT updated_at FROM community_cursor WHERE id = 1")
    return {
        "city": city, "by": by, "from_day": from_day, "to_day": to_day, "counted_at": counted_at,
        "total": {**dict(total), "participants": participants},
        "rows": [{**dict(r), "region": r["scope"].split(":", 1)[1]} for r in rows],
    }


async def enterprise_ledger(partner_id: uuid.UUID | None, *, from_day: date, to_day: date) -> dict[str, Any]:
    """The enterprise ledger: what a partner's residents reduced through it, by behaviour and month (None: the
    residents' own self-reported actions)."""
    _window(from_day, to_day)
    scope = f"partner:{partner_id or 'self'}"
    async with engine().transaction() as tx:
        conn = tx.connection
        rows = await conn.fetch(
            """SELECT date_trunc('month', d.day)::date AS month, d.behaviour, min(d.category) AS category,
                      sum(d.reduction_mg)::bigint AS reduction_mg, sum(d.credits)::bigint AS credits,
                      sum(d.reversals)::bigint AS reversals
               FROM community_day d WHERE d.scope = $1 AND d.day BETWEEN $2 AND $3
               GROUP BY 1, d.behaviour ORDER BY 1, reduction_mg DESC, d.behaviour""", scope, from_day, to_day)
        months = {r["month"]: r["n"] for r in await conn.fetch(
            """SELECT date_trunc('month', day)::date AS month, count(DISTINCT holder) AS n FROM community_participant
               WHERE scope = $1 AND day BETWEEN $2 AND $3 GROUP BY 1""", scope, from_day, to_day)}
        participants = await conn.fetchval(
            "SELECT count(DISTINCT holder) FROM community_participant WHERE scope = $1 AND day BETWEEN $2 AND $3",
            scope, from_day, to_day)
        counted_at = await conn.fetchval("SELECT updated_at FROM community_cursor WHERE id = 1")
    return {
        "partner_id": partner_id, "from_day": from_day, "to_day": to_day, "counted_at": counted_at,
        "total": {"reduction_mg": sum(r["reduction_mg"] for r in rows), "credits": sum(r["credits"] for r in rows),
                  "reversals": sum(r["reversals"] for r in rows), "participants": participants},
        "months": [{"month": m, "participants": months.get(m, 0),
                    "behaviours": [{k: r[k] for k in ("behaviour", "category", "reduction_mg", "credits",
                                                      "reversals")} for r in rows if r["month"] == m]}
                   for m in sorted({r["month"] for r in rows})],
    }


@dataclass(frozen=True, slots=True)
class Consistency:
    ok: bool
    resident_mg: int  # the book itself: every resident's entries, as far as the aggregates have counted
    all_mg: int
    city_mg: int  # the city ledger: every city (and residents with none) together
    enterprise_mg: int  # the enterprise ledger: every partner and the residents' own reports together
    entries: int
    snapshot: str


async def consistency() -> Consistency:
    """The three ledgers must add up to the same total: the book (resident ledger) up to the cursor's snapshot,
    the city ledger over all cities and the enterprise ledger over all partners, read in one snapshot."""
    async with connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        snapshot = await conn.fetchval("SELECT snapshot FROM community_cursor WHERE id = 1")
        book = await conn.fetchrow(
            """SELECT coalesce(sum(reduction_mg), 0)::bigint AS mg, count(*) AS n FROM book_entry
               WHERE pg_visible_in_snapshot(txid, $1::text::pg_snapshot)""", snapshot)
        sums = await conn.fetchrow(
            """SELECT coalesce(sum(reduction_mg) FILTER (WHERE scope = 'all'), 0)::bigint AS all_mg,
                      coalesce(sum(reduction_mg) FILTER (WHERE scope LIKE 'city:%'), 0)::bigint AS city_mg,
                      coalesce(sum(reduction_mg) FILTER (WHERE scope LIKE 'partner:%'), 0)::bigint AS partner_mg,
                      coalesce(sum(credits + reversals) FILTER (WHERE scope = 'all'), 0)::bigint AS entries
               FROM community_day""")
    ok = book["mg"] == sums["all_mg"] == sums["city_mg"] == sums["partner_mg"] and book["n"] == sums["entries"]
    return Consistency(ok, book["mg"], sums["all_mg"], sums["city_mg"], sums["partner_mg"], book["n"], snapshot)


async def scopes_like(prefix: str, *, limit: int = 200) -> list[str]:
    """Scopes under a prefix (the districts of a city, the communities of a district) that someone took part
    in, for pages' links: one row per scope, through a prefix index."""
    async with connection() as conn:
        return [r["scope"] for r in await conn.fetch(
            "SELECT scope FROM community_scope WHERE scope LIKE $1 ORDER BY scope LIMIT $2",
            prefix.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%", limit)]
