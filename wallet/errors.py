"""Domain errors: a stable code, a sentence a person can act on, and a kind the edge maps to a status."""

from __future__ import annotations

from typing import Literal

__all__ = ["DomainError", "ErrorKind"]

ErrorKind = Literal["invalid", "unauthorized", "forbidden", "not_found", "conflict", "rate_limited", "unavailable"]


class DomainError(Exception):
    """Raised by domain services; never carries HTTP types so the domain stays independent of `api`."""

    def __init__(self, kind: ErrorKind, code: str, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.kind: ErrorKind = kind
        self.code = code
        self.detail = detail
        self.extra = extra
