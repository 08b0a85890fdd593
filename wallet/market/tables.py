from __future__ import annotations

from piccolo.columns import (
    JSONB,
    UUID,
    BigInt,
    BigSerial,
    Boolean,
    Bytea,
    Date,
    ForeignKey,
    Integer,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from wallet.book.tables import BookEntry
from wallet.holders.tables import Holder
from wallet.ledger.tables import LedgerAccount


class MarketProgramme(Table, tablename="market_programme"):
    """What may be pooled and sold, and how proceeds are paid: the rules a lot is bound to. Its rules never change
    once created (lot manifests quote them); an operator closes a programme and opens another instead."""

    id = BigSerial(primary_key=True)
    code = Varchar(length=64, unique=True)
    name_zh = Varchar(length=120)
    name_en = Varchar(length=120)
    exchange_zh = Varchar(length=120)
    exchange_en = Varchar(length=120)
    behaviours = JSONB(default=[])  # ["metro_ride@1", ...]: behaviour code and version
    methodology_releases = JSONB(default=[])
    trust_tiers = JSONB(default=[])
    period_from = Date()
    period_to = Date()
    settle_days = Integer(default=7)  # entries younger than this may still be reversed by their partner
    payout = Varchar(length=16, default="fen")  # fen | energy
    energy_per_fen = Integer(null=True, default=None)
    benefit_ppm = Integer(default=0)
    benefit_name_zh = Varchar(length=120, default="")
    benefit_name_en = Varchar(length=120, default="")
    benefit_url = Varchar(length=500, default="")
    benefit_account = ForeignKey(references=LedgerAccount, on_delete=OnDelete.restrict, null=True, default=None)
    status = Varchar(length=16, default="open")  # open | closed
    created_at = Timestamptz(default=TimestamptzNow())


class MarketConsent(Table, tablename="market_consent"):
    """A resident's choice to have their eligible reductions sold. No row means never asked: not opted in."""

    holder = ForeignKey(references=Holder, on_delete=OnDelete.restrict, primary_key=True)
    opted_in = Boolean(default=False)
    changed_at = Timestamptz(default=TimestamptzNow())


class MarketLot(Table, tablename="market_lot"):
    """A batch of book entries offered for sale. `manifest_hash` is SHA-256 over `carbon-lot/v1\\n` and the exact
    bytes of the JSON manifest export, so the exchange's verifier can check what it was sent."""

    id = BigSerial(primary_key=True)
    programme = ForeignKey(references=MarketProgramme, on_delete=OnDelete.restrict)
    state = Varchar(length=16, default="open")  # open | pending | settled | cancelled
    target_mg = BigInt()
    day_from = Date()
    day_to = Date()
    total_mg = BigInt()
    entries = Integer()
    holders = Integer()
    manifest_hash = Bytea()
    reversed_mg = BigInt(default=0)  # grams of its items a partner reversed after pooling (kept by a trigger)
    created_by = UUID(null=True, default=None)
    idempotency_key = Varchar(length=120, null=True, default=None)
    note = Varchar(length=500, default="")
    created_at = Timestamptz(default=TimestamptzNow())
    cancelled_at = Timestamptz(null=True, default=None)
    cancel_reason = Varchar(length=500, null=True, default=None)


class MarketLotItem(Table, tablename="market_lot_item"):
    """One book entry in one lot. A partial UNIQUE index on `entry` over unreleased items is what keeps an entry
    in at most one live lot; cancelling a lot releases its items (they stay, for the record)."""

    id = BigSerial(primary_key=True)
    lot = ForeignKey(references=MarketLot, on_delete=OnDelete.restrict)
    entry = ForeignKey(references=BookEntry, on_delete=OnDelete.restrict)
    holder = ForeignKey(references=Holder, on_delete=OnDelete.restrict)
    reduction_mg = BigInt()
    released = Boolean(default=False)


class MarketLotHolder(Table, tablename="market_lot_holder"):
    """Per contributor of a lot: their grams and the head of their chain when the lot was made (the manifest
    covers the chain up to it)."""

    id = BigSerial(primary_key=True)
    lot = ForeignKey(references=MarketLot, on_delete=OnDelete.restrict)
    holder = ForeignKey(references=Holder, on_delete=OnDelete.restrict)
    reduction_mg = BigInt()
    entries = Integer()
    first_entry = BigInt()  # the tie-break of the proceeds split: who contributed first
    head_seq = BigInt()
    head_hash = Bytea()
    consented_at = Timestamptz()


class MarketSale(Table, tablename="market_sale"):
    """A sale of a lot on an exchange: recorded pending, then settled (proceeds paid out) or cancelled."""

    id = BigSerial(primary_key=True)
    lot = ForeignKey(references=MarketLot, on_delete=OnDelete.restrict)
    state = Varchar(length=16, default="pending")  # pending | settled | cancelled
    buyer = Varchar(length=200)
    exchange_ref = Varchar(length=120)
    sale_date = Date()
    price_per_tonne_fen = BigInt()
    gross_fen = BigInt()
    benefit_fen = BigInt(null=True, default=None)
    residents_fen = BigInt(null=True, default=None)
    paid = Integer(null=True, default=None)  # contributors whose share was at least one fen, once settled
    note = Text(default="")
    recorded_by = UUID(null=True, default=None)
    recorded_at = Timestamptz(default=TimestamptzNow())
    settled_at = Timestamptz(null=True, default=None)
    cancelled_at = Timestamptz(null=True, default=None)
    cancel_reason = Varchar(length=500, null=True, default=None)


class MarketPayout(Table, tablename="market_payout"):
    """What one contributor received from one settled sale: fen, or the energy those fen were converted to."""

    id = BigSerial(primary_key=True)
    sale = ForeignKey(references=MarketSale, on_delete=OnDelete.restrict)
    holder = ForeignKey(references=Holder, on_delete=OnDelete.restrict)
    reduction_mg = BigInt()
    fen = BigInt()
    energy = BigInt(default=0)
