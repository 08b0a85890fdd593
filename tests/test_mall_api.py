"""The redemption mall over HTTP, operators' side and residents' side.

Operators add rewards (each validation problem is an RFC 9457 problem naming its field), pause them, change
their price and move their stock; only operators may. Anyone can browse what is on offer (active, inside its
validity window, cheapest first). A funded resident redeems two-phase and idempotently: the price leaves
`available` once, through `held`, and the statement shows the reservation and the posting that resolves it;
refusals (sold out, not offered, limits, not enough energy) store nothing; a resident sees only their own
redemptions. Every scenario that moves energy ends with the ledger check.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.mall_support import assert_ledger_ok, energy, fund, new_reward, redeem, reward_body
from tests.support import Resident, assert_problem, register

VOUCHER = re.compile(r"^CW-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$")  # Crockford base32
MERCHANT_URL = "https://merchant.example/fulfil"


def _at(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def _funded(client: httpx.Client, operator: Resident, amount: int) -> Resident:
    resident = register(client)
    fund(operator, resident, amount)
    return resident


# -- operators ------------------------------------------------------------------------------------------------


def test_an_operator_adds_a_reward_in_both_languages(operator: Resident) -> None:
    body = reward_body(description_zh="任意站点单程", description_en="Any single ride", per_day_limit=2,
                       lifetime_limit=20, images=["https://cdn.example/metro.png"], valid_from=_at(-1),
                       valid_until=_at(30))
    r = operator.post("/v1/admin/rewards", json=body)
    assert r.status_code == 201, r.text
    got = r.json()
    assert got["code"] == body["code"] and isinstance(got["id"], int)
    assert got["title"] == {"zh-CN": "地铁单程票", "en": "Metro single ride"}
    assert got["description"] == {"zh-CN": "任意站点单程", "en": "Any single ride"}
    assert got["merchant"] == {"zh-CN": "北京地铁", "en": "Beijing Subway"}
    assert (got["price"], got["stock"], got["sold_out"]) == (100, 10, False)
    assert (got["per_day_limit"], got["lifetime_limit"]) == (2, 20)
    assert (got["fulfilment"], got["status"], got["images"]) == ("code", "active", ["https://cdn.example/metro.png"])


MERCHANT = {"fulfilment": "merchant", "merchant_url": MERCHANT_URL}


@pytest.mark.parametrize(("overrides", "status", "field"), [
    ({"code": "Metro Ride"}, 422, "code"),
    ({"code": "m"}, 422, "code"),
    ({"price": 0}, 400, "price"),
    ({"price": -5}, 400, "price"),
    ({"stock": -1}, 400, "stock"),
    ({"category": "tea"}, 400, "category"),
    ({"colour": "green"}, 400, "colour"),
    ({"fulfilment": "merchant"}, 422, "merchant_url"),
    ({"fulfilment": "merchant", "merchant_url": "http://merchant.example/fulfil"}, 422, "merchant_url"),
    (MERCHANT, 422, "partner_id"),
    ({**MERCHANT, "partner_id": str(uuid.uuid4())}, 422, "partner_id"),
    ({"valid_from": _at(2), "valid_until": _at(1)}, 422, "valid_until"),
    ({"valid_from": "2026-12-01T00:00:00"}, 422, "valid_from"),
    ({"images": ["http://cdn.example/metro.png"]}, 422, "images"),
    ({"fulfilment": "pool", "stock": 5}, 422, "stock"),
], ids=["upper-case-code", "short-code", "price-0", "negative-price", "negative-stock", "unknown-category",
        "unknown-field", "merchant-without-url", "merchant-url-http", "merchant-without-partner",
        "merchant-unknown-partner", "until-before-from", "time-without-offset", "image-not-https", "pool-with-stock"])
def test_a_reward_that_is_not_valid_is_refused_naming_the_field(
        operator: Resident, overrides: dict[str, Any], status: int, field: str) -> None:
    r = operator.post("/v1/admin/rewards", json=reward_body(**overrides))
    if status == 400:
        body = assert_problem(r, 400, "invalid-request")
        assert field in body["detail"], body
    else:
        assert assert_problem(r, 422, "invalid-reward")["field"] == field


def test_a_reward_code_is_taken_once(operator: Resident) -> None:
    first = new_reward(operator)
    assert_problem(operator.post("/v1/admin/rewards", json=reward_body(code=first["code"], price=5)), 409,
                   "reward-code-taken")


def test_only_operators_manage_rewards(client: httpx.Client, operator: Resident, resident: Resident) -> None:
    reward = new_reward(operator)
    path = f"/v1/admin/rewards/{reward['id']}"
    attempts = [
        resident.post("/v1/admin/rewards", json=reward_body()),
        resident.get("/v1/admin/rewards"),
        resident.patch(path, json={"status": "paused"}),
        resident.post(path + "/stock", json={"delta": 5}),
        resident.post(path + "/vouchers", json={"codes": ["X-1"]}),
        resident.post("/v1/admin/redemptions/1/void", json={"reason": "mine"}),
    ]
    for r in attempts:
        assert_problem(r, 403, "operator-only")
    assert_problem(client.post("/v1/admin/rewards", json=reward_body()), 401)
    assert operator.get(f"/v1/mall/rewards/{reward['id']}").json()["status"] == "active"


async def test_a_paused_reward_cannot_be_redeemed_and_a_new_price_is_what_it_costs(
        client: httpx.Client, operator: Resident, db: object) -> None:
    reward = new_reward(operator, price=100)
    buyer = _funded(client, operator, 500)
    path = f"/v1/admin/rewards/{reward['id']}"
    paused = operator.patch(path, json={"status": "paused"})
    assert paused.status_code == 200 and paused.json()["status"] == "paused", paused.text
    assert reward["id"] not in {r["id"] for r in client.get("/v1/mall/rewards").json()}
    assert_problem(redeem(buyer, reward["id"]), 409, "reward-not-offered")

    changed = operator.patch(path, json={"status": "active", "price": 150, "title_en": "Metro ride (peak)"})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["price"], changed.json()["title"]["en"]) == (150, "Metro ride (peak)")
    listed = {r["id"]: r for r in client.get("/v1/mall/rewards").json()}
    assert listed[reward["id"]]["price"] == 150
    bought = redeem(buyer, reward["id"])
    assert bought.status_code == 201 and bought.json()["price"] == 150, bought.text
    assert energy(buyer)["available"] == 350
    await assert_ledger_ok()


def test_a_change_is_checked_like_a_new_reward(operator: Resident) -> None:
    reward = new_reward(operator, valid_from=_at(-1), valid_until=_at(10))
    path = f"/v1/admin/rewards/{reward['id']}"
    assert_problem(operator.patch(path, json={"code": "another-code"}), 400, "invalid-request")
    assert_problem(operator.patch(path, json={"stock": 99}), 400, "invalid-request")
    assert_problem(operator.patch(path, json={"price": 0}), 400, "invalid-request")
    assert operator.patch(path, json={"valid_until": _at(-2)}).json()["field"] == "valid_until"
    assert operator.patch(path, json={"images": ["ftp://cdn.example/a.png"]}).json()["field"] == "images"
    assert_problem(operator.patch("/v1/admin/rewards/987654321", json={"price": 5}), 404, "reward-not-found")
    assert operator.get(f"/v1/mall/rewards/{reward['id']}").json()["price"] == reward["price"]


def test_stock_is_added_and_withdrawn_but_never_below_zero(operator: Resident) -> None:
    reward = new_reward(operator, stock=10)
    path = f"/v1/admin/rewards/{reward['id']}/stock"
    added = operator.post(path, json={"delta": 5})
    assert added.status_code == 200 and added.json()["stock"] == 15, added.text
    assert_problem(operator.post(path, json={"delta": -16}), 409, "stock-too-low")
    emptied = operator.post(path, json={"delta": -15}).json()
    assert (emptied["stock"], emptied["sold_out"]) == (0, True)
    assert_problem(operator.post(path, json={"delta": -1}), 409, "stock-too-low")

    unlimited = new_reward(operator, stock=None)
    assert (unlimited["stock"], unlimited["sold_out"]) == (None, False)
    assert_problem(operator.post(f"/v1/admin/rewards/{unlimited['id']}/stock", json={"delta": 3}), 409,
                   "stock-unlimited")
    assert_problem(operator.post("/v1/admin/rewards/987654321/stock", json={"delta": 1}), 404, "reward-not-found")


def test_the_operators_list_holds_every_reward_offered_or_not(operator: Resident) -> None:
    active = new_reward(operator)
    paused = new_reward(operator, status="paused")
    retired = new_reward(operator, status="retired")
    expired = new_reward(operator, valid_from=_at(-10), valid_until=_at(-1))
    listed = {r["id"]: r["status"] for r in operator.get("/v1/admin/rewards").json()}
    assert {active["id"]: "active", paused["id"]: "paused", retired["id"]: "retired",
            expired["id"]: "active"}.items() <= listed.items()


# -- the public catalogue -------------------------------------------------------------------------------------


def test_the_catalogue_shows_only_rewards_on_offer_cheapest_first(client: httpx.Client, operator: Resident) -> None:
    dear = new_reward(operator, price=7000, stock=3)
    cheap = new_reward(operator, price=30, stock=0)
    windowed = new_reward(operator, price=500, stock=None, valid_from=_at(-1), valid_until=_at(1))
    hidden = [new_reward(operator, status="paused"), new_reward(operator, status="retired"),
              new_reward(operator, valid_from=_at(-3), valid_until=_at(-1)), new_reward(operator, valid_from=_at(1))]
    r = client.get("/v1/mall/rewards")  # no token
    assert r.status_code == 200, r.text
    items = r.json()
    assert [i["price"] for i in items] == sorted(i["price"] for i in items)
    assert all(i["status"] == "active" for i in items)
    mine = [i for i in items if i["id"] in {dear["id"], cheap["id"], windowed["id"]}]
    assert [i["id"] for i in mine] == [cheap["id"], windowed["id"], dear["id"]]
    assert [(i["stock"], i["sold_out"]) for i in mine] == [(0, True), (None, False), (3, False)]
    assert mine[0]["title"] == {"zh-CN": "地铁单程票", "en": "Metro single ride"}
    assert not {h["id"] for h in hidden} & {i["id"] for i in items}


def test_the_catalogue_filters_by_category(client: httpx.Client, operator: Resident) -> None:
    coffee = new_reward(operator, category="coffee", title_zh="拿铁", title_en="Latte", merchant_zh="咖啡馆",
                        merchant_en="Cafe")
    metro = new_reward(operator, category="transit")
    r = client.get("/v1/mall/rewards", params={"category": "coffee"})
    assert r.status_code == 200, r.text
    assert {i["category"] for i in r.json()} == {"coffee"}
    ids = {i["id"] for i in r.json()}
    assert coffee["id"] in ids and metro["id"] not in ids


def test_an_unknown_category_is_a_documented_400(client: httpx.Client) -> None:
    r = client.get("/v1/mall/rewards", params={"category": "tea"})
    body = assert_problem(r, 400)
    assert "category" in body["detail"] or "category" in str(body.get("errors")), body
    documented = client.get("/schema/openapi.json").json()["paths"]["/v1/mall/rewards"]["get"]["responses"]
    assert "400" in documented, sorted(documented)


def test_one_reward_is_shown_unless_it_is_retired_or_unknown(client: httpx.Client, operator: Resident) -> None:
    reward = new_reward(operator)
    got = client.get(f"/v1/mall/rewards/{reward['id']}")
    public = {k: v for k, v in reward.items() if k not in ("partner_id", "merchant_url", "voucher_valid_days",
                                                          "created_at", "updated_at")}
    assert got.status_code == 200 and got.json() == public, got.text  # what operators set stays with them
    retired = new_reward(operator, status="retired")
    assert_problem(client.get(f"/v1/mall/rewards/{retired['id']}"), 404, "reward-not-found")
    assert_problem(client.get("/v1/mall/rewards/987654321"), 404, "reward-not-found")
    assert_problem(client.get("/v1/mall/rewards/0"), 404, "reward-not-found")
