from __future__ import annotations

from piccolo.columns import BigSerial, Bytea, ForeignKey, Timestamptz, Varchar
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from wallet.holders.tables import Holder


class Friendship(Table, tablename="friendship"):
    """Two residents who are friends, stored once with the smaller id first."""

    holder_a = ForeignKey(references=Holder, on_delete=OnDelete.cascade)
    holder_b = ForeignKey(references=Holder, on_delete=OnDelete.cascade)
    since = Timestamptz(default=TimestamptzNow())


class FriendRequest(Table, tablename="friend_request"):
    """A request sent by phone or e-mail. Every request is stored, also to an address nobody uses (then
    `to_holder` is empty), so what the sender sees never tells whether the address belongs to anyone until
    the other side accepts. One pending request per sender and address."""

    id = BigSerial(primary_key=True)
    from_holder = ForeignKey(references=Holder, on_delete=OnDelete.cascade)
    to_holder = ForeignKey(references=Holder, on_delete=OnDelete.cascade, null=True, default=None)
    to_address_masked = Varchar(length=120, default="***")
    to_address_hash = Bytea(null=True, default=None)
    status = Varchar(length=16, default="pending")  # pending | accepted | declined | cancelled
    created_at = Timestamptz(default=TimestamptzNow())
    resolved_at = Timestamptz(null=True, default=None)


class FriendCode(Table, tablename="friend_code"):
    """A resident's invite code (shown as text or a QR code); sharing it is consent to be added."""

    holder = ForeignKey(references=Holder, on_delete=OnDelete.cascade, primary_key=True)
    code = Varchar(length=16, unique=True)
    created_at = Timestamptz(default=TimestamptzNow())


class Block(Table, tablename="friend_block"):
    """`blocker` never hears from `blocked` again: no requests, no friendship, no help with energy."""

    blocker = ForeignKey(references=Holder, on_delete=OnDelete.cascade)
    blocked = ForeignKey(references=Holder, on_delete=OnDelete.cascade)
    created_at = Timestamptz(default=TimestamptzNow())
