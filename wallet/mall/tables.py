from __future__ import annotations

from piccolo.columns import (
    JSONB,
    BigInt,
    BigSerial,
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

from wallet.holders.tables import Holder
from wallet.partners.tables import Partner


class Reward(Table, tablename="reward"):
    """Something residents can redeem energy for. `stock` NULL means unlimited; it counts what is left to
    reserve (a voided redemption gives its item back). How a redemption is fulfilled: `code` (we issue a
    voucher code), `pool` (codes the merchant loaded in advance) or `merchant` (we call the merchant)."""

    id = BigSerial(primary_key=True)
    code = Varchar(length=64, unique=True)
    title_zh = Varchar(length=120)
    title_en = Varchar(length=120)
    description_zh = Text(default="")
    description_en = Text(default="")
    merchant_zh = Varchar(length=80)
    merchant_en = Varchar(length=80)
    partner = ForeignKey(references=Partner, on_delete=OnDelete.restrict, null=True, default=None)
    category = Varchar(length=24)
    price = BigInt()
    stock = BigInt(null=True, default=None)
    per_day_limit = Integer(null=True, default=None)
    lifetime_limit = Integer(null=True, default=None)
    valid_from = Timestamptz(null=True, default=None)
    valid_until = Timestamptz(null=True, default=None)
    images = JSONB(default=[])
    fulfilment = Varchar(length=16, default="code")  # code | pool | merchant
    merchant_url = Varchar(length=500, null=True, default=None)
    voucher_valid_days = Integer(default=30)
    status = Varchar(length=16, default="active")  # active | paused | retired
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())


class RewardVoucher(Table, tablename="reward_voucher"):
    """A voucher code loaded by the merchant for a `pool` reward; handed to exactly one redemption."""

    id = BigSerial(primary_key=True)
    reward = ForeignKey(references=Reward, on_delete=OnDelete.restrict)
    code = Varchar(length=120)
    redemption = BigInt(null=True, default=None, unique=True)
    loaded_at = Timestamptz(default=TimestamptzNow())


class Redemption(Table, tablename="redemption"):
    """One purchase, two-phase: `pending` (energy and stock reserved) resolves exactly once to `fulfilled`
    (voucher issued, energy posted to the mall) or `voided` (both released). The resident's idempotency key
    and a hash of the request are stored with it, in the transaction that reserves (LEDGER L4)."""

    id = BigSerial(primary_key=True)
    holder = ForeignKey(references=Holder, on_delete=OnDelete.restrict)
    reward = ForeignKey(references=Reward, on_delete=OnDelete.restrict)
    price = BigInt()
    state = Varchar(length=16, default="pending")  # pending | fulfilled | voided
    idempotency_key = Varchar(length=120)
    request_hash = Bytea()
    local_day = Date()
    reserve_transfer = BigInt()
    resolve_transfer = BigInt(null=True, default=None)
    voucher_code = Varchar(length=120, null=True, default=None)
    voucher_expires_at = Timestamptz(null=True, default=None)
    void_reason = Varchar(length=64, null=True, default=None)
    attempts = Integer(default=0)
    next_attempt_at = Timestamptz(default=TimestamptzNow())  # when fulfilment is (re)tried by the worker
    created_at = Timestamptz(default=TimestamptzNow())
    resolved_at = Timestamptz(null=True, default=None)
