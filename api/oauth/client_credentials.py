"""The client credentials grant (RFC 6749 §4.4): a partner's own token, acting for no resident.

Which scopes it may carry is data: a scope in `wallet/partners/scopes.toml` with `grant = "client_credentials"`
(today `ledger:read`) is the partner's own. Operators allow it per partner (`allowed_scopes`), the token
endpoint issues it only through this grant, and the authorization endpoint never asks a resident for it.
"""

from __future__ import annotations

from typing import Any

from api.oauth.grants import OAuthError
from wallet.partners.service import CLIENT_SCOPES

__all__ = ["client_credentials_scopes"]


def client_credentials_scopes(partner: dict[str, Any], scope: str | None) -> list[str]:
    """The scopes of a client token for an authenticated partner, or the RFC 6749 §5.2 error.

    Only confidential clients may use the grant (§4.4: a public client cannot authenticate). Without `scope`,
    the token gets every client scope the partner is allowed. A resident's scope is `invalid_scope` here: it
    needs that resident's consent, which only the authorization code flow obtains."""
    if partner["client_type"] != "confidential":
        raise OAuthError("unauthorized_client", "client_credentials is for confidential clients with a client secret.")
    asked = scope.split() if scope is not None else []
    if scope is not None and not asked:
        raise OAuthError("invalid_scope", "scope is empty; leave it out or ask for " + " ".join(CLIENT_SCOPES) + ".")
    not_ours = [s for s in asked if s not in CLIENT_SCOPES]
    if not_ours:
        raise OAuthError(
            "invalid_scope",
            f"client_credentials tokens carry only {' '.join(CLIENT_SCOPES)}; not: {' '.join(not_ours)}. "
            "Scopes that act for a resident need the resident's authorization (grant_type=authorization_code).",
        )
    allowed = [s for s in CLIENT_SCOPES if s in partner["allowed_scopes"]]
    if not allowed:
        raise OAuthError(
            "unauthorized_client",
            f"This partner is not allowed {' '.join(CLIENT_SCOPES)}; Carbon Wallet operators grant it.",
        )
    beyond = [s for s in asked if s not in allowed]
    if beyond:
        raise OAuthError("invalid_scope", f"This partner is not allowed: {' '.join(beyond)}.")
    return [s for s in allowed if not asked or s in asked]
