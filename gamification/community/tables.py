from __future__ import annotations

from piccolo.columns import UUID, BigInt, Date, Integer, Text, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table


class CommunityDay(Table, tablename="community_day"):
    """Settled reductions per scope, behaviour and local day, kept as the book grows (the community pages and
    the city and enterprise ledgers read these, never the book). A scope is `all`, `city:北京市`,
    `district:北京市|海淀区`, `community:北京市|海淀区|中关村社区`, `team:7` or `partner:<id>` / `partner:self`:
    each book entry adds to one of each kind that applies, by where its resident lived and worked when it was
    counted. PRIMARY KEY (scope, behaviour, day) in the migration."""

    scope = Varchar(length=300)
    behaviour = Varchar(length=64)
    category = Varchar(length=24)
    day = Date()
    reduction_mg = BigInt(default=0)
    credits = Integer(default=0)
    reversals = Integer(default=0)


class CommunityParticipant(Table, tablename="community_participant"):
    """Who had a credited entry in a scope on a day: participants are counted from here, exactly.
    PRIMARY KEY (scope, day, holder)."""

    scope = Varchar(length=300)
    day = Date()
    holder = UUID()


class CommunityCursor(Table, tablename="community_cursor"):
    """How far the aggregates have followed the book: the PostgreSQL snapshot whose entries are all counted."""

    id = Integer(primary_key=True)
    snapshot = Text()
    updated_at = Timestamptz(default=TimestamptzNow())


class CommunityMember(Table, tablename="community_member"):
    """Everyone who ever had a credited action in a scope, once (UNIQUE (scope, holder)): the step counts new
    members into `community_scope`, so a page reads a city's participants without counting a million rows."""

    scope = Varchar(length=300)
    holder = UUID()


class CommunityScope(Table, tablename="community_scope"):
    """Participants of a scope (all time), kept by the step with its members. UNIQUE (scope)."""

    scope = Varchar(length=300)
    participants = BigInt(default=0)
