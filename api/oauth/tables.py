from __future__ import annotations

from piccolo.columns import UUID, Array, BigSerial, ForeignKey, Timestamptz, Varchar
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from wallet.accounts.tables import SubAccount
from wallet.holders.tables import Holder
from wallet.partners.tables import Partner


class AuthorizationCode(Table, tablename="oauth_code"):
    """Only the SHA-256 of a code is stored, with everything it is bound to; `used_at` makes it single-use
    and lets a second presentation revoke the grant it produced (RFC 6749 §4.1.2)."""

    id = BigSerial(primary_key=True)
    code_hash = Varchar(length=64, unique=True)
    partner = ForeignKey(references=Partner, on_delete=OnDelete.cascade)
    holder = ForeignKey(references=Holder, on_delete=OnDelete.cascade)
    sub_account = ForeignKey(references=SubAccount, on_delete=OnDelete.cascade)
    redirect_uri = Varchar(length=500)
    scopes = Array(base_column=Varchar(length=32), default=list)
    code_challenge = Varchar(length=64)
    created_at = Timestamptz(default=TimestamptzNow())
    expires_at = Timestamptz()
    used_at = Timestamptz(null=True, default=None)
    grant_id = UUID(null=True, default=None)


class PartnerGrant(Table, tablename="oauth_grant"):
    """What a code exchange produces: the refresh-token family a partner holds for one sub-account.
    Revoking it (unlink, reuse, RFC 7009) stops its access tokens at the next request."""

    id = UUID(primary_key=True)
    partner = ForeignKey(references=Partner, on_delete=OnDelete.cascade)
    holder = ForeignKey(references=Holder, on_delete=OnDelete.cascade, index=True)
    sub_account = ForeignKey(references=SubAccount, on_delete=OnDelete.cascade, index=True)
    scopes = Array(base_column=Varchar(length=32), default=list)
    created_at = Timestamptz(default=TimestamptzNow())
    last_refreshed_at = Timestamptz(default=TimestamptzNow())
    revoked_at = Timestamptz(null=True, default=None)
    revoked_reason = Varchar(length=32, null=True, default=None)


class PartnerRefreshToken(Table, tablename="oauth_refresh_token"):
    id = BigSerial(primary_key=True)
    grant_id = ForeignKey(references=PartnerGrant, on_delete=OnDelete.cascade, index=True)
    token_hash = Varchar(length=64, unique=True)
    created_at = Timestamptz(default=TimestamptzNow())
    expires_at = Timestamptz()
    used_at = Timestamptz(null=True, default=None)
