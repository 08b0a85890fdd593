"""Pooling book entries into lots, and releasing them again.

Selection is deterministic: the eligible, not-yet-pooled credits of opted-in residents, oldest local day first
(then by entry id), up to the smallest prefix that reaches the lot's target; entries are never split, so a lot
holds its target plus less than one entry. The walk reads credits in index order, in growing batches, and stops at
the target, so a lot costs what it holds rather than what the pool holds. Lot creations take one transaction-scoped
advisory lock, so they queue rather than race for the same entries; the partial UNIQUE index on live lot items is
what guarantees an entry is in at most one live lot even if something bypassed the lock. A lot's row is written
last, once its totals and manifest hash are known (its items refer to it through deferred foreign keys).
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import asyncpg

from wallet.db import connection, engine
from wallet.errors import DomainError
from wallet.market.manifest import Manifest, read_manifest
from wallet.market.programmes import Programme, get_programme

__all__ = [
    "MAX_LOT_ENTRIES",
    "MAX_TARGET_MG",
    "POOL_LOCK",
    "cancel_lot",
    "create_lot",
    "eligible_summary",
    "get_lot",
    "list_lots",
    "lot_manifest",
]

MAX_LOT_ENTRIES = 250_000  # a manifest of up to ~100 MB; larger sales are several lots
MAX_TARGET_MG = 10**15  # a million tonnes
POOL_LOCK = 0x4C4F5453  # "LOTS"
FIRST_BATCH, LAST_BATCH = 2_000, 50_000  # a lot walks the eligible credits in batches doubling from one to the other

# $1 behaviour@version list, $2 releases, $3 tiers, $4 first day, $5 last day, $6 settle days
_ELIGIBLE = """
SELECT e.id, e.holder, e.reduction_mg, e.local_day FROM book_entry e
JOIN market_consent c ON c.holder = e.holder AND c.opted_in
JOIN holder h ON h.id = e.holder AND h.status = 'active'
WHERE e.kind = 'credit' AND e.reduction_mg > 0 AND e.local_day BETWEEN $4 AND $5
  AND e.recorded_at <= now() - make_interval(days => $6)
  AND e.trust_tier = ANY($3::text[]) AND e.methodology_release = ANY($2::text[])
  AND (e.behaviour || '@' || e.behaviour_version) = ANY($1::text[])
  AND NOT EXISTS (SELECT 1 FROM book_entry r WHERE r.reverses = e.id)
  AND NOT EXISTS (SELECT 1 FROM market_lot_item i WHERE i.entry = e.id AND NOT i.released)"""

# The next eligible entries after a (local_day, id) cursor, walking book_entry_credit_day in order: a lot's cost
# follows its size, not the pool's (ranking the whole pool took 9 s for a 10,000-entry lot out of a million).
_NEXT = f"""{_ELIGIBLE}
  AND (e.local_day, e.id) > ($7, $8) ORDER BY e.local_day, e.id LIMIT $9"""
_INSERT_ITEMS = """
INSERT INTO market_lot_item (lot, entry, holder, reduction_mg, released)
SELECT $1, e, h, g, false FROM unnest($2::bigint[], $3::uuid[], $4::bigint[]) AS x(e, h, g) ORDER BY e"""

_HOLD_HEADS = """
SELECT holder_id FROM book_head WHERE holder_id IN (SELECT DISTINCT holder FROM market_lot_item WHERE lot = $1)
ORDER BY holder_id FOR SHARE"""
_REVERSED = """
SELECT coalesce(sum(i.reduction_mg), 0)::bigint FROM market_lot_item i
WHERE i.lot = $1 AND EXISTS (SELECT 1 FROM book_entry r WHERE r.reverses = i.entry)"""
_CONTRIBUTORS = """
INSERT INTO market_lot_holder (lot, holder, reduction_mg, entries, first_entry, head_seq, head_hash, consented_at)
SELECT i.lot, i.holder, sum(i.reduction_mg)::bigint, count(*), min(i.entry), b.seq, b.head_hash, c.changed_at
FROM market_lot_item i JOIN book_head b ON b.holder_id = i.holder JOIN market_consent c ON c.holder = i.holder
WHERE i.lot = $1 GROUP BY i.lot, i.holder, b.seq, b.head_hash, c.changed_at
RETURNING reduction_mg, entries"""

LOT_COLUMNS = """l.id, l.programme, l.state, l.target_mg, l.day_from, l.day_to, l.total_mg, l.entries, l.holders,
    l.manifest_hash, l.note, l.created_at, l.cancelled_at, l.cancel_reason, p.code AS programme_code,
    p.name_zh AS programme_name_zh, p.name_en AS programme_name_en, l.reversed_mg"""
_LOTS = f"SELECT {LOT_COLUMNS} FROM market_lot l JOIN market_programme p ON p.id = l.programme"  # noqa: S608


def _window(programme: Programme, day_from: date | None, day_to: date | None) -> tuple[date, date]:
    start = max(day_from or programme.period_from, programme.period_from)
    end = min(day_to or programme.period_to, programme.period_to)
    if start > end:
        raise DomainError("invalid", "outside-programme-period",
                          f"The programme {programme.code} covers {programme.period_from} to {programme.period_to}; "
                          "choose days inside it, the first not after the last.", field="day_from")
    return start, end


def _args(programme: Programme, start: date, end: date) -> list[Any]:
    return [programme.behaviours, programme.methodology_releases, programme.trust_tiers, start, end,
            programme.settle_days]


async def eligible_summary(programme_code: str, day_from: date | None = None,
                           day_to: date | None = None) -> dict[str, Any]:
    """What a lot could take now: eligible, not-yet-pooled grams, entries and residents in the window."""
    programme = await get_programme(programme_code)
    start, end = _window(programme, day_from, day_to)
    async with connection() as conn:
        row = await conn.fetchrow(
            f"""SELECT coalesce(sum(reduction_mg), 0)::bigint AS reduction_mg, count(*) AS entries,
                       count(DISTINCT holder) AS holders FROM ({_ELIGIBLE}) x""",  # noqa: S608 - constant SQL
            *_args(programme, start, end))
    return {"programme": programme.code, "day_from": start, "day_to": end, **dict(row)}


def _lot_header(lot_id: int, created_at: Any, start: date, end: date, target: int, totals: dict[str, int]) -> dict:
    return {"id": lot_id, "created_at": created_at, "day_from": start, "day_to": end, "target_mg": target, **totals}


async def _existing(conn: asyncpg.Connection, operator: uuid.UUID | None, key: str,
                    fields: tuple) -> dict[str, Any] | None:
    row = await conn.fetchrow(_LOTS + " WHERE l.created_by = $1 AND l.idempotency_key = $2", operator, key)
    if row is None:
        return None
    if (row["programme_code"], row["target_mg"], row["day_from"], row["day_to"], row["note"]) != fields:
        raise DomainError("invalid", "idempotency-key-reused",
                          "This Idempotency-Key was used to create a different lot; use a new key.")
    return dict(row)


async def _pick(conn: asyncpg.Connection, programme: Programme, start: date, end: date,
                target_mg: int) -> tuple[list[int], list[uuid.UUID], list[int]]:
    """The smallest prefix of the eligible entries, in (local_day, id) order, that reaches `target_mg`; refusals
    say how much there is, or that the lot would be too large, as soon as that is known."""
    entries: list[int] = []
    holders: list[uuid.UUID] = []
    grams: list[int] = []
    taken, after, batch = 0, (start, 0), FIRST_BATCH
    # PostgreSQL cannot estimate the `behaviour@version` filter (it assumes 0.5 % of rows match), so a plan made for
    # a batch's own values may scan and sort the whole pool; the generic plan walks the index and stops at the limit
    # (bench/market.py: a 50,000-entry batch in 0.55 s instead of 5.45 s). SET LOCAL ends with this transaction.
    await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    # Fresh statistics of the live items (autovacuum may not have seen the last lot): planned against an items table
    # it believed empty, the "not yet pooled" probe became a scan of every item per candidate (0.45 ms a row, 22 s
    # for one batch in bench/market.py). A sampled ANALYZE of one table costs milliseconds to a few tenths.
    await conn.execute("ANALYZE market_lot_item")
    while taken < target_mg:
        rows = await conn.fetch(_NEXT, *_args(programme, start, end), *after, batch)
        for r in rows:
            entries.append(r["id"])
            holders.append(r["holder"])
            grams.append(r["reduction_mg"])
            taken += r["reduction_mg"]
            if taken >= target_mg:
                break
        if len(entries) > MAX_LOT_ENTRIES:
            raise DomainError("invalid", "lot-too-large",
                              f"This lot would hold more than {MAX_LOT_ENTRIES:,} entries; make several smaller lots.",
                              field="target_mg")
        if len(rows) < batch:
            break
        after, batch = (rows[-1]["local_day"], rows[-1]["id"]), min(batch * 2, LAST_BATCH)
    if taken < target_mg:
        raise DomainError("conflict", "not-enough-eligible",
                          f"Only {taken:,} mg CO2e ({len(entries):,} entries of {len(set(holders)):,} residents) are "
                          f"eligible and not yet pooled in {start} to {end}; lower the target or widen the days.",
                          available_mg=taken)
    return entries, holders, grams


async def create_lot(operator: uuid.UUID | None, programme_code: str, target_mg: int, *, day_from: date | None = None,
                     day_to: date | None = None, note: str = "",
                     idempotency_key: str | None = None) -> tuple[dict[str, Any], bool]:
    """Pool eligible entries into a new lot; returns the lot and whether it was made now (False: a repeat).
    `operator` is who asked (None from the CLI); an idempotency key is scoped to them."""
    if isinstance(target_mg, bool) or not isinstance(target_mg, int) or not 1 <= target_mg <= MAX_TARGET_MG:
        raise DomainError("invalid", "invalid-target", "target_mg is the lot's size in mg CO2e: 1 to 10^15 "
                          "(1 t = 1,000,000,000 mg).", field="target_mg")
    programme = await get_programme(programme_code)
    start, end = _window(programme, day_from, day_to)
    async with engine().transaction() as tx:
        conn = tx.connection
        await conn.execute("SELECT pg_advisory_xact_lock($1)", POOL_LOCK)
        if idempotency_key is not None:
            found = await _existing(conn, operator, idempotency_key,
                                    (programme.code, target_mg, start, end, note[:500]))
            if found is not None:
                return found, False
        if programme.status != "open":
            raise DomainError("conflict", "programme-closed", f"The programme {programme.code} is closed to new lots.")
        lot_id, created_at = await conn.fetchrow(
            "SELECT nextval(pg_get_serial_sequence('market_lot', 'id')), now()")
        picked = await _pick(conn, programme, start, end, target_mg)
        try:
            await conn.execute(_INSERT_ITEMS, lot_id, *picked)
        except asyncpg.UniqueViolationError as exc:  # only if something pooled without the lock
            raise DomainError("conflict", "lot-race", "Another lot took some of these entries; try again.") from exc
        # Reversals of these holders wait from here until the lot commits (they lock the book head for update),
        # so the trigger that marks a lot's reversed grams sees every reversal either here or after the commit.
        await conn.execute(_HOLD_HEADS, lot_id)
        reversed_mg = await conn.fetchval(_REVERSED, lot_id)
        rows = await conn.fetch(_CONTRIBUTORS, lot_id)
        totals = {"total_mg": sum(r["reduction_mg"] for r in rows), "entries": sum(r["entries"] for r in rows),
                  "holders": len(rows)}
        header = _lot_header(lot_id, created_at, start, end, target_mg, totals)
        manifest = await read_manifest(conn, header, programme.as_rules())
        await conn.execute(
            """INSERT INTO market_lot (id, programme, state, target_mg, day_from, day_to, total_mg, entries, holders,
                 manifest_hash, reversed_mg, created_by, idempotency_key, note, created_at)
               VALUES ($1, $2, 'open', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)""",
            lot_id, programme.id, target_mg, start, end, totals["total_mg"], totals["entries"], totals["holders"],
            manifest.sha256, reversed_mg, operator, idempotency_key, note[:500], created_at)
        return await get_lot(lot_id, conn), True


async def get_lot(lot_id: int, conn: asyncpg.Connection | None = None, *, lock: bool = False) -> dict[str, Any]:
    sql = _LOTS + " WHERE l.id = $1" + (" FOR UPDATE OF l" if lock else "")
    if conn is None:
        async with connection() as c:
            row = await c.fetchrow(sql, lot_id)
    else:
        row = await conn.fetchrow(sql, lot_id)
    if row is None:
        raise DomainError("not_found", "lot-not-found", "No lot has this id.")
    return dict(row)


async def list_lots(*, state: str | None = None, before: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
    async with connection() as conn:
        rows = await conn.fetch(
            _LOTS + """ WHERE ($1::text IS NULL OR l.state = $1) AND ($2::bigint IS NULL OR l.id < $2)
                ORDER BY l.id DESC LIMIT $3""", state, before, limit)
    return [dict(r) for r in rows]


async def lot_manifest(lot_id: int) -> tuple[dict[str, Any], Manifest]:
    """The manifest rendered from what is stored; its hash must equal the one recorded at creation."""
    async with connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        lot = await get_lot(lot_id, conn)
        programme = await get_programme(lot["programme"], conn)
        manifest = await read_manifest(conn, lot, programme.as_rules())
    return lot, manifest


async def cancel_lot(lot_id: int, reason: str) -> dict[str, Any]:
    """Release an unsold lot's entries (they may be pooled again); a lot with a pending sale, or sold, stays."""
    async with engine().transaction() as tx:
        conn = tx.connection
        lot = await get_lot(lot_id, conn, lock=True)
        if lot["state"] == "cancelled":
            return lot
        if lot["state"] == "pending":
            raise DomainError("conflict", "sale-pending",
                              "This lot has a pending sale; cancel the sale first, then the lot.")
        if lot["state"] == "settled":
            raise DomainError("conflict", "lot-sold", "This lot is sold; a sold lot is never released.")
        await conn.execute("UPDATE market_lot_item SET released = true WHERE lot = $1 AND NOT released", lot_id)
        await conn.execute(
            "UPDATE market_lot SET state = 'cancelled', cancelled_at = now(), cancel_reason = $2 WHERE id = $1",
            lot_id, reason[:500] or "cancelled by an operator")
        return await get_lot(lot_id, conn)
