"""Access-token verification as a service: the per-process cache of verified tokens never outlives a token."""

from __future__ import annotations

import time
import uuid

import pytest

from api.auth.tokens import LEEWAY_S, VERIFIED_CACHE_MAX, AccessTokens
from wallet.errors import DomainError


@pytest.fixture
def tokens(settings: object) -> AccessTokens:
    return AccessTokens(
        settings.jwt_private_key_pem,  # type: ignore[attr-defined]
        issuer="carbon-wallet", audience="carbon-wallet:app", ttl_s=900,
    )


def test_a_remembered_token_still_expires(tokens: AccessTokens) -> None:
    issued = int(time.time())
    token, expires_at = tokens.issue(uuid.uuid4(), uuid.uuid4(), now_s=issued)
    assert tokens.verify(token, now_s=issued + 10).expires_at == expires_at  # verified and remembered
    assert tokens.verify(token, now_s=expires_at + LEEWAY_S).expires_at == expires_at
    with pytest.raises(DomainError) as expired:
        tokens.verify(token, now_s=expires_at + LEEWAY_S + 1)
    assert expired.value.code == "token-expired"


def test_a_token_from_the_future_is_refused_even_when_remembered(tokens: AccessTokens) -> None:
    issued = int(time.time())
    token, _ = tokens.issue(uuid.uuid4(), uuid.uuid4(), now_s=issued)
    tokens.verify(token, now_s=issued)
    with pytest.raises(DomainError) as early:
        tokens.verify(token, now_s=issued - LEEWAY_S - 60)
    assert early.value.code == "token-invalid"


def test_a_tampered_copy_of_a_remembered_token_is_refused(tokens: AccessTokens) -> None:
    token, _ = tokens.issue(uuid.uuid4(), uuid.uuid4())
    tokens.verify(token)
    head, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(DomainError) as tampered:
        tokens.verify(f"{head}.{payload}.{flipped}")
    assert tampered.value.code == "token-invalid"


def test_the_cache_is_bounded(tokens: AccessTokens) -> None:
    holder = uuid.uuid4()
    first, _ = tokens.issue(holder, uuid.uuid4())
    tokens.verify(first)
    for _ in range(VERIFIED_CACHE_MAX):
        tokens.verify(tokens.issue(holder, uuid.uuid4())[0])
    assert len(tokens._verified) == VERIFIED_CACHE_MAX
    assert first not in tokens._verified
    assert tokens.verify(first).holder_id == holder  # evicted, verified again from scratch
