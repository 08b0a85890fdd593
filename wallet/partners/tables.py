from __future__ import annotations

from piccolo.columns import UUID, Array, BigSerial, Bytea, ForeignKey, Integer, Timestamptz, Varchar
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table


class Partner(Table, tablename="partner"):
    """A platform registered by an operator. Its lists (redirect URIs, scopes, behaviours) are arrays:
    they are read whole on every authorisation and never queried element by element."""

    id = UUID(primary_key=True)
    client_id = Varchar(length=64, unique=True)
    name = Varchar(length=80)
    name_en = Varchar(length=80, default="")
    kind = Varchar(length=16)
    client_type = Varchar(length=16, default="confidential")  # confidential | public
    redirect_uris = Array(base_column=Varchar(length=500), default=list)
    allowed_scopes = Array(base_column=Varchar(length=32), default=list)
    allowed_behaviours = Array(base_column=Varchar(length=64), default=list)
    trust_tier = Varchar(length=16, default="verified")
    rate_limit_per_minute = Integer(default=600)
    daily_quota = Integer(default=100_000)
    status = Varchar(length=16, default="active")  # active | suspended
    status_reason = Varchar(length=200, default="")
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())


class PartnerSecret(Table, tablename="partner_secret"):
    """Client secrets (only a SHA-256 is kept) and webhook signing secrets (kept encrypted, because
    verifying an HMAC needs the key). A rotated secret keeps working until `expires_at`: the overlap
    window in which a partner deploys the new one."""

    id = BigSerial(primary_key=True)
    partner = ForeignKey(references=Partner, on_delete=OnDelete.cascade, index=True)
    purpose = Varchar(length=16)  # client | webhook
    secret_hash = Varchar(length=64, null=True, default=None)
    secret_sealed = Bytea(null=True, default=None)
    hint = Varchar(length=12, default="")
    created_at = Timestamptz(default=TimestamptzNow())
    expires_at = Timestamptz(null=True, default=None)
