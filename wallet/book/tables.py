from __future__ import annotations

from piccolo.columns import UUID, BigInt, BigSerial, Bytea, Date, ForeignKey, Integer, Timestamptz, Varchar
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from wallet.accounts.tables import SubAccount
from wallet.holders.tables import Holder
from wallet.intake.tables import Activity
from wallet.partners.tables import Partner


class BookHead(Table, tablename="book_head"):
    """The tip of one holder's chain. Locking this row orders the holder's book writes (no global lock);
    its `seq` and `head_hash` let the verifier notice a truncated tail; `total_mg` is a cache the verifier
    checks against the entries."""

    holder_id = UUID(primary_key=True)
    seq = BigInt(default=0)
    head_hash = Bytea(null=True, default=None)
    total_mg = BigInt(default=0)
    updated_at = Timestamptz(default=TimestamptzNow())


class BookEntry(Table, tablename="book_entry"):
    """One credited reduction (or the reversal of one), in integer mg CO2e, with everything needed to
    recompute and explain it. `canonical` holds the exact bytes the chain hashes; the database refuses to
    change or delete a row."""

    id = BigSerial(primary_key=True)
    holder = ForeignKey(references=Holder, on_delete=OnDelete.restrict)
    seq = BigInt()
    kind = Varchar(length=16)  # credit | reversal
    activity = ForeignKey(references=Activity, on_delete=OnDelete.restrict)
    reverses = BigInt(null=True, default=None)
    sub_account = ForeignKey(references=SubAccount, on_delete=OnDelete.restrict)
    partner = ForeignKey(references=Partner, on_delete=OnDelete.restrict, null=True, default=None)
    trust_tier = Varchar(length=16)
    behaviour = Varchar(length=64)
    behaviour_version = Integer()
    methodology_release = Varchar(length=16)
    category = Varchar(length=24)
    quantity = BigInt()
    reduction_mg = BigInt()
    energy = BigInt()
    occurred_at = Timestamptz()
    local_day = Date()
    note = Varchar(length=500, default="")  # why, for a reversal: the resident reads it
    recorded_at = Timestamptz(default=TimestamptzNow())
    prev_hash = Bytea()
    entry_hash = Bytea()
    canonical = Bytea()
