"""Helpers for mall tests: rewards added through the operators' API, wallets funded by an operator award,
redemptions through the resident's API, and the ledger check every energy-moving scenario ends with."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.support import Resident

__all__ = ["assert_ledger_ok", "energy", "fund", "new_reward", "redeem", "reward_body"]


def reward_body(**overrides: Any) -> dict[str, Any]:
    """A valid `POST /v1/admin/rewards` body with a unique code: a metro ride, 100 energy, 10 in stock."""
    return {
        "code": f"metro-{uuid.uuid4().hex[:10]}", "title_zh": "地铁单程票", "title_en": "Metro single ride",
        "merchant_zh": "北京地铁", "merchant_en": "Beijing Subway", "category": "transit", "price": 100,
        "stock": 10, **overrides,
    }


def new_reward(operator: Resident, **overrides: Any) -> dict[str, Any]:
    r = operator.post("/v1/admin/rewards", json=reward_body(**overrides))
    assert r.status_code == 201, r.text
    return r.json()


def fund(operator: Resident, resident: Resident, amount: int) -> None:
    r = operator.post("/v1/admin/ledger/awards", json={"holder_id": resident.holder_id, "amount": amount,
                                                       "reason": "Mall test"},
                      headers={"Idempotency-Key": uuid.uuid4().hex})
    assert r.status_code == 200, r.text
    assert r.json()["awarded"] == amount


def redeem(resident: Resident, reward_id: int, key: str | None = None) -> httpx.Response:
    return resident.post("/v1/me/redemptions", json={"reward_id": reward_id},
                         headers={"Idempotency-Key": key or uuid.uuid4().hex})


def energy(resident: Resident) -> dict[str, Any]:
    r = resident.get("/v1/me/energy")
    assert r.status_code == 200, r.text
    return r.json()


async def assert_ledger_ok() -> None:
    """The invariant checker over the whole ledger (needs the `db` fixture's pool)."""
    from wallet.ledger.check import check_ledger

    report = await check_ledger()
    failed = [f for f in report.findings if not f.ok]
    assert report.ok, "\n".join(f"{f.name}: {f.offenders} offenders, e.g. {f.examples}" for f in failed)
