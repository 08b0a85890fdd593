"""The per-holder hash chain (LEDGER T1, T2, T4).

Each entry stores the exact canonical bytes it was hashed over: a domain-separated, versioned prefix and
the entry's fields as compact JSON with sorted keys. `entry_hash = SHA-256(prev_hash ‖ canonical)`, and the
first entry's `prev_hash` is a per-holder genesis value, so chains cannot be spliced between holders. The
source's own event id is inside the hashed bytes (T5): a partner cannot later deny what it reported.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import msgspec

__all__ = ["DOMAIN", "Draft", "EntryFields", "canonical_bytes", "chain_hash", "genesis"]

DOMAIN = b"carbon-book/v1\n"


def genesis(holder_id: uuid.UUID) -> bytes:
    return hashlib.sha256(b"carbon-book/v1/genesis\n" + holder_id.bytes).digest()


def chain_hash(prev_hash: bytes, canonical: bytes) -> bytes:
    return hashlib.sha256(prev_hash + canonical).digest()


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True, kw_only=True)
class Draft:
    """An entry before it has a place in the chain."""

    kind: str
    activity_id: uuid.UUID
    external_id: str
    reverses: int | None
    sub_account_id: uuid.UUID
    partner_id: uuid.UUID | None
    trust_tier: str
    behaviour: str
    behaviour_version: int
    methodology_release: str
    category: str
    quantity: int
    reduction_mg: int
    energy: int
    occurred_at: datetime
    local_day: date
    note: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryFields(Draft):
    """Everything an entry asserts: a draft with its place in a holder's chain. The verifier rebuilds this from
    the stored columns and compares bytes."""

    holder_id: uuid.UUID
    seq: int
    recorded_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "holder": str(self.holder_id), "seq": self.seq, "kind": self.kind,
            "activity": str(self.activity_id), "external_id": self.external_id, "reverses": self.reverses,
            "sub_account": str(self.sub_account_id), "partner": str(self.partner_id) if self.partner_id else None,
            "trust_tier": self.trust_tier, "behaviour": self.behaviour, "behaviour_version": self.behaviour_version,
            "methodology_release": self.methodology_release, "category": self.category,
            "quantity": self.quantity, "reduction_mg": self.reduction_mg, "energy": self.energy,
            "occurred_at": _time(self.occurred_at), "local_day": self.local_day.isoformat(),
            "recorded_at": _time(self.recorded_at), "note": self.note,
        }


def canonical_bytes(fields: EntryFields) -> bytes:
    return DOMAIN + msgspec.json.encode(fields.as_dict(), order="sorted")
