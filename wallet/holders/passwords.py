"""argon2id password hashing, run off the event loop because each hash costs tens of milliseconds."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from wallet.errors import DomainError

__all__ = [
    "ARGON2_MEMORY_KIB_DEFAULT",
    "ARGON2_TIME_COST_DEFAULT",
    "PASSWORD_LENGTH_MAX",
    "PASSWORD_LENGTH_MIN",
    "Passwords",
    "check_password_policy",
]

ARGON2_TIME_COST_DEFAULT = 2
ARGON2_MEMORY_KIB_DEFAULT = 19 * 1024  # OWASP's minimum for argon2id: m=19 MiB, t=2, p=1
PASSWORD_LENGTH_MIN = 8
PASSWORD_LENGTH_MAX = 128


def check_password_policy(password: str) -> None:
    """NIST SP 800-63B: length matters, composition rules do not."""
    if len(password) < PASSWORD_LENGTH_MIN:
        raise DomainError(
            "invalid", "weak-password", f"Choose a password of at least {PASSWORD_LENGTH_MIN} characters."
        )
    if len(password) > PASSWORD_LENGTH_MAX:
        raise DomainError("invalid", "password-too-long", f"Passwords can be at most {PASSWORD_LENGTH_MAX} characters.")
    if len(set(password)) < 3:
        raise DomainError("invalid", "weak-password", "This password repeats too few characters; choose another.")


class Passwords:
    """argon2id with parameters from settings (OWASP's minimum by default: m=19 MiB, t=2, p=1)."""

    def __init__(self, time_cost: int, memory_kib: int) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
        self._dummy_hash = self._hasher.hash("carbon-wallet timing equaliser")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Always spends one verification, even with no stored hash, so timing does not reveal accounts."""
        target = stored_hash or self._dummy_hash
        try:
            ok = await asyncio.to_thread(self._hasher.verify, target, password)
        except (VerificationError, InvalidHashError):
            return False
        return bool(ok) and stored_hash is not None

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)
