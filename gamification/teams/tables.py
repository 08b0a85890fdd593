from __future__ import annotations

from piccolo.columns import BigSerial, ForeignKey, Timestamptz, Varchar
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from wallet.holders.tables import Holder


class Team(Table, tablename="team"):
    """A company or an organisation residents join with its join code; it competes on team boards and its
    departments on department boards. (A resident's community comes from their profile.)"""

    id = BigSerial(primary_key=True)
    code = Varchar(length=64, unique=True)
    kind = Varchar(length=16)  # company | organisation
    name_zh = Varchar(length=80)
    name_en = Varchar(length=80)
    city = Varchar(length=64, null=True, default=None)
    join_code = Varchar(length=16, unique=True)
    status = Varchar(length=16, default="active")  # active | archived
    created_at = Timestamptz(default=TimestamptzNow())


class Department(Table, tablename="team_department"):
    id = BigSerial(primary_key=True)
    team = ForeignKey(references=Team, on_delete=OnDelete.restrict)
    code = Varchar(length=64)
    name_zh = Varchar(length=80)
    name_en = Varchar(length=80)
    created_at = Timestamptz(default=TimestamptzNow())


class TeamMember(Table, tablename="team_member"):
    """One stay of a resident in a team (a resident is in at most one team at a time); leaving ends it."""

    id = BigSerial(primary_key=True)
    team = ForeignKey(references=Team, on_delete=OnDelete.restrict)
    holder = ForeignKey(references=Holder, on_delete=OnDelete.cascade)
    department = ForeignKey(references=Department, on_delete=OnDelete.restrict, null=True, default=None)
    role = Varchar(length=16, default="member")  # member | admin
    joined_at = Timestamptz(default=TimestamptzNow())
    left_at = Timestamptz(null=True, default=None)
