"""Selling a lot: record the sale (pending), then settle it (proceeds paid out) or cancel it (the lot is open again).

Gross proceeds are `floor(total_mg × price_per_tonne_fen / 10^9)` fen (one rounding, down: the exchange pays for
the grams it received, never a part-fen more). The public-benefit share is `floor(gross × benefit_ppm / 10^6)`;
the rest is split among contributors pro rata by grams with largest-remainder allocation (LEDGER L9), ties going to
whoever contributed first (their lowest entry id), so the parts sum exactly and the same lot always splits the
same way. Each share is paid in fen into the resident's money account, or, where the programme says so, converted
to energy at its published whole-number rate (so the conversion never rounds) through the conversion accounts
(LEDGER L2). Settlement is one transaction keyed by the sale: replaying it changes nothing.
"""

from __future__ import annotations

import re
import uuid
from datetime import date
from typing import Any

import asyncpg

from wallet.db import connection, engine
from wallet.errors import DomainError
from wallet.ledger.allocation import largest_remainder
from wallet.ledger.service import ENERGY, Transfer, post, system_account
from wallet.market.lots import get_lot
from wallet.market.programmes import PPM, get_programme
from wallet.outbox.service import record_event

__all__ = ["FEN", "MG_PER_TONNE", "cancel_sale", "get_sale", "gross_fen", "list_sales", "record_sale", "settle_sale",
           "split_proceeds"]

FEN = "fen"
MG_PER_TONNE = 1_000_000_000
MAX_PRICE_PER_TONNE_FEN = 10**9  # ten million yuan a tonne
_REF = re.compile(r"^[\w.:/#-]{1,120}$")

SALE_COLUMNS = """id, lot, state, buyer, exchange_ref, sale_date, price_per_tonne_fen, gross_fen, benefit_fen,
    residents_fen, paid, note, recorded_at, settled_at, cancelled_at, cancel_reason"""


def gross_fen(total_mg: int, price_per_tonne_fen: int) -> int:
    return total_mg * price_per_tonne_fen // MG_PER_TONNE


def split_proceeds(gross: int, benefit_ppm: int, grams: list[int]) -> tuple[int, list[int]]:
    """The public-benefit share and each contributor's share (in the order given), summing exactly to `gross`."""
    benefit = gross * benefit_ppm // PPM
    shares = largest_remainder(gross - benefit, grams)
    assert benefit + sum(shares) == gross
    return benefit, shares


def _bad(field: str, detail: str) -> DomainError:
    return DomainError("invalid", "invalid-sale", detail, field=field)


async def get_sale(sale_id: int, conn: asyncpg.Connection | None = None, *, lock: bool = False) -> dict[str, Any]:
    sql = f"SELECT {SALE_COLUMNS} FROM market_sale WHERE id = $1" + (" FOR UPDATE" if lock else "")  # noqa: S608
    if conn is None:
        async with connection() as c:
            row = await c.fetchrow(sql, sale_id)
    else:
        row = await conn.fetchrow(sql, sale_id)
    if row is None:
        raise DomainError("not_found", "sale-not-found", "No sale has this id.")
    return dict(row)


async def list_sales(lot_id: int) -> list[dict[str, Any]]:
    async with connection() as conn:
        return [dict(r) for r in await conn.fetch(
            f"SELECT {SALE_COLUMNS} FROM market_sale WHERE lot = $1 ORDER BY id", lot_id)]  # noqa: S608


async def record_sale(operator: uuid.UUID | None, lot_id: int, *, buyer: str, exchange_ref: str, sale_date: date,
                      price_per_tonne_fen: int, note: str = "") -> tuple[dict[str, Any], bool]:
    """Record a sale agreed on the exchange, pending until the money arrives. The exchange reference makes it
    idempotent: the same reference for the same sale returns it (False); for anything else it is refused."""
    buyer = buyer.strip()
    if not 1 <= len(buyer) <= 200:
        raise _bad("buyer", "buyer is the buying organisation's name, 1 to 200 characters.")
    if not _REF.match(exchange_ref):
        raise _bad("exchange_ref", "exchange_ref is the exchange's trade reference: 1 to 120 letters, digits or "
                                   "._:/#-")
    if isinstance(price_per_tonne_fen, bool) or not 1 <= price_per_tonne_fen <= MAX_PRICE_PER_TONNE_FEN:
        raise _bad("price_per_tonne_fen", "price_per_tonne_fen is the price of one tonne CO2e in fen (¥1 = 100 fen), "
                                          f"1 to {MAX_PRICE_PER_TONNE_FEN:,}.")
    async with engine().transaction() as tx:
        conn = tx.connection
        lot = await get_lot(lot_id, conn, lock=True)
        same = await conn.fetchrow(
            f"SELECT {SALE_COLUMNS} FROM market_sale WHERE exchange_ref = $1 AND state <> 'cancelled'",  # noqa: S608
            exchange_ref)
        if same is not None:
            if (same["lot"], same["buyer"], same["sale_date"], same["price_per_tonne_fen"]) == (
                    lot_id, buyer, sale_date, price_per_tonne_fen):
                return dict(same), False
            raise DomainError("conflict", "exchange-ref-used",
                              f"The exchange reference {exchange_ref} already records another sale (id {same['id']}).")
        if lot["state"] == "settled":
            raise DomainError("conflict", "lot-sold", "This lot is sold; a sold lot can never be sold again.")
        if lot["state"] == "cancelled":
            raise DomainError("conflict", "lot-cancelled", "This lot was cancelled and its entries released.")
        if lot["state"] == "pending":
            raise DomainError("conflict", "sale-pending",
                              "This lot already has a pending sale; settle or cancel it first.")
        if lot["reversed_mg"]:
            raise DomainError("conflict", "lot-has-reversals",
                              f"{lot['reversed_mg']:,} mg CO2e of this lot were reversed by their partners after "
                              "pooling; cancel the lot and make a new one (the reversed entries are not eligible).")
        gross = gross_fen(lot["total_mg"], price_per_tonne_fen)
        try:
            row = await conn.fetchrow(
                f"""INSERT INTO market_sale (lot, state, buyer, exchange_ref, sale_date, price_per_tonne_fen,
                      gross_fen, note, recorded_by, recorded_at)
                    VALUES ($1, 'pending', $2, $3, $4, $5, $6, $7, $8, now()) RETURNING {SALE_COLUMNS}""",  # noqa: S608
                lot_id, buyer, exchange_ref, sale_date, price_per_tonne_fen, gross, note[:2000], operator)
        except asyncpg.UniqueViolationError as exc:  # the same reference recorded for another lot meanwhile
            raise DomainError("conflict", "exchange-ref-used",
                              f"The exchange reference {exchange_ref} already records another sale.") from exc
        await conn.execute("UPDATE market_lot SET state = 'pending' WHERE id = $1", lot_id)
    return dict(row), True


async def cancel_sale(sale_id: int, reason: str) -> tuple[dict[str, Any], bool]:
    """A sale that fell through: the lot is open again (to sell to someone else, or to cancel)."""
    async with engine().transaction() as tx:
        conn = tx.connection
        sale = await get_sale(sale_id, conn)
        await get_lot(sale["lot"], conn, lock=True)  # lot first, then sale: the order every transition takes
        sale = await get_sale(sale_id, conn, lock=True)
        if sale["state"] == "cancelled":
            return sale, False
        if sale["state"] == "settled":
            raise DomainError("conflict", "sale-settled", "This sale is settled and its proceeds paid; it stands.")
        row = await conn.fetchrow(
            f"""UPDATE market_sale SET state = 'cancelled', cancelled_at = now(), cancel_reason = $2 WHERE id = $1
                RETURNING {SALE_COLUMNS}""", sale_id, reason[:500] or "cancelled by an operator")  # noqa: S608
        await conn.execute("UPDATE market_lot SET state = 'open' WHERE id = $1", sale["lot"])
    return dict(row), True


_ACCOUNTS = """
INSERT INTO ledger_account (unit, purpose, code, holder, balance, created_at)
SELECT 'fen', 'available', 'fen:' || h || ':available', h, 0, now() FROM unnest($1::uuid[]) AS h
ORDER BY h ON CONFLICT DO NOTHING"""
# Accounts are made in holder order (two settlements making the same ones never wait on each other crosswise) and
# any unique index may be the one a concurrent settlement hit first; then all are locked in id order (LEDGER L5).
_LOCK = """SELECT id, holder FROM ledger_account WHERE holder = ANY($1::uuid[]) AND unit = $2 AND purpose = 'available'
           ORDER BY id FOR UPDATE"""


async def settle_sale(sale_id: int) -> tuple[dict[str, Any], bool]:
    """The exchange paid: split the proceeds and pay every contributor. A settled sale returns as it is (False)."""
    async with engine().transaction() as tx:
        conn = tx.connection
        sale = await get_sale(sale_id, conn)
        lot = await get_lot(sale["lot"], conn, lock=True)
        sale = await get_sale(sale_id, conn, lock=True)
        if sale["state"] == "settled":
            return sale, False
        if sale["state"] == "cancelled":
            raise DomainError("conflict", "sale-cancelled", "This sale was cancelled; record the new sale instead.")
        programme = await get_programme(lot["programme"], conn)
        contributors = await conn.fetch(
            "SELECT holder, reduction_mg FROM market_lot_holder WHERE lot = $1 ORDER BY first_entry", lot["id"])
        holders = [c["holder"] for c in contributors]
        benefit, shares = split_proceeds(sale["gross_fen"], programme.benefit_ppm,
                                         [c["reduction_mg"] for c in contributors])
        unit = FEN if programme.payout == "fen" else ENERGY
        if unit == FEN:  # a resident's money account is made at their first payout; energy accounts exist from birth
            await conn.execute(_ACCOUNTS, holders)
        account_of = {r["holder"]: r["id"] for r in await conn.fetch(_LOCK, holders, unit)}
        exchange = await system_account(conn, "fen:exchange")
        fen_conversion = await system_account(conn, "fen:conversion")
        energy_conversion = await system_account(conn, "energy:conversion")
        rate = programme.energy_per_fen or 0
        ref = {"lot": lot["id"], "sale": sale_id}
        transfers: list[Transfer] = []
        if benefit:
            transfers.append(Transfer(f"sale:{sale_id}:benefit", exchange, programme.benefit_account or 0, benefit,
                                      "market.benefit", ref, unit=FEN))
        energy: list[int] = []
        for holder, fen in zip(holders, shares, strict=True):
            key = f"sale:{sale_id}:holder:{holder}"
            who = {**ref, "holder": str(holder)}
            if not fen:
                energy.append(0)
            elif programme.payout == "fen":
                energy.append(0)
                transfers.append(Transfer(key, exchange, account_of[holder], fen, "market.proceeds", who, unit=FEN))
            else:
                energy.append(fen * rate)
                transfers.append(Transfer(f"{key}:fen", exchange, fen_conversion, fen, "market.converted",
                                          {**who, "energy_per_fen": rate}, unit=FEN))
                transfers.append(Transfer(f"{key}:energy", energy_conversion, account_of[holder], fen * rate,
                                          "market.energy",
                                          {**who, "fen": fen, "energy_per_fen": rate}, unit=ENERGY))
        await post(conn, transfers)
        await conn.execute(
            """INSERT INTO market_payout (sale, holder, reduction_mg, fen, energy)
               SELECT $1, h, g, f, e
               FROM unnest($2::uuid[], $3::bigint[], $4::bigint[], $5::bigint[]) AS x(h, g, f, e)""",
            sale_id, holders, [c["reduction_mg"] for c in contributors], shares, energy)
        row = await conn.fetchrow(
            f"""UPDATE market_sale SET state = 'settled', settled_at = now(), benefit_fen = $2, residents_fen = $3,
                  paid = $4 WHERE id = $1 RETURNING {SALE_COLUMNS}""",  # noqa: S608 - constant SQL
            sale_id, benefit, sale["gross_fen"] - benefit, sum(1 for fen in shares if fen))
        await conn.execute("UPDATE market_lot SET state = 'settled' WHERE id = $1", lot["id"])
        await record_event("market.sale_settled", {"lot": lot["id"], "sale": sale_id, "payout": programme.payout})
    return dict(row), True
