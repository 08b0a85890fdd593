"""Shared edge helpers for authentication: the OpenAPI security requirement and the client IP."""

from __future__ import annotations

from typing import Any

from litestar import Request

from api.settings import Settings

__all__ = ["BEARER", "client_ip"]

BEARER: list[dict[str, list[str]]] = [{"BearerToken": []}]


def client_ip(request: Request[Any, Any, Any], settings: Settings) -> str:
    """The peer address, or the left-most X-Forwarded-For when a trusted proxy sets it."""
    if settings.trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for", "")
        first = forwarded.split(",", 1)[0].strip()
        if first:
            return first[:45]
    return request.client.host if request.client else "unknown"
