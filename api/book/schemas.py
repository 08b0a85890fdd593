"""Response shapes of the carbon book. Every amount is an integer: mg CO2e, energy units, quantities in
the behaviour's unit."""

from __future__ import annotations

import uuid
from datetime import date, datetime

import msgspec

__all__ = [
    "ActivityOut", "ActivityPage", "BookSummary", "CategoryTotal", "DayPoint", "EntryOut", "EntryPage", "Periods",
    "SubAccountTotal", "VerificationOut",
]


class Periods(msgspec.Struct, kw_only=True):
    """Sums of entries in the holder's local calendar: today, this week (from Monday), this month, all time."""

    today_mg: int
    week_mg: int
    month_mg: int
    all_time_mg: int
    energy: int
    credited_activities: int


class CategoryTotal(msgspec.Struct, kw_only=True):
    category: str
    all_time_mg: int
    month_mg: int


class SubAccountTotal(msgspec.Struct, kw_only=True):
    """One of the 1 + N: `unlinked` sub-accounts keep what they contributed."""

    sub_account_id: uuid.UUID
    kind: str
    status: str
    source: str
    all_time_mg: int
    credited_activities: int


class BookSummary(msgspec.Struct, kw_only=True):
    time_zone: str
    today: date
    totals: Periods
    by_category: list[CategoryTotal]
    by_sub_account: list[SubAccountTotal]


class DayPoint(msgspec.Struct, kw_only=True):
    day: date
    reduction_mg: int
    credits: int


class EntryOut(msgspec.Struct, kw_only=True):
    """Every field the chain hashes is here (with `holder_id` = me), so an export alone is enough to
    recompute each `entry_hash` from `prev_hash` (see wallet/book/chain.py for the byte layout)."""

    id: int
    seq: int
    kind: str
    activity_id: uuid.UUID
    event_id: str
    reverses: int | None
    sub_account_id: uuid.UUID
    partner_id: uuid.UUID | None
    source: str
    trust_tier: str
    behaviour: str
    behaviour_version: int
    methodology_release: str
    category: str
    quantity: int
    reduction_mg: int
    energy: int
    occurred_at: datetime
    local_day: date
    recorded_at: datetime
    note: str
    prev_hash: str
    entry_hash: str


class EntryPage(msgspec.Struct, kw_only=True):
    items: list[EntryOut]
    next_cursor: str | None


class ActivityOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    event_id: str
    behaviour: str
    quantity: int
    occurred_at: datetime
    ended_at: datetime | None
    received_at: datetime
    source: str
    source_unlinked: bool
    verdict: str
    reason_code: str | None
    reason: str
    credited_quantity: int
    credited_mg: int
    behaviour_version: int | None
    methodology_release: str | None
    reversed_at: datetime | None = None
    reversal_note: str | None = None


class ActivityPage(msgspec.Struct, kw_only=True):
    items: list[ActivityOut]
    next_cursor: str | None


class VerificationOut(msgspec.Struct, kw_only=True):
    """`ok` when every link, hash, stored value and the chain head check out; otherwise the first broken
    entry (`broken_seq`) and why."""

    ok: bool
    entries: int
    total_mg: int
    broken_seq: int | None
    reason: str | None
