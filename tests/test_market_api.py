"""The carbon market over HTTP, part one: which entries a programme may pool (behaviour@version, release, trust
tier, days, settle_days, consent, deleted residents, reversals), how a lot picks them (oldest local day, then entry
id, the smallest prefix reaching the target), the manifest an exchange verifies, each resident's statement, the
public account (never whose grams), and the consent choice. Lifecycle, payouts and refusals: test_market_rules.py.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.energy_support import grow
from tests.ledger_support import GROWER, Kit, assert_ledger_ok, make_kit
from tests.market_http_support import (
    ADMIN,
    Member,
    add_entries,
    eligible,
    make_lot,
    member,
    programme,
    put_consent,
    sell,
    settle,
)
from tests.market_support import mg_of, opt_out_everyone
from tests.partner_support import activity
from tests.support import PASSWORD, Resident, assert_problem, register
from wallet.ledger.allocation import largest_remainder

EVERY_TIER = ["verified", "device", "self_reported"]


@pytest.fixture(scope="module")
async def kit(passwords: Any, settings: Any, db: object) -> Kit:
    return await make_kit(passwords, settings)


@pytest.fixture(autouse=True)
async def clean_slate(db: object) -> None:
    await opt_out_everyone()


def day(entry: dict[str, Any]) -> date:
    return date.fromisoformat(entry["local_day"])


def manifest(operator: Resident, lot_id: int) -> httpx.Response:
    r = operator.get(f"{ADMIN}/lots/{lot_id}/manifest.json")
    assert r.status_code == 200, r.text
    return r


def pooled(operator: Resident, lot_id: int) -> list[int]:
    return [e["entry"] for e in manifest(operator, lot_id).json()["entries"]]


def totals(summary: dict[str, Any]) -> tuple[int, int, int]:
    return summary["reduction_mg"], summary["entries"], summary["holders"]


# -- eligibility -----------------------------------------------------------------------------------------------------


async def test_a_programme_pools_only_the_behaviours_versions_and_releases_it_lists(
        client: httpx.Client, operator: Resident, kit: Kit) -> None:
    recycler = await member(client, kit, [(2000, 1)])
    (recycled,) = recycler.entries
    assert (recycled["behaviour"], recycled["behaviour_version"], recycled["methodology_release"]) == (
        GROWER, 1, "2026.2")
    walker = register(client)
    r = walker.post("/v1/me/activities", json={"activities": [activity(behaviour="walking_steps", quantity=3000)]})
    assert r.status_code == 200 and r.json()["receipts"][0]["verdict"] == "credited", r.text
    put_consent(client, walker.headers, True)
    (steps,) = walker.get("/v1/me/book/entries").json()["items"]
    assert (steps["behaviour_version"], steps["methodology_release"]) == (2, "2026.2")

    cases: list[tuple[dict[str, Any], tuple[int, int, int]]] = [
        ({"behaviours": ["clothes_donation"]}, (0, 0, 0)),
        ({"methodology_releases": ["2026.1"]}, (0, 0, 0)),
        ({"methodology_releases": ["2026.2"]}, (recycled["reduction_mg"], 1, 1)),
        ({"behaviours": ["walking_steps@1"], "trust_tiers": EVERY_TIER}, (0, 0, 0)),
        ({"behaviours": ["walking_steps@2"], "trust_tiers": EVERY_TIER}, (steps["reduction_mg"], 1, 1)),
        ({"behaviours": ["walking_steps", GROWER], "trust_tiers": EVERY_TIER},
         (steps["reduction_mg"] + recycled["reduction_mg"], 2, 2)),
    ]
    for rules, expected in cases:
        p = programme(operator, **rules)
        assert totals(eligible(operator, p["code"])) == expected, (rules, p)
    bare = programme(operator, behaviours=["walking_steps"], trust_tiers=EVERY_TIER)
    assert bare["behaviours"] == ["walking_steps@1", "walking_steps@2"]


async def test_self_reported_entries_are_pooled_only_where_the_programme_accepts_self_reports(
        client: httpx.Client, operator: Resident) -> None:
    mender = register(client)
    grow(mender, "clothes_repair")
    put_consent(client, mender.headers, True)
    (entry,) = mender.get("/v1/me/book/entries").json()["items"]
    assert (entry["behaviour"], entry["trust_tier"]) == ("clothes_repair", "self_reported")

    for tiers in (["verified"], ["device"], ["verified", "device"]):
        p = programme(operator, behaviours=["clothes_repair"], trust_tiers=tiers)
        assert totals(eligible(operator, p["code"])) == (0, 0, 0), tiers
    accepting = programme(operator, behaviours=["clothes_repair"], trust_tiers=["verified", "self_reported"])
    assert accepting["trust_tiers"] == ["verified", "self_reported"]
    assert totals(eligible(operator, accepting["code"])) == (entry["reduction_mg"], 1, 1)
    lot = make_lot(operator, accepting["code"], 1)
    assert pooled(operator, lot["id"]) == [entry["id"]]


async def test_entries_outside_the_programmes_period_or_the_lots_days_stay_out(
        client: httpx.Client, operator: Resident, kit: Kit) -> None:
    m = await member(client, kit, [(1000, 6), (1100, 3), (1200, 1)])
    old, mid, new = m.entries
    assert day(old) < day(mid) < day(new)

    p = programme(operator, period_from=day(mid), period_to=day(new))
    assert totals(eligible(operator, p["code"])) == (mid["reduction_mg"] + new["reduction_mg"], 2, 1)
    assert totals(eligible(operator, p["code"], day_from=day(mid), day_to=day(mid))) == (mid["reduction_mg"], 1, 1)
    after = programme(operator, period_from=day(new) + timedelta(days=1), period_to=day(new) + timedelta(days=3))
    assert totals(eligible(operator, after["code"])) == (0, 0, 0)
    body = assert_problem(operator.post(f"{ADMIN}/lots", json={"programme": after["code"], "target_mg": 1}), 409,
                          "not-enough-eligible")
    assert body["available_mg"] == 0

    # A lot's days narrow the period (days before it are clipped to it); days wholly outside it are refused.
    lot = make_lot(operator, p["code"], 1, day_from=day(old), day_to=day(mid))
    assert (lot["day_from"], lot["day_to"]) == (mid["local_day"], mid["local_day"])
    assert pooled(operator, lot["id"]) == [mid["id"]]
    assert totals(eligible(operator, p["code"])) == (new["reduction_mg"], 1, 1)
    assert_problem(operator.post(f"{ADMIN}/lots", json={
        "programme": p["code"], "target_mg": 1, "day_from": old["local_day"], "day_to": old["local_day"]}), 422,
        "outside-programme-period")


async def test_an_entry_recorded_today_waits_out_the_programmes_settle_days(
        client: httpx.Client, operator: Resident, kit: Kit) -> None:
    m = await member(client, kit, [(1500, 5)])  # it happened five days ago but was recorded just now
    waiting = programme(operator, settle_days=1)
    assert totals(eligible(operator, waiting["code"])) == (0, 0, 0)
    assert_problem(operator.post(f"{ADMIN}/lots", json={"programme": waiting["code"], "target_mg": 1}), 409,
                   "not-enough-eligible")
    at_once = programme(operator, settle_days=0)
    assert totals(eligible(operator, at_once["code"])) == (m.entries[0]["reduction_mg"], 1, 1)


async def test_only_residents_who_opted_in_and_stayed_in_are_pooled(
        client: httpx.Client, operator: Resident, kit: Kit) -> None:
    yes = await member(client, kit, [(1000, 1)], opted_in=False)
    never = await member(client, kit, [(1100, 1)], opted_in=False)
    left = await member(client, kit, [(1200, 1)], opted_in=False)
    put_consent(client, yes.headers, True)
    put_consent(client, left.headers, True)
    assert put_consent(client, left.headers, False)["opted_in"] is False
    assert never.get(client, "/v1/me/market/consent").json()["opted_in"] is False

    p = programme(operator)
    assert totals(eligible(operator, p["code"])) == (mg_of(1000), 1, 1)
    lot = make_lot(operator, p["code"], 1)
    body = manifest(operator, lot["id"]).json()
    assert [c["holder"] for c in body["contributors"]] == [str(yes.holder_id)]


async def test_a_deleted_residents_entries_are_never_pooled(
        client: httpx.Client, operator: Resident, kit: Kit) -> None:
    gone = await member(client, kit, [(1300, 1)])
    p = programme(operator)
    assert totals(eligible(operator, p["code"])) == (mg_of(1300), 1, 1)
    r = client.request("DELETE", "/v1/me", headers=gone.headers, json={"password": PASSWORD, "confirm": "DELETE"})
    assert r.status_code == 204, r.text
    assert totals(eligible(operator, p["code"])) == (0, 0, 0)
    assert_problem(operator.post(f"{ADMIN}/lots", json={"programme": p["code"], "target_mg": 1}), 409,
                   "not-enough-eligible")


async def test_a_reversed_entry_is_never_pooled(client: httpx.Client, operator: Resident, kit: Kit) -> None:
    m = await member(client, kit, [(1000, 2), (1600, 1)])
    wrong, right = m.entries
    r = operator.post(f"/v1/admin/book/entries/{wrong['id']}/reverse", json={"reason": "Partner retracted it"})
    assert r.status_code == 201, r.text
    p = programme(operator)
    assert totals(eligible(operator, p["code"])) == (right["reduction_mg"], 1, 1)
    lot = make_lot(operator, p["code"], 1)
    assert pooled(operator, lot["id"]) == [right["id"]] and lot["reversed_mg"] == 0
    assert_problem(operator.post(f"{ADMIN}/lots", json={"programme": p["code"], "target_mg": 1}), 409,
                   "not-enough-eligible")


# -- selection and the manifest --------------------------------------------------------------------------------------


async def test_a_lot_takes_the_oldest_days_first_then_entry_ids_up_to_the_smallest_prefix_reaching_its_target(
        client: httpx.Client, operator: Resident, kit: Kit) -> None:
    a = await member(client, kit, [(1000, 1)])
    b = await member(client, kit, [(2000, 3), (500, 1)])
    c = await member(client, kit, [(1500, 2)])
    (a1,), (b3, b1), (c2,) = a.entries, b.entries, c.entries
    assert a1["id"] < b3["id"] < b1["id"] < c2["id"] and day(b3) < day(c2) < day(a1) == day(b1)
    p = programme(operator)

    exactly = mg_of(2000) + mg_of(1500)  # b3 and c2 reach it exactly: nothing more is taken
    lot = make_lot(operator, p["code"], exactly)
    assert (lot["total_mg"], lot["entries"], lot["contributors"]) == (exactly, 2, 2)
    assert pooled(operator, lot["id"]) == sorted([b3["id"], c2["id"]])
    assert operator.post(f"{ADMIN}/lots/{lot['id']}/cancel", json={"reason": "resize"}).status_code == 200

    lot = make_lot(operator, p["code"], exactly + 1)  # one mg more: the oldest of the next day, a1 (lower id than b1)
    assert pooled(operator, lot["id"]) == sorted([b3["id"], c2["id"], a1["id"]])
    assert lot["total_mg"] == exactly + mg_of(1000) >= exactly + 1 > lot["total_mg"] - mg_of(1000)
    assert totals(eligible(operator, p["code"])) == (b1["reduction_mg"], 1, 1)
    await assert_ledger_ok()


async def test_the_manifest_is_canonical_json_whose_hash_the_lot_recorded(
        client: httpx.Client, operator: Resident, kit: Kit) -> None:
    members = [await member(client, kit, [(900 + i, 2), (700 + i, 1)]) for i in range(3)]
    p = programme(operator)
    lot = make_lot(operator, p["code"], mg_of(2500))
    first = manifest(operator, lot["id"])
    again = manifest(operator, lot["id"])
    assert first.content == again.content
    digest = hashlib.sha256(b"carbon-lot/v1\n" + first.content).hexdigest()
    assert digest == first.headers["Manifest-SHA256"] == lot["manifest_sha256"] == again.headers["Manifest-SHA256"]
    body = first.json()
    assert json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() == first.content

    entries, contributors = body["entries"], body["contributors"]
    assert [e["entry"] for e in entries] == sorted(e["entry"] for e in entries)
    assert [c["holder"] for c in contributors] == sorted(c["holder"] for c in contributors)
    assert body["lot"]["format"] == "carbon-lot/v1" and body["lot"]["programme"]["code"] == p["code"]
    assert (body["lot"]["total_mg"], body["lot"]["entries"], body["lot"]["holders"]) == (
        lot["total_mg"], lot["entries"], lot["contributors"]) == (sum(e["reduction_mg"] for e in entries),
                                                                  len(entries), len(contributors))
    book = {e["id"]: e for m in members for e in m.entries}
    for e in entries:
        mine = book[e["entry"]]
        assert (e["holder"], e["entry_hash"], e["seq"], e["local_day"], e["reduction_mg"]) == (
            str(next(m.holder_id for m in members if mine in m.entries)), mine["entry_hash"], mine["seq"],
            mine["local_day"], mine["reduction_mg"])
    for c in contributors:
        theirs = [e for e in entries if e["holder"] == c["holder"]]
        assert (c["entries"], c["reduction_mg"]) == (len(theirs), sum(e["reduction_mg"] for e in theirs))
        assert c["head_seq"] >= max(e["seq"] for e in theirs)

    r = operator.get(f"{ADMIN}/lots/{lot['id']}/manifest.csv")
    assert r.status_code == 200 and r.headers["Manifest-SHA256"] == digest
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(int(x["entry"]), x["holder"], int(x["reduction_mg"]), x["entry_hash"], x["local_day"]) for x in rows] == [
        (e["entry"], e["holder"], e["reduction_mg"], e["entry_hash"], e["local_day"]) for e in entries]
    assert {x["lot"] for x in rows} == {str(lot["id"])}


# -- statements, the public account, consent -------------------------------------------------------------------------


async def test_my_statement_shows_each_lot_with_my_grams_the_price_and_what_each_entry_earned(
        client: httpx.Client, operator: Resident, kit: Kit) -> None:
    a = await member(client, kit, [(3000, 2), (2000, 1)])
    b = await member(client, kit, [(5000, 1)])
    p = programme(operator)
    sold = make_lot(operator, p["code"], mg_of(10_000))
    sale = settle(operator, sell(operator, sold["id"], price=8_499)["id"])
    gross = mg_of(10_000) * 8_499 // 10**9
    share_a, share_b = largest_remainder(gross, [mg_of(5000), mg_of(5000)])
    assert (sale["gross_fen"], sale["benefit_fen"], sale["residents_fen"]) == (gross, 0, gross)
    await add_entries(client, kit, a, [(700, 0)])
    unsold = make_lot(operator, p["code"], 1)

    mine = a.get(client, "/v1/me/market").json()
    assert (mine["balance_fen"], mine["received_fen"], mine["received_energy"]) == (share_a, share_a, 0)
    assert [x["lot"]["id"] for x in mine["lots"]] == [unsold["id"], sold["id"]]
    newer, older = mine["lots"]
    assert (newer["my_mg"], newer["my_entries"], newer["price_per_tonne_fen"], newer["fen"], newer["sale_id"]) == (
        mg_of(700), 1, None, None, None)
    assert (older["my_mg"], older["my_entries"], older["price_per_tonne_fen"], older["fen"], older["sale_id"]) == (
        mg_of(5000), 2, 8_499, share_a, sale["id"])
    assert older["lot"]["state"] == "settled" and older["payout"] == "fen"

    detail = a.get(client, f"/v1/me/market/lots/{sold['id']}").json()
    assert [e["entry_id"] for e in detail["entries"]] == [e["id"] for e in a.entries[:2]]
    assert [e["reduction_mg"] for e in detail["entries"]] == [mg_of(3000), mg_of(2000)]
    assert sum(e["fen"] for e in detail["entries"]) == detail["fen"] == share_a
    assert [e["fen"] for e in detail["entries"]] == largest_remainder(share_a, [mg_of(3000), mg_of(2000)])
    assert b.get(client, "/v1/me/market").json()["received_fen"] == share_b
    assert_problem(b.get(client, f"/v1/me/market/lots/{unsold['id']}"), 404, "lot-not-found")
    assert_problem(a.get(client, "/v1/me/market/lots/9223372036854775807"), 404, "lot-not-found")
    await assert_ledger_ok()


def _public(client: httpx.Client, lot_id: int, holders: list[Member]) -> dict[str, Any]:
    one = client.get(f"/v1/market/lots/{lot_id}")
    listed = client.get("/v1/market/lots", params={"before": lot_id + 1, "limit": 1})
    assert one.status_code == 200 and listed.status_code == 200, (one.text, listed.text)
    for text in (one.text, listed.text):
        for m in holders:
            assert str(m.holder_id) not in text and m.holder_id.hex not in text
    (row,) = listed.json()
    body = one.json()
    assert row == body
    return body


async def test_the_public_account_shows_totals_and_the_price_once_settled_and_never_whose_grams(
        client: httpx.Client, operator: Resident, kit: Kit) -> None:
    a = await member(client, kit, [(4000, 1)])
    b = await member(client, kit, [(6000, 1)])
    p = programme(operator, benefit_ppm=125_000, benefit_name_zh="社区植树", benefit_name_en="Community trees",
                  benefit_url="https://example.org/trees")
    lot = make_lot(operator, p["code"], mg_of(10_000))

    public = _public(client, lot["id"], [a, b])
    assert (public["state"], public["sale"], public["total_mg"], public["contributors"], public["entries"]) == (
        "open", None, mg_of(10_000), 2, 2)
    assert public["public_benefit"] == {"share_ppm": 125_000, "name": {"zh-CN": "社区植树", "en": "Community trees"},
                                        "url": "https://example.org/trees"}
    assert public["manifest_sha256"] == lot["manifest_sha256"] and public["exchange"]["en"] == p["exchange"]["en"]

    sale = sell(operator, lot["id"], price=9_000, buyer="绿色买家")
    public = _public(client, lot["id"], [a, b])
    assert public["state"] == "pending" and {k: v for k, v in public["sale"].items() if v is not None} == {
        "state": "pending"}

    done = settle(operator, sale["id"])
    public = _public(client, lot["id"], [a, b])
    gross = mg_of(10_000) * 9_000 // 10**9
    assert public["state"] == "settled" and public["paid_contributors"] == 2
    assert {k: public["sale"][k] for k in ("buyer", "exchange_ref", "price_per_tonne_fen", "gross_fen", "benefit_fen",
                                           "residents_fen")} == {
        "buyer": "绿色买家", "exchange_ref": sale["exchange_ref"], "price_per_tonne_fen": 9_000, "gross_fen": gross,
        "benefit_fen": gross * 125_000 // 10**6, "residents_fen": gross - gross * 125_000 // 10**6}
    assert done["benefit_fen"] == public["sale"]["benefit_fen"]

    await assert_ledger_ok()


async def test_consent_starts_off_and_its_time_moves_only_when_the_choice_changes(
        client: httpx.Client, operator: Resident, kit: Kit) -> None:
    m = await member(client, kit, [(1000, 1), (1100, 1)], opted_in=False)
    assert client.get("/v1/me/market/consent").status_code == 401
    assert m.get(client, "/v1/me/market/consent").json() == {"opted_in": False, "changed_at": None, "unsold_lots": 0}

    def at(state: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(state["changed_at"])

    on = put_consent(client, m.headers, True)
    assert on["opted_in"] is True and on["changed_at"] is not None
    assert at(put_consent(client, m.headers, True)) == at(on)
    off = put_consent(client, m.headers, False)
    assert off["opted_in"] is False and at(off) > at(on)
    assert at(put_consent(client, m.headers, False)) == at(off)
    on = put_consent(client, m.headers, True)
    assert at(on) > at(off) and m.get(client, "/v1/me/market/consent").json() == on

    p = programme(operator)
    first = make_lot(operator, p["code"], 1)
    second = make_lot(operator, p["code"], 1)
    assert m.get(client, "/v1/me/market/consent").json()["unsold_lots"] == 2
    assert put_consent(client, m.headers, False)["unsold_lots"] == 2  # pooled entries stay when I opt out
    sale = sell(operator, first["id"])
    assert m.get(client, "/v1/me/market/consent").json()["unsold_lots"] == 2
    settle(operator, sale["id"])
    assert operator.post(f"{ADMIN}/lots/{second['id']}/cancel", json={"reason": "x"}).status_code == 200
    assert m.get(client, "/v1/me/market/consent").json()["unsold_lots"] == 0
    assert m.get(client, "/v1/me/market").json()["consent"]["opted_in"] is False
    await assert_ledger_ok()


async def test_the_public_list_and_the_lots_page_agree_on_how_many_contributors_were_paid(
        client: httpx.Client, operator: Resident, kit: Kit) -> None:
    await member(client, kit, [(4000, 1)])
    await member(client, kit, [(6000, 1)])
    lot = make_lot(operator, programme(operator)["code"], mg_of(10_000))
    settle(operator, sell(operator, lot["id"])["id"])
    assert client.get(f"/v1/market/lots/{lot['id']}").json()["paid_contributors"] == 2
    (listed,) = client.get("/v1/market/lots", params={"before": lot["id"] + 1, "limit": 1}).json()
    assert listed["paid_contributors"] == 2
