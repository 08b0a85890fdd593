from __future__ import annotations

from piccolo.columns import BigSerial, ForeignKey, Integer, Text, Timestamptz, Varchar
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from wallet.holders.tables import Holder


class BadgeAward(Table, tablename="badge_award"):
    """A badge a resident earned: at most once per badge (UNIQUE), whatever order or how often the facts
    that earn it arrive."""

    id = BigSerial(primary_key=True)
    holder = ForeignKey(references=Holder, on_delete=OnDelete.cascade)
    badge = Varchar(length=64)
    awarded_at = Timestamptz(default=TimestamptzNow())


class ProgressCursor(Table, tablename="progress_cursor"):
    """How far badge evaluation has followed the book: the PostgreSQL snapshot whose entries are all
    evaluated (one row)."""

    id = Integer(primary_key=True)
    snapshot = Text()
    updated_at = Timestamptz(default=TimestamptzNow())


class LevelReached(Table, tablename="level_reached"):
    """Each level a resident reached, once (UNIQUE), so a level up is told once even if a reversal takes the
    resident below it and a new credit back."""

    id = BigSerial(primary_key=True)
    holder = ForeignKey(references=Holder, on_delete=OnDelete.cascade)
    level = Integer()
    reached_at = Timestamptz(default=TimestamptzNow())
