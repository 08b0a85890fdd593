from __future__ import annotations

from piccolo.columns import UUID, BigSerial, ForeignKey, Timestamptz, Varchar
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from wallet.holders.tables import Holder


class AuthSession(Table, tablename="auth_session"):
    """One signed-in device. It is also the refresh-token family: revoking it ends every token in it."""

    id = UUID(primary_key=True)
    holder = ForeignKey(references=Holder, on_delete=OnDelete.cascade, index=True)
    device_name = Varchar(length=100, default="")
    user_agent = Varchar(length=300, default="")
    created_ip = Varchar(length=45, default="")
    created_at = Timestamptz(default=TimestamptzNow())
    last_refreshed_at = Timestamptz(default=TimestamptzNow())
    revoked_at = Timestamptz(null=True, default=None)
    revoked_reason = Varchar(length=32, null=True, default=None)


class RefreshToken(Table, tablename="auth_refresh_token"):
    """Only the SHA-256 of an opaque token is stored; `used_at` marks a rotated token, so a second
    presentation is detectable as reuse."""

    id = BigSerial(primary_key=True)
    session = ForeignKey(references=AuthSession, on_delete=OnDelete.cascade, index=True)
    token_hash = Varchar(length=64, unique=True)
    created_at = Timestamptz(default=TimestamptzNow())
    expires_at = Timestamptz()
    used_at = Timestamptz(null=True, default=None)
