"""Request and response shapes of the partner API, signed pushes and the partner admin API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from api.residents.schemas import Input

__all__ = [
    "ActivityBatch",
    "ActivityIn",
    "BatchReceipt",
    "PartnerBookOut",
    "PartnerCreate",
    "PartnerCreated",
    "PartnerOut",
    "PartnerPatch",
    "PartnerProfileOut",
    "PartnerStatusIn",
    "PushActivityIn",
    "PushBatch",
    "ReceiptOut",
    "SecretOut",
    "SecretRotate",
    "SecretRotated",
]

EventId = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$",
        description="Your own id of this action (e.g. the order id): the idempotency key, unique per resident.",
        examples=["order-20261121-0001"],
    ),
]
Behaviour = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$",
                      description="A code from GET /v1/methodology/behaviours.", examples=["no_disposable_cutlery"])
]
Quantity = Annotated[
    int, msgspec.Meta(ge=1, le=10**12, description="How many units of the behaviour's unit (e.g. 1 order, 3200 steps).")
]
Kind = Literal["food_delivery", "logistics", "second_hand", "bike_share", "transit", "maps", "employer", "other"]
Scope = Literal["activities:write", "book:read", "profile:read", "ledger:read"]  # ledger:read: client_credentials only
TrustTier = Literal["verified", "device", "self_reported"]
RedirectUri = Annotated[str, msgspec.Meta(min_length=1, max_length=500, examples=["https://partner.example/cb"])]
Limit = Annotated[int, msgspec.Meta(ge=1, le=10_000_000)]


class ActivityIn(Input, kw_only=True):
    event_id: EventId
    behaviour: Behaviour
    quantity: Quantity
    occurred_at: Annotated[datetime, msgspec.Meta(tz=True, description="When it happened, with an offset.")]
    ended_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    details: Annotated[
        dict[str, Any],
        msgspec.Meta(description="Evidence the methodology may use (distance_m, order_id, station…); 50 keys max.",
                     max_length=50),
    ] = msgspec.field(default_factory=dict)


class ActivityBatch(Input, kw_only=True):
    activities: Annotated[list[ActivityIn], msgspec.Meta(min_length=1, max_length=1000)]


class PushActivityIn(ActivityIn, kw_only=True):
    sub_account_id: Annotated[uuid.UUID, msgspec.Meta(description="From the token response when the resident linked.")]


class PushBatch(Input, kw_only=True):
    activities: Annotated[list[PushActivityIn], msgspec.Meta(min_length=1, max_length=1000)]


Verdict = Literal["credited", "partially_credited", "duplicate", "rejected", "held"]


class ReceiptOut(msgspec.Struct, kw_only=True):
    """The verdict on one activity. `verdict` is null only when this event id was already used for a
    different report (`code` = `event-id-reused`); `replayed` marks a verdict given earlier for the same
    report, returned again."""

    event_id: str
    activity_id: uuid.UUID | None
    verdict: Verdict | None
    code: str
    reason: dict[str, str] = msgspec.field(default_factory=dict)
    credited_quantity: int = 0
    credited_mg: int = 0
    replayed: bool = False


class BatchReceipt(msgspec.Struct, kw_only=True):
    """One receipt per activity, in the order sent. The verdict counts are of activities judged now;
    `replayed` counts the ones answered with their earlier verdict."""

    credited: int
    partially_credited: int
    duplicate: int
    rejected: int
    held: int
    conflicts: int
    replayed: int
    quota_remaining_today: int | None = msgspec.field(default=None)
    receipts: list[ReceiptOut]


class PartnerProfileOut(msgspec.Struct, kw_only=True):
    sub_account_id: uuid.UUID
    nickname: str


class PartnerBookOut(msgspec.Struct, kw_only=True):
    """What this resident did through your platform only; never their other sources."""

    sub_account_id: uuid.UUID
    activities: int
    credited_activities: int
    reduction_mg: int
    first_activity_at: datetime | None
    last_activity_at: datetime | None


class PartnerCreate(Input, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=80, examples=["饿了么"])]
    name_en: Annotated[str, msgspec.Meta(max_length=80, examples=["Ele.me"])] = ""
    kind: Kind
    client_type: Literal["confidential", "public"] = "confidential"
    redirect_uris: Annotated[list[RedirectUri], msgspec.Meta(min_length=1, max_length=10)]
    allowed_scopes: Annotated[list[Scope], msgspec.Meta(min_length=1)]
    allowed_behaviours: list[Behaviour] = msgspec.field(default_factory=list)
    trust_tier: TrustTier = "verified"
    rate_limit_per_minute: Limit = 600
    daily_quota: Limit = 100_000


class PartnerPatch(Input, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=80)] | msgspec.UnsetType = msgspec.UNSET
    name_en: Annotated[str, msgspec.Meta(max_length=80)] | msgspec.UnsetType = msgspec.UNSET
    kind: Kind | msgspec.UnsetType = msgspec.UNSET
    redirect_uris: Annotated[list[RedirectUri], msgspec.Meta(min_length=1, max_length=10)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    allowed_scopes: Annotated[list[Scope], msgspec.Meta(min_length=1)] | msgspec.UnsetType = msgspec.UNSET
    allowed_behaviours: list[Behaviour] | msgspec.UnsetType = msgspec.UNSET
    trust_tier: TrustTier | msgspec.UnsetType = msgspec.UNSET
    rate_limit_per_minute: Limit | msgspec.UnsetType = msgspec.UNSET
    daily_quota: Limit | msgspec.UnsetType = msgspec.UNSET


class PartnerStatusIn(Input, kw_only=True):
    status: Literal["active", "suspended"]
    reason: Annotated[str, msgspec.Meta(max_length=200)] = ""


class SecretOut(msgspec.Struct, kw_only=True):
    purpose: Literal["client", "webhook"]
    hint: str
    created_at: datetime
    expires_at: datetime | None


class PartnerOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    client_id: str
    name: str
    name_en: str
    kind: str
    client_type: str
    redirect_uris: list[str]
    allowed_scopes: list[str]
    allowed_behaviours: list[str]
    trust_tier: str
    rate_limit_per_minute: int
    daily_quota: int
    status: str
    status_reason: str
    created_at: datetime
    updated_at: datetime
    secrets: list[SecretOut] = msgspec.field(default_factory=list)


class PartnerCreated(msgspec.Struct, kw_only=True):
    """The secrets are shown this once; only their last four characters are kept readable."""

    partner: PartnerOut
    client_secret: str | None
    webhook_secret: str


class SecretRotate(Input, kw_only=True):
    overlap_s: Annotated[int, msgspec.Meta(ge=0, le=90 * 86400)] | None = None


class SecretRotated(msgspec.Struct, kw_only=True):
    purpose: Literal["client", "webhook"]
    secret: str
    previous_valid_for_s: int
