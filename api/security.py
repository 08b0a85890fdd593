"""Shared edge helpers for authentication: the OpenAPI security requirement and the client IP."""

from __future__ import annotations

from typing import Any

from litestar import Request

from api.settings import Settings
from wallet.errors import DomainError
from wallet.holders.identity import normalize_login

__all__ = ["BEARER", "client_ip", "login_subject"]

BEARER: list[dict[str, list[str]]] = [{"BearerToken": []}]


def client_ip(request: Request[Any, Any, Any], settings: Settings) -> str:
    """The peer address, or, behind one trusted proxy, the X-Forwarded-For entry that proxy appended (the
    right-most): entries to its left come from the client and could be forged to dodge per-IP limits."""
    if settings.trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last[:45]
    return request.client.host if request.client else "unknown"


def login_subject(login: str) -> str:
    """The rate-limit subject for a login identity: normalised, so spellings of one account share a budget."""
    try:
        return normalize_login(login)[1]
    except DomainError:
        return login.strip().lower()
