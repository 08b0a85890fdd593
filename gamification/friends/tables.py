from __future__ import annotations

from piccolo.columns import ForeignKey, Timestamptz
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from wallet.holders.tables import Holder


class Friendship(Table, tablename="friendship"):
    """Two residents who are friends, stored once with the smaller id first. Requests, invites and blocks
    that lead here come with gamification; energy only asks whether two residents are friends."""

    holder_a = ForeignKey(references=Holder, on_delete=OnDelete.cascade)
    holder_b = ForeignKey(references=Holder, on_delete=OnDelete.cascade)
    since = Timestamptz(default=TimestamptzNow())
