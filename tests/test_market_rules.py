"""The carbon market over HTTP, part two: a lot's and a sale's lifecycle (cancel releases entries; a pending sale
blocks cancelling; a cancelled sale leaves the lot open for another; a settled lot is never sold or cancelled again;
reversals after pooling block the sale), idempotency by exchange reference and Idempotency-Key, closed programmes,
payout in energy at the published rate, and every refusal: operators only, problem+json, never a 500.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

from tests.ledger_support import Kit, assert_ledger_ok, make_kit
from tests.market_http_support import ADMIN, eligible, make_lot, member, programme, sell, settle
from tests.market_support import mg_of, opt_out_everyone
from tests.support import Resident, assert_problem, register
from wallet.db import connection
from wallet.ledger.allocation import largest_remainder

HUGE = 2**63


@pytest.fixture(scope="module")
async def kit(passwords: Any, settings: Any, db: object) -> Kit:
    return await make_kit(passwords, settings)


@pytest.fixture(autouse=True)
async def clean_slate(db: object) -> None:
    await opt_out_everyone()


def lot_of(operator: Resident, lot_id: int) -> dict[str, Any]:
    r = operator.get(f"{ADMIN}/lots/{lot_id}")
    assert r.status_code == 200, r.text
    return r.json()


def sale_body(ref: str, price: int = 8_500, buyer: str = "某某科技有限公司") -> dict[str, Any]:
    return {"buyer": buyer, "exchange_ref": ref, "sale_date": "2026-11-20", "price_per_tonne_fen": price}


def cancel_lot(operator: Resident, lot_id: int) -> httpx.Response:
    return operator.post(f"{ADMIN}/lots/{lot_id}/cancel", json={"reason": "Exchange asked for a smaller lot"})


# -- lifecycle -------------------------------------------------------------------------------------------------------


async def test_cancelling_an_open_lot_releases_its_entries_to_the_next_lot(
        client: httpx.Client, operator: Resident, kit: Kit) -> None:
    m = await member(client, kit, [(1200, 2), (1000, 1)])
    p = programme(operator)
    first = make_lot(operator, p["code"], 1)
    assert eligible(operator, p["code"])["entries"] == 1
    r = cancel_lot(operator, first["id"])
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["cancel_reason"]) == ("cancelled", "Exchange asked for a smaller lot")
    assert cancel_lot(operator, first["id"]).json() == r.json()  # cancelling again changes nothing
    assert eligible(operator, p["code"])["entries"] == 2
    assert_problem(operator.post(f"{ADMIN}/lots/{first['id']}/sales", json=sale_body("REF-CANCELLED")), 409,
                   "lot-cancelled")

    second = make_lot(operator, p["code"], mg_of(2200))
    body = operator.get(f"{ADMIN}/lots/{second['id']}/manifest.json").json()
    assert [e["entry"] for e in body["entries"]] == [e["id"] for e in m.entries]
    assert client.get(f"/v1/market/lots/{first['id']}").json()["state"] == "cancelled"
    listed = operator.get(f"{ADMIN}/lots", params={"state": "cancelled", "before": first["id"] + 1, "limit": 1})
    assert [x["id"] for x in listed.json()] == [first["id"]]
    await assert_ledger_ok()


async def test_a_pending_sale_holds_the_lot_until_it_is_cancelled_and_another_sale_settles(
        client: httpx.Client, operator: Resident, kit: Kit) -> None:
    await member(client, kit, [(4000, 1)])
    p = programme(operator)
    lot = make_lot(operator, p["code"], 1)
    fell_through = sell(operator, lot["id"], price=9_000)
    assert lot_of(operator, lot["id"])["state"] == "pending"
    assert_problem(cancel_lot(operator, lot["id"]), 409, "sale-pending")
    assert_problem(operator.post(f"{ADMIN}/lots/{lot['id']}/sales", json=sale_body("REF-WHILE-PENDING")), 409,
                   "sale-pending")

    r = operator.post(f"{ADMIN}/sales/{fell_through['id']}/cancel", json={"reason": "Buyer withdrew"})
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
    assert lot_of(operator, lot["id"])["state"] == "open"
    assert_problem(operator.post(f"{ADMIN}/sales/{fell_through['id']}/settle"), 409, "sale-cancelled")

    sale = sell(operator, lot["id"], price=8_000)
    done = settle(operator, sale["id"])
    assert done["gross_fen"] == mg_of(4000) * 8_000 // 10**9 == done["residents_fen"]
    assert operator.post(f"{ADMIN}/sales/{sale['id']}/settle").json() == done  # a replay pays nothing twice
    assert_problem(operator.post(f"{ADMIN}/sales/{sale['id']}/cancel", json={"reason": "x"}), 409, "sale-settled")
    assert_problem(operator.post(f"{ADMIN}/lots/{lot['id']}/sales", json=sale_body("REF-AGAIN")), 409, "lot-sold")
    assert_problem(cancel_lot(operator, lot["id"]), 409, "lot-sold")
    sales = operator.get(f"{ADMIN}/lots/{lot['id']}/sales").json()
    assert [(s["id"], s["state"]) for s in sales] == [(fell_through["id"], "cancelled"), (sale["id"], "settled")]
    assert operator.get(f"{ADMIN}/sales/{sale['id']}").json() == done
    assert lot_of(operator, lot["id"])["state"] == "settled"
    await assert_ledger_ok()


async def test_recording_a_sale_is_idempotent_by_its_exchange_reference(
        client: httpx.Client, operator: Resident, kit: Kit) -> None:
    await member(client, kit, [(2000, 1), (2100, 1)])
    p = programme(operator)
    lot, other = make_lot(operator, p["code"], 1), make_lot(operator, p["code"], 1)
    path = f"{ADMIN}/lots/{lot['id']}/sales"
    ref = f"CBEEX-{lot['id']}-IDEM"
    first = operator.post(path, json=sale_body(ref))
    assert first.status_code == 201, first.text
    again = operator.post(path, json=sale_body(ref))
    assert again.status_code == 200 and again.json() == first.json()
    assert_problem(operator.post(path, json=sale_body(ref, price=8_501)), 409, "exchange-ref-used")
    assert_problem(operator.post(path, json=sale_body(ref, buyer="另一家公司")), 409, "exchange-ref-used")
    assert_problem(operator.post(f"{ADMIN}/lots/{other['id']}/sales", json=sale_body(ref)), 409, "exchange-ref-used")
    assert lot_of(operator, other["id"])["state"] == "open"

    settled = settle(operator, first.json()["id"])
    replay = operator.post(path, json=sale_body(ref))
    assert replay.status_code == 200 and replay.json() == settled
    await assert_ledger_ok()


async def test_a_lot_holding_an_entry_reversed_after_pooling_cannot_be_sold(
        client: httpx.Client, operator: Resident, kit: Kit) -> None:
    m = await member(client, kit, [(1000, 2), (1500, 1)])
    wrong, right = m.entries
    p = programme(operator)
    lot = make_lot(operator, p["code"], mg_of(2500))
    r = operator.post(f"/v1/admin/book/entries/{wrong['id']}/reverse", json={"reason": "Partner retracted it"})
    assert r.status_code == 201, r.text
    assert lot_of(operator, lot["id"])["reversed_mg"] == wrong["reduction_mg"]
    assert_problem(operator.post(f"{ADMIN}/lots/{lot['id']}/sales", json=sale_body(f"REV-{lot['id']}")), 409,
                   "lot-has-reversals")
    mine = m.get(client, f"/v1/me/market/lots/{lot['id']}").json()
    assert [(e["entry_id"], e["reversed"]) for e in mine["entries"]] == [(wrong["id"], True), (right["id"], False)]

    assert cancel_lot(operator, lot["id"]).status_code == 200
    again = make_lot(operator, p["code"], 1)
    assert (again["total_mg"], again["entries"], again["reversed_mg"]) == (right["reduction_mg"], 1, 0)
    settle(operator, sell(operator, again["id"])["id"])
    await assert_ledger_ok()


async def test_a_closed_programme_makes_no_new_lots_but_its_lots_still_sell(
        client: httpx.Client, operator: Resident, kit: Kit) -> None:
    await member(client, kit, [(3000, 1), (3100, 1)])
    p = programme(operator)
    lot = make_lot(operator, p["code"], 1)
    r = operator.post(f"{ADMIN}/programmes/{p['code']}/close")
    assert r.status_code == 200 and r.json()["status"] == "closed", r.text
    assert client.get(f"/v1/market/programmes/{p['code']}").json()["status"] == "closed"
    assert_problem(operator.post(f"{ADMIN}/lots", json={"programme": p["code"], "target_mg": 1}), 409,
                   "programme-closed")
    settle(operator, sell(operator, lot["id"])["id"])
    assert_problem(operator.post(f"{ADMIN}/programmes/no-such-programme/close"), 404, "programme-not-found")
    await assert_ledger_ok()


async def test_lot_creation_is_idempotent_by_key(client: httpx.Client, operator: Resident, kit: Kit) -> None:
    await member(client, kit, [(2000, 1), (2100, 1)])
    p = programme(operator)
    body = {"programme": p["code"], "target_mg": 1, "note": "for CBEEX"}
    key = {"Idempotency-Key": f"lot-{p['code']}"}
    first = operator.post(f"{ADMIN}/lots", json=body, headers=key)
    assert first.status_code == 201, first.text
    again = operator.post(f"{ADMIN}/lots", json=body, headers=key)
    assert again.status_code == 200 and again.json() == first.json()
    assert_problem(operator.post(f"{ADMIN}/lots", json={**body, "target_mg": 2}, headers=key), 422,
                   "idempotency-key-reused")
    other = programme(operator)
    assert_problem(operator.post(f"{ADMIN}/lots", json={**body, "programme": other["code"]}, headers=key), 422,
                   "idempotency-key-reused")
    assert eligible(operator, p["code"])["entries"] == 1  # the repeats pooled nothing more


async def test_the_same_idempotency_key_with_another_note_is_refused(
        client: httpx.Client, operator: Resident, kit: Kit) -> None:
    await member(client, kit, [(2000, 1)])
    p = programme(operator)
    key = {"Idempotency-Key": f"note-{p['code']}"}
    first = operator.post(f"{ADMIN}/lots", json={"programme": p["code"], "target_mg": 1, "note": "first"},
                          headers=key)
    assert first.status_code == 201, first.text
    assert_problem(operator.post(f"{ADMIN}/lots", json={"programme": p["code"], "target_mg": 1, "note": "second"},
                                 headers=key), 422, "idempotency-key-reused")


# -- payout in energy ------------------------------------------------------------------------------------------------


async def test_a_programme_paying_in_energy_credits_available_energy_at_its_rate(
        client: httpx.Client, operator: Resident, kit: Kit) -> None:
    a = await member(client, kit, [(7000, 2)])
    b = await member(client, kit, [(3000, 1)])
    p = programme(operator, payout="energy", energy_per_fen=25)
    assert (p["payout"], p["energy_per_fen"]) == ("energy", 25)
    before = [m.get(client, "/v1/me/energy").json()["available"] for m in (a, b)]
    lot = make_lot(operator, p["code"], mg_of(10_000))
    sale = settle(operator, sell(operator, lot["id"], price=12_345)["id"])
    gross = mg_of(10_000) * 12_345 // 10**9
    shares = largest_remainder(gross, [mg_of(7000), mg_of(3000)])
    assert sale["residents_fen"] == gross == sum(shares)

    for m, start, fen in zip((a, b), before, shares, strict=True):
        assert m.get(client, "/v1/me/energy").json()["available"] == start + fen * 25
        mine = m.get(client, "/v1/me/market").json()
        assert (mine["balance_fen"], mine["received_energy"]) == (0, fen * 25), mine
        (summary,) = mine["lots"]
        assert (summary["payout"], summary["energy"]) == ("energy", fen * 25)
        detail = m.get(client, f"/v1/me/market/lots/{lot['id']}").json()
        assert sum(e["energy"] for e in detail["entries"]) == fen * 25
    assert client.get(f"/v1/market/lots/{lot['id']}").json()["energy_per_fen"] == 25
    await assert_ledger_ok()


# -- authorization and validation ------------------------------------------------------------------------------------


def admin_routes(code: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("POST", f"{ADMIN}/programmes", {"code": "x"}), ("POST", f"{ADMIN}/programmes/{code}/close", None),
        ("GET", f"{ADMIN}/eligible?programme={code}", None),
        ("POST", f"{ADMIN}/lots", {"programme": code, "target_mg": 1}), ("GET", f"{ADMIN}/lots", None),
        ("GET", f"{ADMIN}/lots/1", None), ("GET", f"{ADMIN}/lots/1/manifest.json", None),
        ("GET", f"{ADMIN}/lots/1/manifest.csv", None), ("POST", f"{ADMIN}/lots/1/cancel", {"reason": "x"}),
        ("GET", f"{ADMIN}/lots/1/sales", None), ("POST", f"{ADMIN}/lots/1/sales", sale_body("AUTHZ")),
        ("GET", f"{ADMIN}/sales/1", None), ("POST", f"{ADMIN}/sales/1/settle", None),
        ("POST", f"{ADMIN}/sales/1/cancel", {"reason": "x"}),
    ]


async def test_every_admin_route_wants_an_operators_token(client: httpx.Client, operator: Resident) -> None:
    p = programme(operator)
    resident = register(client)
    for method, path, body in admin_routes(p["code"]):
        assert_problem(client.request(method, path, json=body), 401)
        assert_problem(client.request(method, path, json=body, headers=resident.headers), 403, "operator-only")
    for method, path in [("GET", "/v1/me/market"), ("GET", "/v1/me/market/consent"),
                         ("PUT", "/v1/me/market/consent"), ("GET", "/v1/me/market/lots/1")]:
        assert_problem(client.request(method, path, json={"opted_in": True} if method == "PUT" else None), 401)
    for path in ("/v1/market/programmes", f"/v1/market/programmes/{p['code']}", "/v1/market/lots"):
        assert client.get(path).status_code == 200, path
    assert client.get(f"{ADMIN}/programmes/{p['code']}/close").status_code == 405
    assert programme_status(operator, p["code"]) == "open"  # nothing a refused request did stuck


def programme_status(operator: Resident, code: str) -> str:
    return operator.get(f"/v1/market/programmes/{code}").json()["status"]


async def test_bad_programme_bodies_are_refused_with_problem_details(operator: Resident) -> None:
    base = programme(operator)
    fields = {"code": "bad-one", "name_zh": "项目", "name_en": "Programme", "exchange_zh": "交易所",
              "exchange_en": "Exchange", "behaviours": ["clothes_recycling"], "period_from": "2026-11-01",
              "period_to": "2026-11-30"}
    invalid: list[tuple[dict[str, Any], str]] = [
        ({"behaviours": ["teleporting"]}, "behaviours"), ({"behaviours": ["clothes_recycling@2"]}, "behaviours"),
        ({"behaviours": ["clothes_recycling@0"]}, "behaviours"), ({"behaviours": ["Clothes Recycling"]}, "behaviours"),
        ({"methodology_releases": ["2025.9"]}, "methodology_releases"),
        ({"period_from": "2026-12-01"}, "period_from"), ({"period_to": "2030-01-01"}, "period_to"),
        ({"payout": "energy"}, "energy_per_fen"), ({"energy_per_fen": 10}, "energy_per_fen"),
        ({"payout": "energy", "energy_per_fen": 0}, "energy_per_fen"),
        ({"payout": "energy", "energy_per_fen": 1_000_001}, "energy_per_fen"),
        ({"benefit_ppm": 1_000_001, "benefit_name_zh": "树", "benefit_name_en": "Trees"}, "benefit_ppm"),
        ({"benefit_ppm": HUGE, "benefit_name_zh": "树", "benefit_name_en": "Trees"}, "benefit_ppm"),
        ({"benefit_ppm": -1}, "benefit_ppm"), ({"benefit_ppm": 10_000}, "benefit_name_en"),
        ({"benefit_ppm": 10_000, "benefit_name_zh": "树", "benefit_name_en": "  "}, "benefit_name_en"),
        ({"benefit_url": "http://example.org"}, "benefit_url"), ({"settle_days": -1}, "settle_days"),
        ({"settle_days": 366}, "settle_days"), ({"code": "Bad Code"}, "code"), ({"name_en": "  "}, "name_en"),
    ]
    for change, field in invalid:
        body = assert_problem(operator.post(f"{ADMIN}/programmes", json={**fields, **change}), 422,
                              "invalid-programme")
        assert body["field"] == field, (change, body)
    malformed: list[dict[str, Any]] = [
        {"trust_tiers": ["gold"]}, {"colour": "green"}, {"behaviours": "clothes_recycling"}, {"behaviours": []},
        {"settle_days": True}, {"settle_days": "7"}, {"payout": "shares"}, {"period_from": "last week"},
        {"name_en": ""}, {"code": 5},
    ]
    for change in malformed:
        assert_problem(operator.post(f"{ADMIN}/programmes", json={**fields, **change}), 400, "invalid-request")
    assert_problem(operator.post(f"{ADMIN}/programmes", json={**fields, "code": base["code"]}), 409,
                   "programme-exists")
    assert_problem(operator.post(f"{ADMIN}/programmes", content=b"{", headers={"content-type": "application/json"}),
                   400, "invalid-request")


async def test_bad_lots_sales_ids_and_cursors_are_refused_never_with_a_500(
        client: httpx.Client, operator: Resident, kit: Kit) -> None:
    await member(client, kit, [(1000, 1)])
    p = programme(operator)
    lot = make_lot(operator, p["code"], 1)
    lots, sales = f"{ADMIN}/lots", f"{ADMIN}/lots/{lot['id']}/sales"

    for target, status, code in [(0, 400, "invalid-request"), (-5, 400, "invalid-request"),
                                 ("1", 400, "invalid-request"), (1.5, 400, "invalid-request"),
                                 (10**15 + 1, 422, "invalid-target"), (HUGE, 422, "invalid-target")]:
        assert_problem(operator.post(lots, json={"programme": p["code"], "target_mg": target}), status, code)
    assert_problem(operator.post(lots, json={"programme": "no-such-programme", "target_mg": 1}), 404,
                   "programme-not-found")
    assert_problem(operator.post(lots, json={"programme": p["code"], "target_mg": 1, "size": "big"}), 400)
    for price, status, code in [(0, 400, "invalid-request"), (-1, 400, "invalid-request"),
                                (10**9 + 1, 422, "invalid-sale"), (HUGE, 422, "invalid-sale")]:
        assert_problem(operator.post(sales, json=sale_body("BAD-PRICE", price=price)), status, code)
    assert_problem(operator.post(sales, json=sale_body("has spaces")), 422, "invalid-sale")
    assert_problem(operator.post(sales, json=sale_body("OK-REF", buyer="   ")), 422, "invalid-sale")
    assert_problem(operator.post(sales, json={**sale_body("OK-REF"), "sale_date": "yesterday"}), 400)
    assert lot_of(operator, lot["id"])["state"] == "open"

    for bad in (HUGE, 10**30, 0, 999_999_999):
        for path in (f"{lots}/{bad}", f"{lots}/{bad}/manifest.json", f"{lots}/{bad}/manifest.csv",
                     f"{lots}/{bad}/sales"):
            assert_problem(operator.get(path), 404, "lot-not-found")
        assert_problem(operator.post(f"{lots}/{bad}/cancel", json={"reason": "x"}), 404, "lot-not-found")
        assert_problem(operator.post(f"{lots}/{bad}/sales", json=sale_body(f"NOLOT-{bad}")), 404, "lot-not-found")
        assert_problem(client.get(f"/v1/market/lots/{bad}"), 404, "lot-not-found")
        assert_problem(operator.get(f"/v1/me/market/lots/{bad}"), 404, "lot-not-found")
        assert_problem(operator.get(f"{ADMIN}/sales/{bad}"), 404, "sale-not-found")
        assert_problem(operator.post(f"{ADMIN}/sales/{bad}/settle"), 404, "sale-not-found")
        assert_problem(operator.post(f"{ADMIN}/sales/{bad}/cancel", json={"reason": "x"}), 404, "sale-not-found")

    for path in ("/v1/market/lots", lots):
        for before in (0, -1, HUGE):
            assert_problem(operator.get(path, params={"before": before}), 422, "invalid-cursor")
        for limit in (0, 101, HUGE):
            assert_problem(operator.get(path, params={"limit": limit}), 422, "invalid-limit")
        assert operator.get(path, params={"before": HUGE - 1, "limit": 100}).status_code == 200
    assert_problem(operator.get(lots, params={"state": "sold"}), 400, "invalid-request")
    assert_problem(operator.get(f"{ADMIN}/eligible"), 400, "invalid-request")
    assert_problem(operator.get(f"{ADMIN}/eligible", params={"programme": "nope"}), 404, "programme-not-found")
    assert_problem(operator.get(f"{ADMIN}/eligible", params={"programme": p["code"], "day_from": "2026-11-20",
                                                             "day_to": "2026-11-10"}), 422, "outside-programme-period")
    assert_problem(client.get("/v1/market/programmes/nope"), 404, "programme-not-found")


# -- a race on one exchange reference ---------------------------------------------------------------------------------


async def test_the_same_exchange_reference_sent_for_two_lots_at_once_is_one_sale_and_one_409(
        client: httpx.Client, base_url: str, operator: Resident, kit: Kit) -> None:
    await member(client, kit, [(2000, 1), (2100, 1)])
    p = programme(operator)
    first, second = make_lot(operator, p["code"], 1), make_lot(operator, p["code"], 1)
    ref = f"RACE-{first['id']}"
    answers: dict[int, httpx.Response] = {}

    def record(lot_id: int) -> None:
        with httpx.Client(base_url=base_url, timeout=60, headers=operator.headers) as http:
            answers[lot_id] = http.post(f"{ADMIN}/lots/{lot_id}/sales", json=sale_body(ref))

    # Deterministic interleaving: our SHARE lock on market_lot lets both requests lock their lot, look the
    # reference up and insert their sale, but not mark their lot pending; the first inserted waits on us, the
    # second waits on the first's uncommitted row in the unique index. Then we let go.
    async with connection() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("LOCK TABLE market_lot IN SHARE MODE")
            threads = [threading.Thread(target=record, args=(lot["id"],)) for lot in (first, second)]
            threads[0].start()
            await waiting_backends(conn, 1)
            threads[1].start()
            await waiting_backends(conn, 2)
        finally:
            await tx.rollback()
        for thread in threads:
            await asyncio.to_thread(thread.join, 60)
    statuses = sorted(r.status_code for r in answers.values())
    assert statuses == [201, 409], {k: (v.status_code, v.text) for k, v in answers.items()}
    (refused,) = [r for r in answers.values() if r.status_code == 409]
    assert_problem(refused, 409, "exchange-ref-used")
    await assert_ledger_ok()


async def waiting_backends(conn: Any, n: int) -> None:
    """Until `n` other backends wait for a lock (a bounded poll of pg_locks, not a timing assertion)."""
    for _ in range(600):
        waiting = await conn.fetchval("SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted AND pid <> "
                                      "pg_backend_pid()")
        if waiting >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{n} requests never reached their locks")
