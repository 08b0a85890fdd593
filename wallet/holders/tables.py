from __future__ import annotations

from piccolo.columns import UUID, BigSerial, Boolean, ForeignKey, Timestamptz, Varchar
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table


class Holder(Table, tablename="holder"):
    """A resident. After deletion the row keeps only its random id, so book entries stay attributable
    to a pseudonym while nothing links it to a person."""

    id = UUID(primary_key=True)
    status = Varchar(length=16, default="active")  # active | deleted
    email = Varchar(length=254, null=True, default=None, unique=True)
    phone = Varchar(length=20, null=True, default=None, unique=True)
    password_hash = Varchar(length=200, null=True, default=None)
    nickname = Varchar(length=40, default="")
    avatar_url = Varchar(length=500, null=True, default=None)
    city = Varchar(length=64, null=True, default=None)
    district = Varchar(length=64, null=True, default=None)
    community = Varchar(length=64, null=True, default=None)
    time_zone = Varchar(length=64, default="Asia/Shanghai")
    language = Varchar(length=8, default="zh-CN")
    show_on_public_leaderboards = Boolean(default=False)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())
    password_changed_at = Timestamptz(default=TimestamptzNow())
    deleted_at = Timestamptz(null=True, default=None)


class HolderRole(Table, tablename="holder_role"):
    """Staff roles on top of being a resident: `operator` (platform staff: partners, methodology, review).
    `scope` narrows a role (e.g. a city for programme staff); empty means everywhere."""

    id = BigSerial(primary_key=True)
    holder = ForeignKey(references=Holder, on_delete=OnDelete.cascade, index=True)
    role = Varchar(length=32)
    scope = Varchar(length=64, default="")
    granted_at = Timestamptz(default=TimestamptzNow())
