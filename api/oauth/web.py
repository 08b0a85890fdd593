"""What the linking pages need besides templates: language, the browser sign-in cookie, CSRF tokens and
the signed consent token that carries a validated authorization request from the page to the decision.

The browser sign-in is an ordinary resident session (listed under the resident's devices, revocable),
carried in an HttpOnly, SameSite=Lax cookie scoped to /oauth as a short-lived JWT with its own audience.
"""

from __future__ import annotations

import secrets
import time
import tomllib
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jwt
from litestar import Request
from litestar.datastructures import Cookie, State

from api.auth.keys import load_private_key
from api.auth.sessions import live_holder_of_session
from api.auth.tokens import ALGORITHM
from wallet.errors import DomainError

__all__ = [
    "CONSENT_TTL_S",
    "CSRF_COOKIE",
    "LANGUAGES",
    "SESSION_COOKIE",
    "ConsentRequest",
    "ConsentTokens",
    "csrf_cookie",
    "csrf_ok",
    "pick_language",
    "session_cookie",
    "signed_in_holder",
    "strings",
]

LANGUAGES = ("zh-CN", "en")
SESSION_COOKIE = "cw_web"
CSRF_COOKIE = "cw_csrf"
COOKIE_PATH = "/oauth"
WEB_SESSION_TTL_S = 3600
CONSENT_TTL_S = 600
CONSENT_AUDIENCE = "carbon-wallet:consent"


@cache
def _all_strings() -> dict[str, dict[str, str]]:
    with Path(__file__).with_name("strings.toml").open("rb") as fh:
        return tomllib.load(fh)


def strings(language: str) -> dict[str, str]:
    return _all_strings()[language if language in LANGUAGES else "zh-CN"]


def pick_language(request: Request[Any, Any, Any], ui_locales: str | None) -> str:
    """`ui_locales` (OpenID-style, space-separated) first, then Accept-Language, then Chinese."""
    wanted = (ui_locales or "").split() + [
        part.split(";")[0].strip() for part in request.headers.get("accept-language", "").split(",")
    ]
    for tag in wanted:
        lower = tag.lower()
        if lower.startswith("zh"):
            return "zh-CN"
        if lower.startswith("en"):
            return "en"
    return "zh-CN"


def _secure(request: Request[Any, Any, State]) -> bool:
    return request.url.scheme == "https" or request.app.state.settings.production


def session_cookie(request: Request[Any, Any, State], value: str | None) -> Cookie:
    """`value=None` clears the cookie."""
    return Cookie(
        key=SESSION_COOKIE, value=value or "", path=COOKIE_PATH, httponly=True, samesite="lax",
        secure=_secure(request), max_age=WEB_SESSION_TTL_S if value else 0,
    )


def csrf_cookie(request: Request[Any, Any, State]) -> tuple[str, Cookie | None]:
    """Double-submit token for the login and switch-account forms: the form field must equal the cookie."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if len(current) == 43:
        return current, None
    token = secrets.token_urlsafe(32)
    return token, Cookie(
        key=CSRF_COOKIE, value=token, path=COOKIE_PATH, httponly=True, samesite="lax", secure=_secure(request),
    )


def csrf_ok(request: Request[Any, Any, Any], presented: str) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return len(cookie) == 43 and secrets.compare_digest(cookie, presented)


async def signed_in_holder(request: Request[Any, Any, State]) -> tuple[uuid.UUID, uuid.UUID] | None:
    """(holder, session) from the sign-in cookie, if its session is still live."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        claims = request.app.state.web_tokens.verify(token)
    except DomainError:
        return None
    holder_id = await live_holder_of_session(claims.session_id)
    if holder_id is None or holder_id != claims.holder_id:
        return None
    return holder_id, claims.session_id


@dataclass(frozen=True, slots=True)
class ConsentRequest:
    """A validated authorization request, as the consent form carries it (signed, so it cannot be edited;
    its `token_id` is spent on the first decision, so one approval gives one code)."""

    holder_id: uuid.UUID
    session_id: uuid.UUID
    partner_id: uuid.UUID
    redirect_uri: str
    scopes: list[str]
    state: str | None
    code_challenge: str
    language: str
    redirect_uri_given: bool = True
    token_id: str = ""


class ConsentTokens:
    def __init__(self, private_key_pem: bytes, issuer: str) -> None:
        self._private = load_private_key(private_key_pem)
        self._public = self._private.public_key()
        self._issuer = issuer

    def issue(self, r: ConsentRequest) -> str:
        now = int(time.time())
        claims = {
            "iss": self._issuer, "aud": CONSENT_AUDIENCE, "iat": now, "exp": now + CONSENT_TTL_S,
            "sub": str(r.holder_id), "sid": str(r.session_id), "cid": str(r.partner_id), "ru": r.redirect_uri,
            "sc": r.scopes, "st": r.state, "cc": r.code_challenge, "lang": r.language,
            "rg": r.redirect_uri_given, "jti": secrets.token_urlsafe(16),
        }
        return jwt.encode(claims, self._private, algorithm=ALGORITHM)

    def verify(self, token: str) -> ConsentRequest | None:
        try:
            c = jwt.decode(
                token, self._public, algorithms=[ALGORITHM], audience=CONSENT_AUDIENCE, issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "sid", "cid", "ru", "sc", "cc", "jti"]},
            )
            return ConsentRequest(
                uuid.UUID(c["sub"]), uuid.UUID(c["sid"]), uuid.UUID(c["cid"]), str(c["ru"]), list(c["sc"]),
                c.get("st"), str(c["cc"]), str(c.get("lang", "zh-CN")), bool(c.get("rg", True)), str(c["jti"]),
            )
        except (jwt.InvalidTokenError, ValueError, TypeError, KeyError):
            return None
