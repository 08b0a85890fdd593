from __future__ import annotations

from piccolo.columns import UUID, Array, BigSerial, ForeignKey, Timestamptz, Varchar
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from wallet.holders.tables import Holder
from wallet.partners.tables import Partner


class SubAccount(Table, tablename="sub_account"):
    """One of a holder's N sources: a linked partner, or the holder's own self-reported actions
    (`partner` NULL). Never deleted: book entries keep pointing at it after an unlink."""

    id = UUID(primary_key=True)
    holder = ForeignKey(references=Holder, on_delete=OnDelete.restrict, index=True)
    partner = ForeignKey(references=Partner, on_delete=OnDelete.restrict, null=True, default=None)
    kind = Varchar(length=16)  # partner | self
    status = Varchar(length=16, default="active")  # active | unlinked
    scopes = Array(base_column=Varchar(length=32), default=list)
    linked_at = Timestamptz(default=TimestamptzNow())
    unlinked_at = Timestamptz(null=True, default=None)
    unlinked_reason = Varchar(length=32, null=True, default=None)


class Consent(Table, tablename="consent"):
    """What a holder allowed a partner to do, and when that ended. Append-mostly: a new grant supersedes
    the previous one by closing it, so the holder sees the whole history."""

    id = BigSerial(primary_key=True)
    holder = ForeignKey(references=Holder, on_delete=OnDelete.restrict, index=True)
    partner = ForeignKey(references=Partner, on_delete=OnDelete.restrict)
    sub_account = ForeignKey(references=SubAccount, on_delete=OnDelete.restrict)
    scopes = Array(base_column=Varchar(length=32), default=list)
    granted_at = Timestamptz(default=TimestamptzNow())
    revoked_at = Timestamptz(null=True, default=None)
    revoked_reason = Varchar(length=32, null=True, default=None)
