"""What a source reports and who the source is: the inputs of judgement."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

__all__ = ["Report", "Source", "Via"]

Via = Literal["token", "signed_push", "self"]


@dataclass(frozen=True, slots=True)
class Source:
    """Who reports, for which holder. `allowed_behaviours` is None for the holder's own reports; `names`
    (zh-CN, en) is how other verdicts will name this source ("already counted from …")."""

    holder_id: uuid.UUID
    sub_account_id: uuid.UUID
    partner_id: uuid.UUID | None
    via: Via
    trust_tier: str
    names: tuple[str, str]
    allowed_behaviours: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Report:
    external_id: str
    behaviour: str
    quantity: int
    occurred_at: datetime
    ended_at: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def digest(self) -> str:
        """SHA-256 over a canonical encoding (sorted keys, UTC times), so a byte-different but equal retry
        is still recognised as the same report."""
        canonical = msgspec.json.encode(
            {
                "behaviour": self.behaviour,
                "details": self.details,
                "ended_at": self.ended_at.astimezone(UTC).isoformat() if self.ended_at else None,
                "external_id": self.external_id,
                "occurred_at": self.occurred_at.astimezone(UTC).isoformat(),
                "quantity": self.quantity,
            },
            order="sorted",
        )
        return hashlib.sha256(canonical).hexdigest()
