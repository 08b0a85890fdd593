"""Rewards a merchant fulfils: the wallet calls the merchant (a local HTTP server that checks the body, the
`Idempotency-Key` = `webhook-id` = `redemption-{id}` and the Standard Webhooks signature with the partner's
webhook secret) and resolves each redemption exactly once.

A voucher in the answer fulfils at once; a merchant that is down leaves the redemption `pending` with the
energy `held` until the sweep asks again (with the same key) and fulfils it; a refusal voids it and returns
energy and stock; after the last attempt, or a day pending, the sweep gives up and voids it; an operator can
void a pending redemption. Every scenario ends with the ledger check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.mall_support import assert_ledger_ok, energy, fund, new_reward, redeem
from tests.merchant_support import FakeMerchant
from tests.partner_support import Partner, create_partner
from tests.support import Resident, assert_problem, free_port, register
from wallet.db import connection
from wallet.mall.merchant import MerchantClient
from wallet.mall.redeem import ATTEMPTS_MAX, sweep_pending
from wallet.sealing import SecretBox

Sweep = Callable[[], Awaitable[dict[str, int]]]


@pytest.fixture(scope="module")
def partner(operator: Resident) -> Partner:
    return create_partner(operator)


@pytest.fixture
def merchant(partner: Partner) -> Iterator[FakeMerchant]:
    with FakeMerchant(partner.webhook_secret) as fake:
        yield fake


@pytest.fixture
def sweep(settings: Any, db: object) -> Sweep:
    """What the worker's cron runs, in this process, with the same data key as the API."""
    client = MerchantClient(SecretBox(settings.data_key))
    return lambda: sweep_pending(client)


async def _due(redemption_id: int, *, age: timedelta | None = None) -> None:
    """Make a pending redemption due now (or `age` old); the redemption trigger allows these columns to move."""
    async with connection() as conn:
        await conn.execute("UPDATE redemption SET next_attempt_at = now() WHERE id = $1", redemption_id)
        if age:
            await conn.execute("UPDATE redemption SET created_at = now() - $2::interval WHERE id = $1",
                               redemption_id, age)


def _reward(operator: Resident, partner: Partner, url: str, **overrides: Any) -> dict[str, Any]:
    return new_reward(operator, fulfilment="merchant", merchant_url=url, partner_id=partner.id, price=60, stock=3,
                      category="coffee", title_zh="美式咖啡", title_en="Americano", **overrides)


def _buyer(client: httpx.Client, operator: Resident) -> Resident:
    resident = register(client)
    fund(operator, resident, 200)
    return resident


def _stock(client: httpx.Client, reward_id: int) -> int | None:
    return client.get(f"/v1/mall/rewards/{reward_id}").json()["stock"]


def _state(resident: Resident, redemption_id: int) -> dict[str, Any]:
    r = resident.get(f"/v1/me/redemptions/{redemption_id}")
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_merchant_voucher_fulfils_the_redemption_at_once(
        client: httpx.Client, operator: Resident, partner: Partner, merchant: FakeMerchant, db: object) -> None:
    reward = _reward(operator, partner, merchant.url)
    buyer = _buyer(client, operator)
    merchant.answer(200, {"voucher_code": "M-123", "expires_at": "2027-01-31T00:00:00+08:00"})
    r = redeem(buyer, reward["id"])
    assert r.status_code == 201, r.text
    got = r.json()
    assert (got["state"], got["voucher_code"]) == ("fulfilled", "M-123")
    assert datetime.fromisoformat(got["voucher_expires_at"]) == datetime.fromisoformat("2027-01-31T00:00:00+08:00")
    assert merchant.problems == []
    (call,) = merchant.calls
    assert call.json["type"] == "redemption.fulfil"
    assert (call.json["redemption_id"], call.json["reward_code"], call.json["energy_price"]) == (
        got["id"], reward["code"], 60)
    assert call.idempotency_key == call.headers["webhook-id"] == f"redemption-{got['id']}"
    wallet = energy(buyer)
    assert (wallet["available"], wallet["held"], wallet["lifetime"]["redeemed"]) == (140, 0, 60)
    assert _stock(client, reward["id"]) == 2
    shown = client.get(f"/v1/mall/rewards/{reward['id']}").json()
    assert "merchant_url" not in shown and "partner_id" not in shown and merchant.url not in str(shown)
    await assert_ledger_ok()


async def test_a_merchant_that_is_down_leaves_it_pending_until_the_sweep_fulfils_it(
        client: httpx.Client, operator: Resident, partner: Partner, merchant: FakeMerchant, sweep: Sweep) -> None:
    reward = _reward(operator, partner, merchant.url)
    buyer = _buyer(client, operator)
    merchant.answer(503, {"error": "maintenance"})
    r = redeem(buyer, reward["id"])
    assert r.status_code == 201, r.text
    pending = r.json()
    assert (pending["state"], pending["voucher_code"], pending["resolved_at"]) == ("pending", None, None)
    wallet = energy(buyer)
    assert (wallet["available"], wallet["held"], wallet["lifetime"]["redeemed"]) == (140, 60, 0)
    assert _stock(client, reward["id"]) == 2
    await assert_ledger_ok()

    async with connection() as conn:  # the next attempt waits for its backoff: 30 s after the first failure
        attempts, wait = await conn.fetchrow(
            "SELECT attempts, next_attempt_at - created_at FROM redemption WHERE id = $1", pending["id"])
        assert attempts == 1 and wait >= timedelta(seconds=30)
        await conn.execute("UPDATE redemption SET next_attempt_at = now() + interval '1 hour' WHERE id = $1",
                           pending["id"])
    merchant.answer(200, {"voucher_code": "M-456"})
    await sweep()  # not due: left alone
    assert _state(buyer, pending["id"])["state"] == "pending" and len(merchant.calls) == 1

    await _due(pending["id"])
    await sweep()
    done = _state(buyer, pending["id"])
    assert (done["state"], done["voucher_code"]) == ("fulfilled", "M-456")
    assert merchant.problems == []
    assert [c.idempotency_key for c in merchant.calls] == [f"redemption-{pending['id']}"] * 2
    wallet = energy(buyer)
    assert (wallet["available"], wallet["held"], wallet["lifetime"]["redeemed"]) == (140, 0, 60)
    assert redeem(buyer, reward["id"], key="x").status_code == 201  # the merchant is back for new ones too
    await assert_ledger_ok()


async def test_a_merchant_refusal_voids_the_redemption_and_gives_everything_back(
        client: httpx.Client, operator: Resident, partner: Partner, merchant: FakeMerchant, db: object) -> None:
    reward = _reward(operator, partner, merchant.url, lifetime_limit=1)
    buyer = _buyer(client, operator)
    merchant.answer(409, {"error": "this store has closed"})
    r = redeem(buyer, reward["id"])
    assert r.status_code == 201, r.text
    voided = r.json()
    assert voided["state"] == "voided" and voided["void_reason"].startswith("merchant-refused"), voided
    assert voided["voucher_code"] is None and voided["resolved_at"] is not None
    assert (energy(buyer)["available"], energy(buyer)["held"]) == (200, 0)
    assert _stock(client, reward["id"]) == 3
    statement = {t["kind"]: t for t in buyer.get("/v1/me/energy/transfers").json()["items"]}
    assert statement["redemption.voided"]["resolves"] == statement["redemption.reserved"]["id"]
    assert statement["redemption.voided"]["effect"] == {"available": 60, "balls": 0, "held": -60}

    merchant.answer(200, {"voucher_code": "M-789"})  # a voided redemption does not count toward the limit
    again = redeem(buyer, reward["id"])
    assert again.status_code == 201 and again.json()["voucher_code"] == "M-789", again.text
    assert merchant.problems == []
    await assert_ledger_ok()


async def test_the_sweep_gives_up_after_the_last_attempt(
        client: httpx.Client, operator: Resident, partner: Partner, merchant: FakeMerchant, sweep: Sweep) -> None:
    reward = _reward(operator, partner, merchant.url)
    buyer = _buyer(client, operator)
    merchant.answer(503)
    redemption_id = redeem(buyer, reward["id"]).json()["id"]
    for _ in range(ATTEMPTS_MAX - 1):
        assert _state(buyer, redemption_id)["state"] == "pending"
        await _due(redemption_id)
        await sweep()
    given_up = _state(buyer, redemption_id)
    assert (given_up["state"], given_up["void_reason"]) == ("voided", "merchant-unavailable")
    assert [c.idempotency_key for c in merchant.calls] == [f"redemption-{redemption_id}"] * ATTEMPTS_MAX
    assert merchant.problems == []
    assert (energy(buyer)["available"], energy(buyer)["held"]) == (200, 0)
    assert _stock(client, reward["id"]) == 3
    await _due(redemption_id)
    await sweep()
    assert len(merchant.calls) == ATTEMPTS_MAX and _state(buyer, redemption_id)["state"] == "voided"
    await assert_ledger_ok()


async def test_a_redemption_pending_for_a_day_is_voided_by_the_sweep(
        client: httpx.Client, operator: Resident, partner: Partner, merchant: FakeMerchant, sweep: Sweep) -> None:
    reward = _reward(operator, partner, merchant.url)
    buyer = _buyer(client, operator)
    merchant.answer(503)
    redemption_id = redeem(buyer, reward["id"]).json()["id"]
    await _due(redemption_id, age=timedelta(hours=25))
    await sweep()
    stale = _state(buyer, redemption_id)
    assert (stale["state"], stale["void_reason"]) == ("voided", "fulfilment-timed-out")
    assert (energy(buyer)["available"], energy(buyer)["held"]) == (200, 0)
    assert _stock(client, reward["id"]) == 3
    await assert_ledger_ok()


async def test_an_unreachable_or_unreadable_merchant_leaves_it_pending(
        client: httpx.Client, operator: Resident, partner: Partner, merchant: FakeMerchant, db: object) -> None:
    buyer = _buyer(client, operator)
    gone = _reward(operator, partner, f"http://127.0.0.1:{free_port()}/fulfil")
    unreachable = redeem(buyer, gone["id"])
    assert unreachable.status_code == 201 and unreachable.json()["state"] == "pending", unreachable.text
    odd = _reward(operator, partner, merchant.url)
    merchant.answer(200, {"code": "M-1"})  # JSON, but no voucher_code
    unreadable = redeem(buyer, odd["id"])
    assert unreadable.status_code == 201 and unreadable.json()["state"] == "pending", unreadable.text
    assert energy(buyer)["held"] == 120
    for r in (unreachable, unreadable):
        operator.post(f"/v1/admin/redemptions/{r.json()['id']}/void", json={"reason": "test over"})
    assert (energy(buyer)["available"], energy(buyer)["held"]) == (200, 0)
    await assert_ledger_ok()


async def test_a_merchant_answer_that_is_not_json_is_retried_not_a_server_error(
        client: httpx.Client, operator: Resident, partner: Partner, merchant: FakeMerchant, db: object) -> None:
    reward = _reward(operator, partner, merchant.url)
    buyer = _buyer(client, operator)
    merchant.answer(200, b"<html>502 Bad Gateway</html>")
    r = redeem(buyer, reward["id"], key="html")
    try:
        assert r.status_code == 201, r.text
        assert r.json()["state"] == "pending"
    finally:  # leave nothing pending for the next sweep
        stored = buyer.get("/v1/me/redemptions", params={"state": "pending"}).json()["items"]
        for item in stored:
            operator.post(f"/v1/admin/redemptions/{item['id']}/void", json={"reason": "test over"})
        await assert_ledger_ok()


async def test_the_sweep_counts_a_merchant_answer_that_is_not_json_as_a_failed_attempt(
        client: httpx.Client, operator: Resident, partner: Partner, merchant: FakeMerchant, sweep: Sweep) -> None:
    reward = _reward(operator, partner, merchant.url)
    buyer = _buyer(client, operator)
    merchant.answer(503)
    redemption_id = redeem(buyer, reward["id"]).json()["id"]
    merchant.answer(200, b"")
    try:
        await _due(redemption_id)
        await sweep()
        async with connection() as conn:
            assert await conn.fetchval("SELECT attempts FROM redemption WHERE id = $1", redemption_id) == 2
    finally:
        operator.post(f"/v1/admin/redemptions/{redemption_id}/void", json={"reason": "test over"})
        await assert_ledger_ok()


async def test_an_operator_voids_a_pending_redemption_once(
        client: httpx.Client, operator: Resident, partner: Partner, merchant: FakeMerchant, sweep: Sweep) -> None:
    reward = _reward(operator, partner, merchant.url)
    buyer = _buyer(client, operator)
    merchant.answer(503)
    redemption_id = redeem(buyer, reward["id"]).json()["id"]
    assert_problem(buyer.post(f"/v1/admin/redemptions/{redemption_id}/void", json={"reason": "mine"}), 403,
                   "operator-only")
    r = operator.post(f"/v1/admin/redemptions/{redemption_id}/void", json={"reason": "merchant-down"})
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["void_reason"]) == ("voided", "merchant-down")
    assert (energy(buyer)["available"], energy(buyer)["held"]) == (200, 0)
    assert _stock(client, reward["id"]) == 3

    again = operator.post(f"/v1/admin/redemptions/{redemption_id}/void", json={"reason": "twice"})
    assert again.status_code == 200 and again.json() == r.json(), again.text
    merchant.answer(200, {"voucher_code": "M-LATE"})
    await _due(redemption_id)
    await sweep()
    assert _state(buyer, redemption_id)["state"] == "voided" and len(merchant.calls) == 1
    assert (energy(buyer)["available"], energy(buyer)["held"]) == (200, 0)
    await assert_ledger_ok()
