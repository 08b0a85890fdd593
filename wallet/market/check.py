"""Reconciliation of lots, sales and the money ledger (LEDGER L10, L11), run with the ledger's other checks.

The SQL checks list offenders like the ledger's; the two recomputations (every manifest's hash, every settlement's
split) are done in Python with the very functions that made them, from what is stored.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from wallet.market.manifest import read_manifest
from wallet.market.programmes import get_programme
from wallet.market.sales import split_proceeds

__all__ = ["MARKET_CHECKS", "recomputed_manifests", "recomputed_splits"]

_TRANSFERRED = """SELECT (ref->>'sale')::bigint AS sale, sum(amount)::bigint AS fen FROM ledger_transfer
                  WHERE unit = 'fen' AND kind IN ('market.proceeds', 'market.benefit', 'market.converted') GROUP BY 1"""

MARKET_CHECKS: dict[str, str] = {
    # A book entry is in at most one live lot (the partial UNIQUE index makes it impossible; a dropped one shows).
    "entry-in-at-most-one-live-lot": """
        SELECT entry, count(*) AS lots FROM market_lot_item WHERE NOT released GROUP BY entry HAVING count(*) > 1""",
    # A lot's totals are its items, and each contributor's row is their items.
    "lot-items-sum-to-lot-totals": """
        SELECT l.id, l.total_mg, l.entries, l.holders, i.mg, i.n, i.people FROM market_lot l
        LEFT JOIN (SELECT lot, sum(reduction_mg)::bigint AS mg, count(*) AS n, count(DISTINCT holder) AS people
                   FROM market_lot_item GROUP BY lot) i ON i.lot = l.id
        WHERE i.mg IS DISTINCT FROM l.total_mg OR i.n <> l.entries OR i.people <> l.holders
        UNION ALL
        SELECT h.lot, h.reduction_mg, h.entries, NULL, i.mg, i.n, NULL FROM market_lot_holder h
        LEFT JOIN (SELECT lot, holder, sum(reduction_mg)::bigint AS mg, count(*) AS n FROM market_lot_item
                   GROUP BY lot, holder) i ON i.lot = h.lot AND i.holder = h.holder
        WHERE i.mg IS DISTINCT FROM h.reduction_mg OR i.n <> h.entries""",
    # Each item is a credit of the book with the same holder and grams, covered by the recorded chain head.
    "lot-items-match-the-book": """
        SELECT i.lot, i.entry FROM market_lot_item i JOIN book_entry e ON e.id = i.entry
        LEFT JOIN market_lot_holder h ON h.lot = i.lot AND h.holder = i.holder
        WHERE e.kind <> 'credit' OR e.holder <> i.holder OR e.reduction_mg <> i.reduction_mg OR h.id IS NULL
           OR e.seq > h.head_seq""",
    # A lot's reversed grams are its live items' entries that were reversed (kept by a trigger on the book).
    "lot-reversals-match-the-book": """
        SELECT l.id, l.reversed_mg, coalesce(r.mg, 0)::bigint AS reversed FROM market_lot l
        LEFT JOIN (SELECT i.lot, sum(i.reduction_mg) AS mg FROM market_lot_item i
                   WHERE NOT i.released AND EXISTS (SELECT 1 FROM book_entry r WHERE r.reverses = i.entry)
                   GROUP BY i.lot) r ON r.lot = l.id
        WHERE l.state <> 'cancelled' AND l.reversed_mg <> coalesce(r.mg, 0)""",
    # Items are released exactly when their lot is cancelled.
    "items-released-iff-lot-cancelled": """
        SELECT l.id, l.state, count(*) AS items FROM market_lot l JOIN market_lot_item i ON i.lot = l.id
        WHERE i.released <> (l.state = 'cancelled') GROUP BY l.id, l.state""",
    # A lot's state agrees with its sales: pending has one pending sale, settled one settled sale, others none live.
    "lot-state-matches-sales": """
        SELECT l.id, l.state, count(s.id) FILTER (WHERE s.state = 'pending') AS pending,
               count(s.id) FILTER (WHERE s.state = 'settled') AS settled
        FROM market_lot l LEFT JOIN market_sale s ON s.lot = l.id GROUP BY l.id, l.state
        HAVING count(s.id) FILTER (WHERE s.state = 'pending') <> (l.state = 'pending')::int
            OR count(s.id) FILTER (WHERE s.state = 'settled') <> (l.state = 'settled')::int""",
    # A sale's gross is floor(total × price / 10^9); a settled sale's payouts and benefit add up to it.
    "settled-sale-pays-exactly": """
        SELECT s.id, s.gross_fen, s.benefit_fen, s.residents_fen, po.fen, po.people, l.holders FROM market_sale s
        JOIN market_lot l ON l.id = s.lot
        LEFT JOIN (SELECT sale, sum(fen)::bigint AS fen, count(*) AS people FROM market_payout GROUP BY sale) po
               ON po.sale = s.id
        WHERE s.gross_fen <> div(l.total_mg::numeric * s.price_per_tonne_fen, 1000000000)
           OR (s.state = 'settled' AND (po.fen IS DISTINCT FROM s.residents_fen OR po.people <> l.holders))
           OR (s.state <> 'settled' AND po.sale IS NOT NULL)""",
    # The money ledger moved exactly each settled sale's gross out of the exchange account, and nothing for others.
    "sales-match-money-transfers": f"""
        SELECT s.id, s.state, s.gross_fen, t.fen AS transferred FROM market_sale s
        LEFT JOIN ({_TRANSFERRED}) t ON t.sale = s.id
        WHERE (s.state = 'settled' AND coalesce(t.fen, 0) <> s.gross_fen) OR (s.state <> 'settled' AND t.fen > 0)""",  # noqa: S608
    # Each payout is in the ledger: its fen to the resident, or its energy at the programme's rate.
    "payouts-in-the-ledger": """
        SELECT po.sale, po.holder, po.fen, po.energy, p.payout FROM market_payout po
        JOIN market_sale s ON s.id = po.sale JOIN market_lot l ON l.id = s.lot
        JOIN market_programme p ON p.id = l.programme
        LEFT JOIN ledger_transfer f ON f.key = 'sale:' || po.sale || ':holder:' || po.holder
        LEFT JOIN ledger_transfer c ON c.key = 'sale:' || po.sale || ':holder:' || po.holder || ':fen'
        LEFT JOIN ledger_transfer e ON e.key = 'sale:' || po.sale || ':holder:' || po.holder || ':energy'
        WHERE (p.payout = 'fen' AND (coalesce(f.amount, 0) <> po.fen OR po.energy <> 0 OR c.id IS NOT NULL))
           OR (p.payout = 'energy' AND (coalesce(c.amount, 0) <> po.fen OR coalesce(e.amount, 0) <> po.energy
                                        OR po.energy <> po.fen * p.energy_per_fen OR f.id IS NOT NULL))""",
}


async def recomputed_manifests(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Lots whose manifest, rendered from what is stored now, no longer has the hash recorded at creation."""
    out = []
    for lot in await conn.fetch("""SELECT id, programme, created_at, day_from, day_to, target_mg, total_mg, entries,
                                          holders, manifest_hash FROM market_lot ORDER BY id"""):
        programme = await get_programme(lot["programme"], conn)
        manifest = await read_manifest(conn, dict(lot), programme.as_rules())
        if manifest.sha256 != bytes(lot["manifest_hash"]):
            out.append({"lot": lot["id"], "recorded": bytes(lot["manifest_hash"]).hex(),
                        "recomputed": manifest.sha256.hex()})
    return out


async def recomputed_splits(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Settled sales whose payouts differ from the split recomputed from the lot and the programme's rules."""
    out = []
    for sale in await conn.fetch(
            """SELECT s.id, s.lot, s.gross_fen, s.benefit_fen, p.benefit_ppm FROM market_sale s
               JOIN market_lot l ON l.id = s.lot JOIN market_programme p ON p.id = l.programme
               WHERE s.state = 'settled' ORDER BY s.id"""):
        people = await conn.fetch(
            """SELECT h.holder, h.reduction_mg, po.fen FROM market_lot_holder h
               LEFT JOIN market_payout po ON po.sale = $2 AND po.holder = h.holder
               WHERE h.lot = $1 ORDER BY h.first_entry""", sale["lot"], sale["id"])
        benefit, shares = split_proceeds(sale["gross_fen"], sale["benefit_ppm"], [p["reduction_mg"] for p in people])
        if benefit != sale["benefit_fen"] or shares != [p["fen"] for p in people]:
            out.append({"sale": sale["id"], "benefit": sale["benefit_fen"], "recomputed_benefit": benefit})
    return out
