"""HTTP helpers for the carbon-market API tests (tests/test_market_api.py, tests/test_market_rules.py).

Programmes, lots and sales are made by the operator over HTTP; residents read and choose over HTTP. The one
service-level step is making book entries: `member` gives a holder credited, verified recycling entries that
occurred on chosen days (as tests/market_support.py `contributor` does, but dated), and reads them back from
`GET /v1/me/book/entries`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from tests.ledger_support import GROWER, Kit, bearer, new_holder, source_for
from tests.market_support import Contributor, today
from tests.support import Resident
from wallet.intake.judge import record_reports
from wallet.intake.reports import Report
from wallet.market.statements import set_consent

__all__ = ["ADMIN", "Member", "add_entries", "eligible", "make_lot", "member", "programme", "put_consent", "sell",
           "settle"]

ADMIN = "/v1/admin/market"


@dataclass
class Member(Contributor):
    """A holder with their credited entries as `GET /v1/me/book/entries` shows them, oldest first."""

    entries: list[dict[str, Any]] = field(default_factory=list)

    def refresh(self, client: httpx.Client) -> None:
        r = self.get(client, "/v1/me/book/entries", params={"limit": 200})
        assert r.status_code == 200, r.text
        self.entries = sorted((e for e in r.json()["items"] if e["kind"] == "credit"), key=lambda e: e["id"])


async def add_entries(client: httpx.Client, kit: Kit, who: Member, items: list[tuple[int, int]]) -> None:
    """One credited recycling report per (grams, days ago); the member's entries are read again."""
    source = await source_for(who.holder_id, kit.partner)
    now = datetime.now(UTC)
    receipts = await record_reports(source, [
        Report(f"market-{uuid.uuid4().hex}", GROWER, grams, now - timedelta(days=days_ago, minutes=10))
        for grams, days_ago in items], now=now)
    assert [r.verdict for r in receipts] == ["credited"] * len(items), receipts
    who.refresh(client)


async def member(client: httpx.Client, kit: Kit, items: list[tuple[int, int]], *, opted_in: bool = True) -> Member:
    """A new holder with one entry per (grams, days ago), in that order (so entry ids rise in list order)."""
    holder = await new_holder(kit.template, "market")
    who = Member(holder, await bearer(kit.tokens, holder))
    if items:
        await add_entries(client, kit, who, items)
    if opted_in:
        await set_consent(holder, True)
    return who


def put_consent(client: httpx.Client, headers: dict[str, str], opted_in: bool) -> dict[str, Any]:
    r = client.put("/v1/me/market/consent", headers=headers, json={"opted_in": opted_in})
    assert r.status_code == 200, r.text
    return r.json()


def programme(operator: Resident, **overrides: Any) -> dict[str, Any]:
    """Publish a programme accepting the members' verified recycling entries of the last 30 days, pooled at once."""
    body: dict[str, Any] = {
        "code": f"http-{uuid.uuid4().hex[:10]}", "name_zh": "接口测试项目", "name_en": "API test programme",
        "exchange_zh": "北京绿色交易所", "exchange_en": "China Beijing Green Exchange", "behaviours": [GROWER],
        "trust_tiers": ["verified"], "period_from": (today() - timedelta(days=30)).isoformat(),
        "period_to": (today() + timedelta(days=2)).isoformat(), "settle_days": 0,
    }
    body.update({k: v.isoformat() if isinstance(v, date) else v for k, v in overrides.items()})
    r = operator.post(f"{ADMIN}/programmes", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def eligible(operator: Resident, code: str, **days: date) -> dict[str, Any]:
    r = operator.get(f"{ADMIN}/eligible", params={"programme": code, **{k: v.isoformat() for k, v in days.items()}})
    assert r.status_code == 200, r.text
    return r.json()


def make_lot(operator: Resident, code: str, target_mg: int, **extra: Any) -> dict[str, Any]:
    body = {"programme": code, "target_mg": target_mg,
            **{k: v.isoformat() if isinstance(v, date) else v for k, v in extra.items()}}
    r = operator.post(f"{ADMIN}/lots", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def sell(operator: Resident, lot_id: int, *, price: int = 8_500, ref: str | None = None,
         buyer: str = "某某科技有限公司") -> dict[str, Any]:
    r = operator.post(f"{ADMIN}/lots/{lot_id}/sales", json={
        "buyer": buyer, "exchange_ref": ref or f"CBEEX-{uuid.uuid4().hex[:12]}", "sale_date": "2026-11-20",
        "price_per_tonne_fen": price})
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "pending"
    return r.json()


def settle(operator: Resident, sale_id: int) -> dict[str, Any]:
    r = operator.post(f"{ADMIN}/sales/{sale_id}/settle")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "settled"
    return r.json()
