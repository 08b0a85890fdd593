"""Calling a merchant to fulfil a redemption: a signed POST (Standard Webhooks, with the partner's webhook
secret) carrying an Idempotency-Key, so a retry after a lost answer never issues a second voucher."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

import httpx
import msgspec

from wallet.partners.service import get_partner, webhook_secrets
from wallet.partners.signatures import sign
from wallet.sealing import SecretBox

__all__ = ["Merchant", "MerchantClient", "Outcome"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """`issued` with a voucher; `refused` (the merchant said no: void now); `retry` (no answer we can trust)."""

    result: Literal["issued", "refused", "retry"]
    voucher_code: str | None = None
    expires_at: datetime | None = None
    reason: str = ""


class Merchant(Protocol):
    async def __call__(self, redemption: dict[str, Any]) -> Outcome: ...


class _Answer(msgspec.Struct):
    voucher_code: str
    expires_at: datetime | None = None


class MerchantClient:
    """The real caller (tests point `merchant_url` at a local server that checks what we send)."""

    def __init__(self, box: SecretBox, *, timeout_s: float = 5.0) -> None:
        self._box = box
        self._timeout = timeout_s

    async def __call__(self, redemption: dict[str, Any]) -> Outcome:
        partner = await get_partner(redemption["partner"]) if redemption["partner"] else None
        if partner is None or partner["status"] != "active":
            return Outcome("refused", reason="merchant-suspended" if partner else "merchant-not-configured")
        secrets = await webhook_secrets(redemption["partner"], self._box)
        if not secrets:
            return Outcome("refused", reason="merchant-not-configured")
        body = msgspec.json.encode({
            "type": "redemption.fulfil", "redemption_id": redemption["id"], "reward_code": redemption["reward_code"],
            "energy_price": redemption["price"], "reserved_at": redemption["created_at"].isoformat(),
        })
        message_id, now = f"redemption-{redemption['id']}", int(time.time())
        headers = {
            "content-type": "application/json", "idempotency-key": message_id, "webhook-id": message_id,
            "webhook-timestamp": str(now), "webhook-signature": sign(secrets[0], message_id, now, body),
            "user-agent": "carbon-wallet-mall/1", "x-request-id": str(uuid.uuid4()),
        }
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.post(redemption["merchant_url"], content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Outcome("retry", reason=f"merchant-unreachable: {type(exc).__name__}")
        if response.status_code in (408, 425, 429) or response.status_code >= 500:
            return Outcome("retry", reason=f"merchant-status-{response.status_code}")
        if response.status_code >= 400:
            return Outcome("refused", reason=f"merchant-refused-{response.status_code}")
        try:
            answer = msgspec.json.decode(response.content, type=_Answer)
        except msgspec.DecodeError:  # not JSON, or JSON without a voucher (ValidationError is a DecodeError)
            return Outcome("retry", reason="merchant-answer-unreadable")
        code = answer.voucher_code.strip()
        if not code or len(code) > 120:
            return Outcome("retry", reason="merchant-answer-unreadable")
        return Outcome("issued", voucher_code=code, expires_at=answer.expires_at)
