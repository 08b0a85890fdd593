from __future__ import annotations

from piccolo.columns import JSONB, BigInt, BigSerial, ForeignKey, Timestamptz, Varchar
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from wallet.holders.tables import Holder


class LedgerAccount(Table, tablename="ledger_account"):
    """Where a unit (energy now, fen later) can sit. A holder has `available`, `balls` (grown, not yet
    collected) and `held` (reserved for a redemption); system accounts (issuance, expiry, mall)
    and each donation project have one too. Only holder accounts cache a `balance` (never below zero); the
    balances of system accounts, which every award or purchase touches, are sums over transfers (LEDGER L6)."""

    id = BigSerial(primary_key=True)
    unit = Varchar(length=16)
    purpose = Varchar(length=16)  # available | balls | held | issuance | expiry | mall | project
    code = Varchar(length=120, unique=True)
    holder = ForeignKey(references=Holder, on_delete=OnDelete.restrict, null=True, default=None)
    balance = BigInt(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())


class LedgerTransfer(Table, tablename="ledger_transfer"):
    """One immutable movement of `amount` from `debit_account` to `credit_account` in one unit, so its two
    postings sum to zero by construction (view `ledger_posting`). `key` is the idempotency id: a retried
    effect finds its transfer instead of posting twice. `resolves` names the pending (reserving) transfer this
    one posts or voids; UNIQUE makes each pending resolve at most once (LEDGER L8)."""

    id = BigSerial(primary_key=True)
    key = Varchar(length=160, unique=True)
    unit = Varchar(length=16)
    debit_account = ForeignKey(references=LedgerAccount, on_delete=OnDelete.restrict)
    credit_account = ForeignKey(references=LedgerAccount, on_delete=OnDelete.restrict)
    amount = BigInt()
    kind = Varchar(length=32)
    resolves = BigInt(null=True, default=None)
    ref = JSONB(default={})
    created_at = Timestamptz(default=TimestamptzNow())
