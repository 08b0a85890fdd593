from __future__ import annotations

from piccolo.columns import JSONB, UUID, BigInt, BigSerial, Date, ForeignKey, Integer, Timestamptz, Varchar
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from wallet.accounts.tables import SubAccount
from wallet.holders.tables import Holder
from wallet.partners.tables import Partner


class Activity(Table, tablename="activity"):
    """One reported real-world action, exactly as received, and its verdict. `(sub_account, external_id)` is
    unique: a source's own event id is its idempotency key, and `request_digest` tells a replay from a
    conflict. What was reported never changes (a trigger); only the verdict columns move, once, or twice
    for an activity held for review."""

    id = UUID(primary_key=True)
    holder = ForeignKey(references=Holder, on_delete=OnDelete.restrict, index=True)
    sub_account = ForeignKey(references=SubAccount, on_delete=OnDelete.restrict)
    partner = ForeignKey(references=Partner, on_delete=OnDelete.restrict, null=True, default=None)
    external_id = Varchar(length=128)
    behaviour = Varchar(length=64)
    quantity = BigInt()
    occurred_at = Timestamptz()
    ended_at = Timestamptz(null=True, default=None)
    details = JSONB(default={})
    request_digest = Varchar(length=64)
    received_via = Varchar(length=16)  # token | signed_push | self
    received_at = Timestamptz(default=TimestamptzNow())
    # The verdict: what intake decided and why (a reason code and the parameters of its sentence).
    verdict = Varchar(length=20, default="received")
    reason_code = Varchar(length=48, null=True, default=None)
    reason_params = JSONB(default={})
    related_activity = UUID(null=True, default=None)
    behaviour_version = Integer(null=True, default=None)
    methodology_release = Varchar(length=16, null=True, default=None)
    local_day = Date(null=True, default=None)
    credited_quantity = BigInt(default=0)
    credited_mg = BigInt(default=0)
    judged_at = Timestamptz(null=True, default=None)
    reviewed_by = UUID(null=True, default=None)
    reviewed_at = Timestamptz(null=True, default=None)


class PushReceipt(Table, tablename="partner_push_receipt"):
    """Signed pushes already accepted, by the partner's message id: a replayed push is refused even when
    it arrives inside the signature's time tolerance."""

    id = BigSerial(primary_key=True)
    partner = ForeignKey(references=Partner, on_delete=OnDelete.cascade)
    message_id = Varchar(length=128)
    received_at = Timestamptz(default=TimestamptzNow())
    activities = BigInt(default=0)
