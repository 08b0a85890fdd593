"""Helpers for the energy-ledger tests (model, concurrency, faults): many real holders without paying argon2
for each, access tokens for them without the login endpoint, a verified partner whose credited reports grow
energy balls, funding, rewards, balances, the ledger check, and a storm of concurrent HTTP requests on warm
connections."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from api.auth.sessions import start_session
from api.auth.tokens import AccessTokens
from tests.partner_support import ALL_SCOPES, REDIRECT_URI
from tests.support import PASSWORD, unique_email
from wallet.accounts.service import link_partner
from wallet.db import connection
from wallet.energy.awards import award
from wallet.energy.policy import EnergyPolicy, configure, policy
from wallet.holders.service import Registration, insert_holder, prepare_registration
from wallet.intake.judge import Receipt, record_reports
from wallet.intake.reports import Report, Source
from wallet.ledger.check import check_ledger
from wallet.mall.catalogue import create_reward
from wallet.partners.service import PartnerSpec, register_partner
from wallet.sealing import SecretBox

GROWER = "clothes_recycling"  # verified tier, grams, 1.28 energy per g: quantity 1 grows a ball of 1 energy
WINDOW = 72 * 3600


async def registration_template(passwords: Any) -> Registration:
    """One registration with its password hashed once; `new_holder` copies it with a new id and e-mail."""
    return await prepare_registration(passwords, email=unique_email("ledger"), password=PASSWORD)


async def new_holder(template: Registration, tag: str = "ledger") -> uuid.UUID:
    """A real holder (row, energy accounts, self sub-account, registration event) through `insert_holder`."""
    holder = dataclasses.replace(template, holder_id=uuid.uuid4(), email=unique_email(tag), nickname=tag)
    return (await insert_holder(holder))["id"]


async def gather_limited(calls: Sequence[Callable[[], Awaitable[Any]]], limit: int = 8) -> list[Any]:
    """Run many service calls, at most `limit` at once (the pytest pool has 10 connections)."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


async def new_holders(template: Registration, n: int, tag: str = "ledger") -> list[uuid.UUID]:
    return await gather_limited([lambda: new_holder(template, tag) for _ in range(n)])


def access_tokens(settings: Any) -> AccessTokens:
    """The API's own token issuer (same key, issuer and audience as the API process)."""
    return AccessTokens(settings.jwt_private_key_pem, issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                        ttl_s=settings.access_token_ttl_s)


async def bearer(tokens: AccessTokens, holder_id: uuid.UUID) -> dict[str, str]:
    """Authorization headers for a live session of `holder_id`, as a login would start it."""
    session = await start_session(holder_id, device_name="ledger test", user_agent="pytest", ip="127.0.0.1",
                                  refresh_ttl_s=3600)
    token, _ = tokens.issue(holder_id, session.session_id)
    return {"Authorization": f"Bearer {token}"}


async def grower_partner(settings: Any) -> dict[str, Any]:
    """A verified partner that may report clothes recycling."""
    tag = uuid.uuid4().hex[:6]
    return (await register_partner(PartnerSpec(
        name=f"账本测试 {tag}", name_en=f"Ledger Test {tag}", kind="other", redirect_uris=[REDIRECT_URI],
        allowed_scopes=ALL_SCOPES, allowed_behaviours=[GROWER], trust_tier="verified",
    ), SecretBox(settings.data_key))).partner


async def source_for(holder_id: uuid.UUID, partner: dict[str, Any]) -> Source:
    link = await link_partner(holder_id, partner["id"], ["activities:write"])
    return Source(holder_id=holder_id, sub_account_id=link.sub_account_id, partner_id=partner["id"], via="token",
                  trust_tier=partner["trust_tier"], names=(partner["name"], partner["name_en"]),
                  allowed_behaviours=frozenset(partner["allowed_behaviours"]))


async def grow(source: Source, quantities: Sequence[int], *, ripen_s: float = 0,
               window_s: float = WINDOW) -> list[tuple[int, int]]:
    """Report one recycling per quantity (each credited, so each grows a ball) under a temporary energy
    policy in this process; returns (ball id, amount) per report, in order."""
    previous = policy()
    configure(EnergyPolicy(ripen_s=ripen_s, window_s=window_s,  # type: ignore[arg-type] - sub-second windows
                           friend_help_daily_cap=previous.friend_help_daily_cap))
    try:
        now = datetime.now(UTC)
        receipts: list[Receipt] = await record_reports(source, [
            Report(f"grow-{uuid.uuid4().hex}", GROWER, q, now - timedelta(seconds=60)) for q in quantities
        ], now=now)
    finally:
        configure(previous)
    assert [r.verdict for r in receipts] == ["credited"] * len(quantities), receipts
    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT e.activity, b.id, b.amount FROM energy_ball b JOIN book_entry e ON e.id = b.entry
               WHERE e.activity = ANY($1::uuid[])""", [r.activity_id for r in receipts],
        )
    by_activity = {r["activity"]: (r["id"], r["amount"]) for r in rows}
    return [by_activity[r.activity_id] for r in receipts]


async def storm(base_url: str, requests: Sequence[tuple[str, str, dict[str, Any]]],
                per_client: int = 25) -> list[httpx.Response]:
    """Send every (method, path, kwargs) at once, each on its own warm connection; answers in request order.
    Connections are spread over clients of `per_client` each (one httpx pool juggling hundreds of connections
    is itself slow)."""
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for _ in range(0, len(requests), per_client):
            limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
            clients.append(await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits)))
        lanes = [clients[i // per_client] for i in range(len(requests))]
        warm = await asyncio.gather(*(http.get("/health") for http in lanes))
        assert all(r.status_code == 200 for r in warm)
        return list(await asyncio.gather(*(http.request(method, path, **kw)
                                           for http, (method, path, kw) in zip(lanes, requests, strict=True))))


@dataclass(frozen=True)
class Kit:
    """What a module's scenarios share: a pre-hashed registration, the growing partner, the token issuer, and
    an operator's id for awards."""

    template: Registration
    partner: dict[str, Any]
    tokens: AccessTokens
    operator: uuid.UUID


async def make_kit(passwords: Any, settings: Any) -> Kit:
    template = await registration_template(passwords)
    return Kit(template, await grower_partner(settings), access_tokens(settings), await new_holder(template, "op"))


async def fund(kit: Kit, holder: uuid.UUID, amount: int) -> None:
    await award(holder, amount, reason="test funds", operator_id=kit.operator)


async def new_reward(price: int, stock: int | None) -> dict[str, Any]:
    """A reward we issue vouchers for ourselves (`code` fulfilment)."""
    return await create_reward({
        "code": f"race-{uuid.uuid4().hex[:12]}", "title_zh": "最后几件", "title_en": "The last few",
        "merchant_zh": "测试商户", "merchant_en": "Test merchant", "category": "goods", "price": price,
        "stock": stock,
    })


async def balances_of(holders: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    async with connection() as conn:
        rows = await conn.fetch("""SELECT holder, purpose, balance FROM ledger_account
                                   WHERE holder = ANY($1::uuid[]) AND unit = 'energy'""", holders)
    out: dict[uuid.UUID, dict[str, int]] = {h: {} for h in holders}
    for r in rows:
        out[r["holder"]][r["purpose"]] = r["balance"]
    return out


async def balances(holder: uuid.UUID) -> dict[str, int]:
    return (await balances_of([holder]))[holder]


async def assert_ledger_ok() -> None:
    report = await check_ledger()
    assert report.ok, [f for f in report.findings if not f.ok]
