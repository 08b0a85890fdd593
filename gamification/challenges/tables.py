from __future__ import annotations

from piccolo.columns import JSONB, BigInt, BigSerial, ForeignKey, Integer, Text, Timestamptz, Varchar
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from wallet.holders.tables import Holder


class Challenge(Table, tablename="challenge"):
    """A collective goal for a team, a community, a city or everyone, between two instants, optionally for
    some behaviours only. Progress is what its participants' settled book entries add up to in the window;
    `unlock_every` turns progress into real-world outcomes (a tree planted per 10 kg)."""

    id = BigSerial(primary_key=True)
    code = Varchar(length=64, unique=True)
    title_zh = Varchar(length=120)
    title_en = Varchar(length=120)
    description_zh = Text(default="")
    description_en = Text(default="")
    scope = Varchar(length=16)  # global | city | community | team
    scope_id = Varchar(length=200, default="-")
    goal_kind = Varchar(length=16)  # grams | energy | actions
    goal = BigInt()
    behaviours = JSONB(default=[])
    starts_at = Timestamptz()
    ends_at = Timestamptz()
    outcome_zh = Varchar(length=200, default="")
    outcome_en = Varchar(length=200, default="")
    unlock_every = BigInt(null=True, default=None)
    result = Varchar(length=16, null=True, default=None)  # met | missed, once it has ended
    final_progress = BigInt(null=True, default=None)
    progress = BigInt(default=0)  # whole units: the participants' amounts, each in whole units, summed
    participants = BigInt(default=0)
    finished_at = Timestamptz(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())


class Participant(Table, tablename="challenge_participant"):
    challenge = ForeignKey(references=Challenge, on_delete=OnDelete.restrict)
    holder = ForeignKey(references=Holder, on_delete=OnDelete.cascade)
    joined_at = Timestamptz(default=TimestamptzNow())
    amount = BigInt(default=0)  # in the goal kind's smallest unit: mg, energy or actions
    counted_through = Text(null=True, default=None)  # the snapshot joining counted to (the follower adds the rest)


class ChallengeCursor(Table, tablename="challenge_cursor"):
    """How far challenge progress has followed the book: the PostgreSQL snapshot whose entries are all counted
    (one row). Joining and leaving hold it shared, a step holds it exclusively, so each entry counts once."""

    id = Integer(primary_key=True)
    snapshot = Text()
    updated_at = Timestamptz(default=TimestamptzNow())
