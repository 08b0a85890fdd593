"""Redeeming energy in the mall over HTTP, with the rewards we fulfil ourselves (issued codes, loaded pools).

A funded resident's redemption reserves the price (`available` → `held`) and posts it (`held` → the mall) in
the same request, with a CW-XXXX-XXXX-XXXX voucher; the statement shows both transfers, the posting resolving
the reservation. An `Idempotency-Key` replays the stored redemption (the energy moves once) and may not be
reused for another reward; a refused request (not enough energy, sold out, not offered, a limit) stores
nothing, so its key works later. A resident pages through their own redemptions and never sees another's.
A pool reward sells exactly the codes loaded, each once. Every scenario ends with the ledger check.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from tests.mall_support import assert_ledger_ok, energy, fund, new_reward, redeem
from tests.support import Resident, assert_problem, register

VOUCHER = re.compile(r"^CW-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$")  # Crockford base32


def _funded(client: httpx.Client, operator: Resident, amount: int) -> Resident:
    resident = register(client)
    fund(operator, resident, amount)
    return resident


def _stock(client: httpx.Client, reward_id: int) -> int | None:
    return client.get(f"/v1/mall/rewards/{reward_id}").json()["stock"]


def _mine(resident: Resident, **params: object) -> httpx.Response:
    return resident.get("/v1/me/redemptions", params=params)


async def test_a_funded_resident_redeems_and_gets_a_voucher(client: httpx.Client, operator: Resident,
                                                            db: object) -> None:
    reward = new_reward(operator, price=120, stock=5, voucher_valid_days=7)
    buyer = _funded(client, operator, 500)
    r = redeem(buyer, reward["id"], key="first-ride")
    assert r.status_code == 201, r.text
    got = r.json()
    assert (got["state"], got["reward_id"], got["price"], got["void_reason"]) == ("fulfilled", reward["id"], 120, None)
    assert VOUCHER.match(got["voucher_code"]), got["voucher_code"]
    assert got["reward"] == {"zh-CN": "地铁单程票", "en": "Metro single ride"}
    assert got["merchant"] == {"zh-CN": "北京地铁", "en": "Beijing Subway"}
    expires = datetime.fromisoformat(got["voucher_expires_at"])
    assert timedelta(days=6) < expires - datetime.now(UTC) <= timedelta(days=7)
    assert got["resolved_at"] is not None

    wallet = energy(buyer)
    assert (wallet["available"], wallet["held"], wallet["lifetime"]["redeemed"]) == (380, 0, 120)
    assert _stock(client, reward["id"]) == 4
    assert buyer.get(f"/v1/me/redemptions/{got['id']}").json() == got

    statement = buyer.get("/v1/me/energy/transfers").json()["items"]
    by_kind = {t["kind"]: t for t in statement}
    reserved, posted = by_kind["redemption.reserved"], by_kind["redemption.posted"]
    assert (reserved["amount"], reserved["effect"]) == (120, {"available": -120, "balls": 0, "held": 120})
    assert (posted["amount"], posted["effect"]) == (120, {"available": 0, "balls": 0, "held": -120})
    assert posted["resolves"] == reserved["id"] and reserved["resolves"] is None
    assert posted["id"] > reserved["id"]
    assert posted["description"]["en"] == "Redeemed Metro single ride"
    assert "地铁单程票" in reserved["description"]["zh-CN"]
    await assert_ledger_ok()


async def test_the_same_key_returns_the_same_redemption_and_takes_energy_once(
        client: httpx.Client, operator: Resident, db: object) -> None:
    reward = new_reward(operator, price=100, stock=5)
    other = new_reward(operator, price=10)
    buyer = _funded(client, operator, 300)
    first = redeem(buyer, reward["id"], key="k-1")
    again = redeem(buyer, reward["id"], key="k-1")
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json() == first.json()
    assert energy(buyer)["available"] == 200
    assert _stock(client, reward["id"]) == 4
    assert [i["id"] for i in _mine(buyer).json()["items"]] == [first.json()["id"]]

    assert_problem(redeem(buyer, other["id"], key="k-1"), 422, "idempotency-key-reused")
    assert energy(buyer)["available"] == 200

    neighbour = _funded(client, operator, 300)  # keys are the caller's own: the same key is a new purchase
    theirs = redeem(neighbour, reward["id"], key="k-1")
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"], theirs.text
    assert (energy(buyer)["available"], energy(neighbour)["available"]) == (200, 200)
    await assert_ledger_ok()


async def test_a_refused_redemption_stores_nothing_and_its_key_works_after_funding(
        client: httpx.Client, operator: Resident, db: object) -> None:
    reward = new_reward(operator, price=250, stock=3)
    buyer = _funded(client, operator, 100)
    refused = assert_problem(redeem(buyer, reward["id"], key="bike-pass"), 409, "insufficient-energy")
    assert (refused["price"], refused["available"]) == (250, 100)
    assert _mine(buyer).json()["items"] == []
    assert (energy(buyer)["available"], energy(buyer)["held"]) == (100, 0)
    assert _stock(client, reward["id"]) == 3

    fund(operator, buyer, 200)
    later = redeem(buyer, reward["id"], key="bike-pass")
    assert later.status_code == 201 and later.json()["state"] == "fulfilled", later.text
    assert energy(buyer)["available"] == 50
    await assert_ledger_ok()


def test_an_idempotency_key_longer_than_120_characters_is_refused(operator: Resident, resident: Resident) -> None:
    reward = new_reward(operator, price=1)
    assert_problem(redeem(resident, reward["id"], key="k" * 121), 400)
    assert_problem(resident.post("/v1/me/redemptions", json={"reward_id": reward["id"], "count": 2}), 400)


async def test_the_last_item_goes_to_one_buyer_and_the_next_hears_sold_out(
        client: httpx.Client, operator: Resident, db: object) -> None:
    reward = new_reward(operator, price=80, stock=1)
    first, second = _funded(client, operator, 100), _funded(client, operator, 100)
    assert redeem(first, reward["id"]).status_code == 201
    assert_problem(redeem(second, reward["id"]), 409, "sold-out")
    assert (energy(second)["available"], energy(second)["held"]) == (100, 0)
    shown = client.get(f"/v1/mall/rewards/{reward['id']}").json()
    assert (shown["stock"], shown["sold_out"]) == (0, True)
    operator.post(f"/v1/admin/rewards/{reward['id']}/stock", json={"delta": 1})
    assert redeem(second, reward["id"]).status_code == 201
    await assert_ledger_ok()


async def test_a_reward_not_on_offer_is_refused_and_takes_nothing(
        client: httpx.Client, operator: Resident, db: object) -> None:
    buyer = _funded(client, operator, 1000)
    now = datetime.now(UTC)
    paused = new_reward(operator, status="paused")
    ended = new_reward(operator, valid_from=(now - timedelta(days=3)).isoformat(),
                       valid_until=(now - timedelta(days=1)).isoformat())
    upcoming = new_reward(operator, valid_from=(now + timedelta(days=1)).isoformat())
    retired = new_reward(operator, status="retired")
    for reward in (paused, ended, upcoming):
        assert_problem(redeem(buyer, reward["id"]), 409, "reward-not-offered")
    assert_problem(redeem(buyer, retired["id"]), 404, "reward-not-found")
    assert_problem(redeem(buyer, 987654321), 404, "reward-not-found")
    assert (energy(buyer)["available"], energy(buyer)["held"]) == (1000, 0)
    assert [_stock(client, r["id"]) for r in (paused, ended, upcoming)] == [10, 10, 10]
    assert _mine(buyer).json()["items"] == []
    await assert_ledger_ok()


async def test_daily_and_lifetime_limits_are_per_resident(client: httpx.Client, operator: Resident,
                                                          db: object) -> None:
    daily = new_reward(operator, price=10, per_day_limit=1)
    lifetime = new_reward(operator, price=10, lifetime_limit=2, per_day_limit=5)
    buyer = _funded(client, operator, 1000)
    assert redeem(buyer, daily["id"]).status_code == 201
    assert_problem(redeem(buyer, daily["id"]), 409, "daily-limit-reached")
    assert [redeem(buyer, lifetime["id"]).status_code for _ in range(2)] == [201, 201]
    assert_problem(redeem(buyer, lifetime["id"]), 409, "lifetime-limit-reached")
    assert energy(buyer)["available"] == 1000 - 3 * 10

    neighbour = _funded(client, operator, 100)  # my limits are mine
    assert redeem(neighbour, daily["id"]).status_code == 201
    assert redeem(neighbour, lifetime["id"]).status_code == 201
    await assert_ledger_ok()


async def test_my_redemptions_are_listed_newest_first_with_a_state_filter(
        client: httpx.Client, operator: Resident, db: object) -> None:
    reward = new_reward(operator, price=10, stock=None)
    buyer = _funded(client, operator, 100)
    ids = [redeem(buyer, reward["id"]).json()["id"] for _ in range(3)]
    first = _mine(buyer, limit=2).json()
    assert [i["id"] for i in first["items"]] == ids[::-1][:2] and first["next_cursor"]
    assert all(i["state"] == "fulfilled" and VOUCHER.match(i["voucher_code"]) for i in first["items"])
    assert _mine(buyer, limit=3).json()["next_cursor"] is not None  # a full page may have more
    assert _mine(buyer, limit=4).json()["next_cursor"] is None

    assert [i["id"] for i in _mine(buyer, state="fulfilled").json()["items"]] == ids[::-1]
    assert _mine(buyer, state="pending").json()["items"] == []
    assert _mine(buyer, state="voided").json()["items"] == []
    assert_problem(_mine(buyer, state="lost"), 400)
    assert_problem(_mine(buyer, limit=0), 422, "invalid-limit")
    assert_problem(_mine(buyer, limit=101), 422, "invalid-limit")
    assert_problem(_mine(buyer, cursor="not-a-cursor"), 422, "invalid-cursor")
    await assert_ledger_ok()


def test_the_next_cursor_opens_the_next_page_of_my_redemptions(client: httpx.Client, operator: Resident) -> None:
    reward = new_reward(operator, price=10, stock=None)
    buyer = _funded(client, operator, 100)
    ids = [redeem(buyer, reward["id"]).json()["id"] for _ in range(3)]
    first = _mine(buyer, limit=2).json()
    second = _mine(buyer, limit=2, cursor=first["next_cursor"])
    assert second.status_code == 200, second.text
    assert [i["id"] for i in second.json()["items"]] == ids[:1] and second.json()["next_cursor"] is None
    filtered = _mine(buyer, limit=1, state="fulfilled").json()
    assert [i["id"] for i in _mine(buyer, limit=5, state="fulfilled", cursor=filtered["next_cursor"]).json()["items"]] \
        == ids[::-1][1:]


def test_another_residents_redemption_is_not_found(client: httpx.Client, operator: Resident) -> None:
    reward = new_reward(operator, price=10)
    owner, other = _funded(client, operator, 50), register(client)
    mine = redeem(owner, reward["id"]).json()
    assert owner.get(f"/v1/me/redemptions/{mine['id']}").json()["voucher_code"] == mine["voucher_code"]
    body = assert_problem(other.get(f"/v1/me/redemptions/{mine['id']}"), 404, "redemption-not-found")
    assert mine["voucher_code"] not in str(body)
    assert _mine(other).json()["items"] == []
    assert_problem(owner.get("/v1/me/redemptions/987654321"), 404, "redemption-not-found")
    assert_problem(client.get(f"/v1/me/redemptions/{mine['id']}"), 401)


async def test_a_pool_reward_sells_exactly_the_codes_loaded(client: httpx.Client, operator: Resident,
                                                            db: object) -> None:
    pool = new_reward(operator, fulfilment="pool", stock=None, price=20, category="bike", title_en="Bike pass")
    assert (pool["stock"], pool["sold_out"], pool["fulfilment"]) == (0, True, "pool")
    buyer = _funded(client, operator, 200)
    assert_problem(redeem(buyer, pool["id"]), 409, "sold-out")

    tag = uuid.uuid4().hex[:6]
    codes = [f"BIKE-{tag}-{n}" for n in "ABC"]
    path = f"/v1/admin/rewards/{pool['id']}/vouchers"
    loaded = operator.post(path, json={"codes": codes[:2]})
    assert loaded.status_code == 200, loaded.text
    assert (loaded.json()["loaded"], loaded.json()["repeated"], loaded.json()["reward"]["stock"]) == (2, 0, 2)
    again = operator.post(path, json={"codes": [codes[1], f" {codes[2]} "]}).json()
    assert (again["loaded"], again["repeated"], again["reward"]["stock"]) == (1, 1, 3)

    got = [redeem(buyer, pool["id"]).json() for _ in range(3)]
    assert {g["state"] for g in got} == {"fulfilled"}
    assert sorted(g["voucher_code"] for g in got) == codes
    assert_problem(redeem(buyer, pool["id"]), 409, "sold-out")
    assert energy(buyer)["available"] == 200 - 3 * 20

    assert_problem(operator.post(f"/v1/admin/rewards/{pool['id']}/stock", json={"delta": 5}), 409, "stock-is-codes")
    coded = new_reward(operator)
    assert_problem(operator.post(f"/v1/admin/rewards/{coded['id']}/vouchers", json={"codes": ["X"]}), 409,
                   "not-a-pool-reward")
    assert_problem(operator.post("/v1/admin/rewards/987654321/vouchers", json={"codes": ["X"]}), 404,
                   "reward-not-found")
    assert_problem(operator.post(path, json={"codes": []}), 400)
    await assert_ledger_ok()


async def test_voiding_a_fulfilled_redemption_changes_nothing(client: httpx.Client, operator: Resident,
                                                             db: object) -> None:
    reward = new_reward(operator, price=40, stock=2)
    buyer = _funded(client, operator, 100)
    done = redeem(buyer, reward["id"]).json()
    r = operator.post(f"/v1/admin/redemptions/{done['id']}/void", json={"reason": "changed my mind"})
    assert r.status_code == 200, r.text
    assert r.json() == done
    assert (energy(buyer)["available"], energy(buyer)["held"]) == (60, 0)
    assert _stock(client, reward["id"]) == 1
    assert_problem(operator.post("/v1/admin/redemptions/987654321/void", json={"reason": "x"}), 404,
                   "redemption-not-found")
    assert_problem(operator.post(f"/v1/admin/redemptions/{done['id']}/void", json={"reason": ""}), 400)
    await assert_ledger_ok()
