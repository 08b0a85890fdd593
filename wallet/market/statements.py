"""What residents and the public see of the market: a resident's choice, their lots and what each paid them, and a
public account of every lot (totals, price, contributors, where the public-benefit share went), never whose grams."""

from __future__ import annotations

import uuid
from typing import Any

from wallet.db import connection, engine
from wallet.errors import DomainError
from wallet.ledger.allocation import largest_remainder
from wallet.market.lots import LOT_COLUMNS, POOL_LOCK
from wallet.market.sales import SALE_COLUMNS

__all__ = ["get_consent", "my_lot", "my_market", "public_lot", "public_lots", "set_consent"]


async def get_consent(holder_id: uuid.UUID) -> dict[str, Any]:
    async with connection() as conn:
        row = await conn.fetchrow("SELECT opted_in, changed_at FROM market_consent WHERE holder = $1", holder_id)
        waiting = await conn.fetchval(
            """SELECT count(*) FROM market_lot_holder m JOIN market_lot l ON l.id = m.lot
               WHERE m.holder = $1 AND l.state IN ('open', 'pending')""", holder_id)
    return {"opted_in": bool(row and row["opted_in"]), "changed_at": row["changed_at"] if row else None,
            "unsold_lots": waiting}


async def set_consent(holder_id: uuid.UUID, opted_in: bool) -> dict[str, Any]:
    """Opting out keeps later lots from taking your entries; entries already in a lot stay there and are paid.
    A choice waits for a lot being made (the pool's lock, shared): a lot reads consent once per batch, so a
    change in the middle would leave its earlier batches holding entries of someone who had just said no."""
    async with engine().transaction() as tx:
        await tx.connection.execute("SELECT pg_advisory_xact_lock_shared($1)", POOL_LOCK)
        await tx.connection.execute(
            """INSERT INTO market_consent (holder, opted_in, changed_at) VALUES ($1, $2, now())
               ON CONFLICT (holder) DO UPDATE SET opted_in = excluded.opted_in,
                 changed_at = CASE WHEN market_consent.opted_in = excluded.opted_in THEN market_consent.changed_at
                                   ELSE excluded.changed_at END""", holder_id, opted_in)
    return await get_consent(holder_id)


_MY_LOTS = f"""
SELECT {LOT_COLUMNS}, m.reduction_mg AS my_mg, m.entries AS my_entries, s.id AS sale_id, s.state AS sale_state,
       s.price_per_tonne_fen, s.sale_date, s.settled_at, po.fen AS my_fen, po.energy AS my_energy, p.payout
FROM market_lot_holder m JOIN market_lot l ON l.id = m.lot JOIN market_programme p ON p.id = l.programme
LEFT JOIN market_sale s ON s.lot = l.id AND s.state = 'settled'
LEFT JOIN market_payout po ON po.sale = s.id AND po.holder = m.holder
WHERE m.holder = $1 AND ($2::bigint IS NULL OR l.id = $2) ORDER BY l.id DESC"""  # noqa: S608


async def my_market(holder_id: uuid.UUID) -> dict[str, Any]:
    """My choice, my money balance, and every lot my entries went into with what it paid me."""
    async with connection() as conn:
        lots = [dict(r) for r in await conn.fetch(_MY_LOTS, holder_id, None)]
        balance = await conn.fetchval(
            "SELECT balance FROM ledger_account WHERE holder = $1 AND unit = 'fen' AND purpose = 'available'",
            holder_id)
    return {"consent": await get_consent(holder_id), "balance_fen": balance or 0,
            "received_fen": sum(x["my_fen"] or 0 for x in lots if x["payout"] == "fen"),
            "converted_fen": sum(x["my_fen"] or 0 for x in lots if x["payout"] == "energy"),
            "received_energy": sum(x["my_energy"] or 0 for x in lots), "lots": lots}


async def my_lot(holder_id: uuid.UUID, lot_id: int) -> dict[str, Any]:
    """My entries in one lot, each with its share of what I was paid (largest remainder by grams, by entry id)."""
    async with connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        mine = await conn.fetchrow(_MY_LOTS, holder_id, lot_id)
        if mine is None:
            raise DomainError("not_found", "lot-not-found", "None of your book entries is in this lot.")
        entries = [dict(r) for r in await conn.fetch(
            """SELECT e.id, e.local_day, e.behaviour, e.behaviour_version, e.methodology_release, e.category,
                      i.reduction_mg, e.entry_hash,
                      EXISTS (SELECT 1 FROM book_entry r WHERE r.reverses = e.id) AS reversed
               FROM market_lot_item i JOIN book_entry e ON e.id = i.entry
               WHERE i.lot = $1 AND i.holder = $2 ORDER BY e.id""", lot_id, holder_id)]
    lot = dict(mine)
    fen = largest_remainder(lot["my_fen"] or 0, [e["reduction_mg"] for e in entries])
    energy = largest_remainder(lot["my_energy"] or 0, [e["reduction_mg"] for e in entries])
    for e, f, en in zip(entries, fen, energy, strict=True):
        e["fen"], e["energy"] = f, en
    return {"lot": lot, "entries": entries}


_PUBLIC = f"""
SELECT {LOT_COLUMNS}, p.exchange_zh, p.exchange_en, p.payout, p.energy_per_fen, p.benefit_ppm, p.benefit_name_zh,
       p.benefit_name_en, p.benefit_url
FROM market_lot l JOIN market_programme p ON p.id = l.programme"""  # noqa: S608 - constant SQL


async def public_lot(lot_id: int) -> dict[str, Any]:
    """A lot as anyone may see it (no holder ids, no grams per person), with its live sale, read in one snapshot."""
    async with connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        row = await conn.fetchrow(_PUBLIC + " WHERE l.id = $1", lot_id)
        if row is None:
            raise DomainError("not_found", "lot-not-found", "No lot has this id.")
        sale = await conn.fetchrow(
            f"SELECT {SALE_COLUMNS} FROM market_sale WHERE lot = $1 AND state <> 'cancelled'", lot_id)  # noqa: S608
    return {**dict(row), "sale": dict(sale) if sale else None}


async def public_lots(*, before: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Lots that were offered or sold (cancelled ones too: they are part of the record), newest first."""
    async with connection() as conn:
        rows = await conn.fetch(
            _PUBLIC + """ WHERE ($1::bigint IS NULL OR l.id < $1) ORDER BY l.id DESC LIMIT $2""", before, limit)
        sales = {r["lot"]: dict(r) for r in await conn.fetch(
            f"SELECT {SALE_COLUMNS} FROM market_sale WHERE lot = ANY($1::bigint[]) AND state <> 'cancelled'",  # noqa: S608
            [r["id"] for r in rows])}
    return [{**dict(r), "sale": sales.get(r["id"])} for r in rows]
