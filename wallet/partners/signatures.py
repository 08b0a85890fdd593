"""Standard Webhooks signatures (https://www.standardwebhooks.com): HMAC-SHA256 over
`{webhook-id}.{webhook-timestamp}.{body}`, keyed with the base64 part of a `whsec_` secret.

The `webhook-signature` header holds space-separated `v1,<base64>` entries, so a partner rotating its
secret can sign with the old and the new one; any live secret matching any entry verifies. Timestamps
outside ±300 s are refused, which bounds how long a captured push could be replayed; replays inside that
window are refused by the caller, which records each accepted `webhook-id`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

from wallet.errors import DomainError

__all__ = ["SIGNATURE_MISMATCH", "TOLERANCE_S", "sign", "verify"]

TOLERANCE_S = 300
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
MESSAGE_ID_MAX = 128
# One sentence for an unknown client id and a wrong signature alike.
SIGNATURE_MISMATCH = "No v1 signature matches a current signing secret of this partner."


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<signature>` entry; partners do the same on their side (shown in the README)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()


def _refuse(code: str, detail: str) -> DomainError:
    return DomainError("unauthorized", code, detail)


def verify(secrets: Sequence[str], headers: Mapping[str, str], body: bytes, *, now_s: int | None = None) -> str:
    """Returns the verified message id, or raises with a reason the partner's engineers can act on."""
    message_id = headers.get("webhook-id", "")
    raw_timestamp = headers.get("webhook-timestamp", "")
    signature_header = headers.get("webhook-signature", "")
    if not message_id or not raw_timestamp or not signature_header:
        raise _refuse(
            "signature-missing", "Signed pushes need webhook-id, webhook-timestamp and webhook-signature headers."
        )
    if len(message_id) > MESSAGE_ID_MAX:
        raise _refuse("signature-invalid", f"webhook-id can be at most {MESSAGE_ID_MAX} characters.")
    try:
        timestamp = int(raw_timestamp)
    except ValueError as exc:
        raise _refuse("signature-invalid", "webhook-timestamp must be whole seconds since the Unix epoch.") from exc
    now = int(time.time()) if now_s is None else now_s
    if abs(now - timestamp) > TOLERANCE_S:
        raise _refuse(
            "signature-expired",
            f"webhook-timestamp is more than {TOLERANCE_S} s from our clock ({now}); check the sender's clock.",
        )
    presented = [
        entry.split(",", 1)[1] for entry in signature_header.split() if entry.startswith("v1,") and "," in entry
    ]
    matched = False
    for secret in secrets:
        expected = sign(secret, message_id, timestamp, body).split(",", 1)[1]
        for candidate in presented:
            matched |= hmac.compare_digest(expected.encode(), candidate.encode())
    if not matched:
        raise _refuse("signature-invalid", SIGNATURE_MISMATCH)
    return message_id
