from __future__ import annotations

from piccolo.columns import UUID, ForeignKey, Timestamptz, Varchar
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from wallet.holders.tables import Holder


class Exclusion(Table, tablename="competition_exclusion"):
    """A resident an operator took off competitive boards (anti-cheat), with the reason they are shown.
    Their book and energy are untouched; lifting the exclusion deletes the row (and records an event)."""

    holder = ForeignKey(references=Holder, on_delete=OnDelete.cascade, primary_key=True)
    reason = Varchar(length=300)
    excluded_by = UUID()
    excluded_at = Timestamptz(default=TimestamptzNow())
