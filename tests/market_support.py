"""Helpers for the carbon-market tests: opted-in residents with verified, credited recycling entries (the grower
partner of the ledger tests), a programme accepting them, and a clean slate (nobody else opted in, nothing else
eligible) so a test's lot holds exactly its own residents' entries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import httpx

from tests.leaderboard_support import mg_of
from tests.ledger_support import GROWER, bearer, grow, new_holder, source_for
from wallet.db import connection
from wallet.market.programmes import Programme, create_programme
from wallet.market.statements import set_consent

__all__ = ["Contributor", "contributor", "mg_of", "new_programme", "opt_out_everyone", "today"]


def today() -> date:
    """A window generous enough for any resident's local day (Asia/Shanghai runs ahead of UTC)."""
    return date.today()


async def opt_out_everyone() -> None:
    """Earlier tests' residents may have opted in; a market test starts with nobody's entries eligible."""
    async with connection() as conn:
        await conn.execute("UPDATE market_consent SET opted_in = false WHERE opted_in")


async def new_programme(**overrides: Any) -> Programme:
    fields: dict[str, Any] = {
        "code": f"test-{uuid.uuid4().hex[:10]}", "name_zh": "测试项目", "name_en": "Test programme",
        "exchange_zh": "北京绿色交易所", "exchange_en": "China Beijing Green Exchange", "behaviours": [GROWER],
        "trust_tiers": ["verified"], "period_from": today() - timedelta(days=30),
        "period_to": today() + timedelta(days=2), "settle_days": 0,
    }
    fields.update(overrides)
    return await create_programme(fields)


@dataclass
class Contributor:
    holder_id: uuid.UUID
    headers: dict[str, str]

    def get(self, client: httpx.Client, path: str, **kw: Any) -> httpx.Response:
        return client.get(path, headers=self.headers, **kw)


async def contributor(template: Any, partner: dict[str, Any], tokens: Any, quantities: list[int], *,
                      opted_in: bool = True) -> Contributor:
    """A holder with one credited, verified recycling entry per quantity (grams), opted in or not."""
    holder = await new_holder(template, "market")
    if quantities:
        await grow(await source_for(holder, partner), quantities)
    if opted_in:
        await set_consent(holder, True)
    return Contributor(holder, await bearer(tokens, holder))
