"""Codes people type or scan: friends' invite codes and teams' join codes.

Ten characters of Crockford's base32 (digits and letters without I, L, O and U), so 50 random bits: far too
many to guess or enumerate. Reading is forgiving the Crockford way: case, spaces and dashes do not matter,
I and L read as 1, O as 0.
"""

from __future__ import annotations

import re
import secrets

__all__ = ["ALPHABET", "CODE_LENGTH", "new_code", "read_code"]

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 10
_CODE = re.compile(rf"^[{ALPHABET}]{{{CODE_LENGTH}}}$")
_SEPARATORS = re.compile(r"[\s\-]")
_READS_AS = str.maketrans({"I": "1", "L": "1", "O": "0"})


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def read_code(raw: str) -> str | None:
    """The canonical code for what someone typed, or None when it cannot be one (wrong length or letters)."""
    code = _SEPARATORS.sub("", raw).upper().translate(_READS_AS)
    return code if _CODE.match(code) else None
