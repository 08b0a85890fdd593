"""Secrets we must read back (webhook signing secrets: verifying an HMAC needs the key) are sealed with
AES-256-GCM under one data key, so a database dump alone does not let anyone forge a partner's pushes."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["SecretBox", "ensure_local_data_key", "parse_data_key", "write_once"]

_VERSION = b"\x01"


def parse_data_key(raw: str) -> bytes:
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except ValueError as exc:
        raise ValueError("the data key must be base64") from exc
    if len(key) != 32:
        raise ValueError("the data key must be 32 bytes (base64 of 32 random bytes)")
    return key


def write_once(path: Path, make: Callable[[], bytes]) -> bytes:
    """A local secret file, created with O_EXCL and mode 0600, so processes starting together (API, worker)
    agree on one secret: whoever loses the race reads the winner's."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(make())
    return path.read_bytes()


def ensure_local_data_key(path: Path) -> bytes:
    return parse_data_key(write_once(path, lambda: base64.b64encode(os.urandom(32))).decode())


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, *, context: str) -> bytes:
        """`context` (e.g. the partner id) is authenticated, so a sealed secret cannot be moved to another row."""
        nonce = os.urandom(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext.encode(), context.encode())

    def open(self, sealed: bytes, *, context: str) -> str:
        if sealed[:1] != _VERSION:
            raise ValueError("unknown sealed-secret version")
        return self._aead.decrypt(sealed[1:13], sealed[13:], context.encode()).decode()
