"""Login identities: e-mail and phone numbers normalised so one person cannot register twice by case or format."""

from __future__ import annotations

import re

from wallet.errors import DomainError

__all__ = ["normalize_email", "normalize_login", "normalize_phone"]

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^[^@\s]{{1,64}}@{_LABEL}(?:\.{_LABEL})+$")
_CN_MOBILE = re.compile(r"^1[3-9]\d{9}$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def normalize_email(raw: str) -> str:
    email = raw.strip()
    if len(email) > 254 or not _EMAIL.match(email):
        raise DomainError(
            "invalid", "invalid-email", "This is not an e-mail address we can use, e.g. name@example.com."
        )
    local, domain = email.rsplit("@", 1)
    return f"{local}@{domain.lower()}".lower()


def normalize_phone(raw: str) -> str:
    """Mainland mobile numbers may be given without +86; anything else must be E.164 (+ and country code)."""
    phone = re.sub(r"[\s\-()]", "", raw.strip())
    if phone.startswith("0086"):
        phone = "+86" + phone[4:]
    if _CN_MOBILE.match(phone):
        phone = "+86" + phone
    if not _E164.match(phone) or (phone.startswith("+86") and not _CN_MOBILE.match(phone[3:])):
        raise DomainError(
            "invalid",
            "invalid-phone",
            "Give a mainland mobile number like 13800138000, or an international one like +4915112345678.",
        )
    return phone


def normalize_login(raw: str) -> tuple[str, str]:
    """('email', value) or ('phone', value) for a login field that may hold either."""
    return ("email", normalize_email(raw)) if "@" in raw else ("phone", normalize_phone(raw))
