"""Validating an authorization request in the order RFC 6749 §4.1.2.1 requires: until the client and its
redirect URI are known good, errors are shown to the resident and never redirected (an open redirector
would hand codes or users to an attacker); after that, errors go back to the client's redirect URI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from api.oauth.grants import valid_challenge
from wallet.partners.service import CLIENT_SCOPES, RESIDENT_SCOPES, get_partner_by_client_id

__all__ = ["AuthorizeRequest", "PageError", "RedirectError", "parse_authorize", "with_params"]

STATE_MAX = 500


class PageError(Exception):
    """Shown on our page: `key` names a sentence in strings.toml."""

    def __init__(self, key: str, detail: str = "") -> None:
        super().__init__(key)
        self.key = key
        self.detail = detail


class RedirectError(Exception):
    def __init__(self, redirect_uri: str, error: str, description: str, state: str | None) -> None:
        super().__init__(description)
        self.redirect_uri = redirect_uri
        self.error = error
        self.description = description
        self.state = state


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    partner: dict[str, Any]
    redirect_uri: str
    scopes: list[str]
    state: str | None
    code_challenge: str
    redirect_uri_given: bool


def with_params(uri: str, params: Mapping[str, str | None]) -> str:
    """Add parameters to a redirect URI, keeping the query it was registered with (RFC 6749 §3.1.2)."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def parse_authorize(params: Mapping[str, Sequence[str]]) -> AuthorizeRequest:
    def one(name: str) -> str | None:
        values = params.get(name) or []
        if len(values) > 1:
            raise ValueError(name)
        return values[0] if values else None

    try:
        client_id, redirect_uri = one("client_id"), one("redirect_uri")
    except ValueError as exc:
        raise PageError("err_request", f"{exc} appears more than once.") from exc
    partner = await get_partner_by_client_id(client_id) if client_id else None
    if partner is None:
        raise PageError("err_client")
    registered = partner["redirect_uris"]
    given = redirect_uri is not None
    if redirect_uri is None:
        if len(registered) != 1:
            raise PageError("err_request", "redirect_uri is required for this client.")
        redirect_uri = registered[0]
    elif redirect_uri not in registered:
        raise PageError("err_redirect")

    state_values = params.get("state") or []
    state = state_values[0] if len(state_values) == 1 and len(state_values[0]) <= STATE_MAX else None

    def fail(error: str, description: str) -> RedirectError:
        return RedirectError(redirect_uri, error, description, state)

    try:
        response_type, scope = one("response_type"), one("scope")
        challenge, method = one("code_challenge"), one("code_challenge_method")
        one("state")
    except ValueError as exc:
        raise fail("invalid_request", f"{exc} appears more than once.") from exc
    if state_values and state is None:
        raise fail("invalid_request", f"state can be at most {STATE_MAX} characters.")
    if partner["status"] != "active":
        raise fail("unauthorized_client", "This partner platform is suspended.")
    if response_type != "code":
        raise fail("unsupported_response_type", "Only response_type=code is supported.")
    if not challenge:
        raise fail("invalid_request", "code_challenge is required (PKCE with S256).")
    if method != "S256":
        raise fail("invalid_request", "code_challenge_method must be S256; plain is not supported.")
    if not valid_challenge(challenge):
        raise fail("invalid_request", "code_challenge must be 43 base64url characters (SHA-256 of the verifier).")
    # A resident is only ever asked for resident scopes; the partner's own (ledger:read) is not theirs to grant.
    asked = scope.split() if scope else [s for s in partner["allowed_scopes"] if s in RESIDENT_SCOPES]
    own = [s for s in asked if s in CLIENT_SCOPES]
    if own:
        raise fail("invalid_scope", f"{' '.join(own)} is your platform's own scope: use grant_type=client_credentials.")
    unknown = [s for s in asked if s not in RESIDENT_SCOPES]
    if unknown:
        raise fail("invalid_scope", f"Unknown scope: {' '.join(unknown)}.")
    beyond = [s for s in asked if s not in partner["allowed_scopes"]]
    if beyond:
        raise fail("invalid_scope", f"This client may not ask for: {' '.join(beyond)}.")
    if not asked:
        raise fail("invalid_scope", "Ask for at least one scope.")
    scopes = [s for s in RESIDENT_SCOPES if s in set(asked)]
    return AuthorizeRequest(partner, redirect_uri, scopes, state, challenge, given)

