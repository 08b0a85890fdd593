from __future__ import annotations

from piccolo.columns import UUID, BigInt, BigSerial, Boolean, ForeignKey, Timestamptz, Varchar
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from wallet.book.tables import BookEntry
from wallet.holders.tables import Holder


class EnergyBall(Table, tablename="energy_ball"):
    """The energy of one credited book entry, waiting to be collected. It ripens at `ripens_at`, can be
    collected until `expires_at`, and ends exactly once: collected (by its holder or a friend helping),
    expired, or cancelled when its entry is reversed. The energy itself sits in the holder's `balls`
    ledger account meanwhile; the ball says which part is which."""

    id = BigSerial(primary_key=True)
    holder = ForeignKey(references=Holder, on_delete=OnDelete.restrict)
    entry = ForeignKey(references=BookEntry, on_delete=OnDelete.restrict, unique=True)
    amount = BigInt()
    grown_at = Timestamptz(default=TimestamptzNow())
    ripens_at = Timestamptz()
    expires_at = Timestamptz()
    state = Varchar(length=16, default="growing")  # growing | collected | expired | cancelled
    resolved_at = Timestamptz(null=True, default=None)
    collected_by = UUID(null=True, default=None)  # the holder, or the friend who helped


class EnergyPreference(Table, tablename="energy_preference"):
    """A resident's choices about their energy; no row means the defaults."""

    holder = ForeignKey(references=Holder, on_delete=OnDelete.cascade, primary_key=True)
    friends_may_collect = Boolean(default=True)
    updated_at = Timestamptz(default=TimestamptzNow())
