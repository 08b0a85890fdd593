"""Helpers for the energy and donation tests: growing energy balls the product's way (a credited self-report
over HTTP, or `record_reports` in the pytest process under a chosen policy), reading a resident's energy, and
the ledger check every scenario that moves energy ends with."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.partner_support import activity
from tests.support import Resident
from wallet.accounts.service import ensure_self_sub_account
from wallet.energy.policy import configure, policy
from wallet.intake.judge import SELF_SOURCE, record_reports
from wallet.intake.reports import Report, Source
from wallet.ledger.check import check_ledger
from wallet.methodology.catalogue import behaviours, current_version, energy_for, reduction_mg

# Self-reportable behaviours (self_report_daily_cap > 0 in the catalogue) and how many a day each allows.
SELF_REPORTABLE = {code: current_version(code).self_report_daily_cap for code in ("clothes_repair", "clean_plate",
                                                                                 "own_cup")}
# Every credited self-report a resident can make on one local day: four balls.
ONE_DAY = [code for code, cap in SELF_REPORTABLE.items() for _ in range(cap)]


def energy_of(behaviour: str, quantity: int = 1) -> int:
    """The energy one credited report grows, from the catalogue (never a literal)."""
    version = current_version(behaviour)
    return energy_for(version, reduction_mg(version, quantity))


def name_of(behaviour: str) -> tuple[str, str]:
    known = behaviours()[behaviour]
    return known.name_zh, known.name_en


def occurred(days_ago: int = 0) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(days=days_ago, minutes=10)


def grow(resident: Resident, behaviour: str = "clothes_repair", days_ago: int = 0) -> dict[str, Any]:
    """A credited self-report over HTTP (one ball, ripe at once in the API process); returns the receipt."""
    body = activity(behaviour=behaviour, occurred_at=occurred(days_ago).isoformat())
    r = resident.post("/v1/me/activities", json={"activities": [body]})
    assert r.status_code == 200, r.text
    (receipt,) = r.json()["receipts"]
    assert receipt["verdict"] == "credited", receipt
    return receipt


def grow_days(resident: Resident, days: int) -> None:
    """Every self-report a resident may make on each of `days` local days: 4 × days balls."""
    for days_ago in range(days):
        for behaviour in ONE_DAY:
            grow(resident, behaviour, days_ago)


async def grow_here(resident: Resident, behaviour: str = "clothes_repair", days_ago: int = 0) -> None:
    """A credited self-report through `record_reports` in the pytest process, so the ball follows the policy
    configured here (not the API process's)."""
    holder_id = uuid.UUID(resident.holder_id)
    source = Source(holder_id=holder_id, sub_account_id=await ensure_self_sub_account(holder_id), partner_id=None,
                    via="self", trust_tier="self_reported", names=SELF_SOURCE)
    (receipt,) = await record_reports(source, [Report(f"here-{uuid.uuid4().hex}", behaviour, 1, occurred(days_ago))])
    assert receipt.verdict == "credited", receipt


def balls(resident: Resident, **params: Any) -> list[dict[str, Any]]:
    r = resident.get("/v1/me/energy/balls", params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def energy(resident: Resident) -> dict[str, Any]:
    r = resident.get("/v1/me/energy")
    assert r.status_code == 200, r.text
    return r.json()


def transfers(resident: Resident, **params: Any) -> list[dict[str, Any]]:
    r = resident.get("/v1/me/energy/transfers", params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def award(operator: Resident, resident: Resident, amount: int, reason: str = "Test funds") -> None:
    r = operator.post("/v1/admin/ledger/awards", json={"holder_id": resident.holder_id, "amount": amount,
                                                       "reason": reason})
    assert r.status_code == 200, r.text
    assert r.json()["awarded"] == amount


async def assert_ledger_ok() -> None:
    report = await check_ledger()
    assert report.ok, [f for f in report.findings if not f.ok]


@pytest.fixture
def energy_policy() -> Iterator[None]:
    """Restores the pytest process's energy policy after a test that configures its own."""
    before = policy()
    yield
    configure(before)

