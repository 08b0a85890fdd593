"""A resident's green energy over HTTP: a credited reduction grows exactly one ball, which is collected
exactly once (a double tap moves nothing again), one at a time or all ripe ones at once; a ball still growing
or expired cannot be collected; expiry is idempotent and a missed run catches up; another resident's ball is
not found; the statement lists every transfer with its effect and a sentence in both languages, and exports
as CSV; reversing a credit cancels or claws back its energy, never below zero; operators award energy once
per Idempotency-Key. Every scenario that moves energy ends with the ledger check.

Friends helping collect are in test_energy_friends.py.
"""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from datetime import datetime

import httpx
import pytest

from tests.energy_support import (
    assert_ledger_ok,
    award,
    balls,
    energy,
    energy_of,
    energy_policy,  # noqa: F401 - a fixture
    grow,
    grow_here,
    name_of,
    transfers,
)
from tests.partner_support import activity
from tests.support import Resident, assert_problem, race, register
from wallet.book.reads import encode_cursor
from wallet.energy.balls import expire_due
from wallet.energy.policy import EnergyPolicy, configure

REPAIR = energy_of("clothes_repair")
PLATE = energy_of("clean_plate")
CUP = energy_of("own_cup")


# --- growing and collecting ---------------------------------------------------------------------------


async def test_a_credited_reduction_grows_one_ball_that_is_collected_exactly_once(client: httpx.Client,
                                                                                  db: object) -> None:
    r = register(client)
    report = activity(behaviour="clothes_repair")
    (receipt,) = r.post("/v1/me/activities", json={"activities": [report]}).json()["receipts"]
    assert receipt["verdict"] == "credited", receipt
    # The same report again (a retry) and one over the day's self-report cap grow nothing more.
    again = r.post("/v1/me/activities", json={"activities": [report, activity(behaviour="clothes_repair")]})
    assert [(x["verdict"], x["replayed"]) for x in again.json()["receipts"]] == [("credited", True),
                                                                                  ("rejected", False)]
    (ball,) = balls(r)
    assert (ball["amount"], ball["behaviour"], ball["state"], ball["ripe"]) == (REPAIR, "clothes_repair",
                                                                                 "growing", True)
    assert ball["collected_by_friend"] is False and ball["resolved_at"] is None
    entries = r.get("/v1/me/book/entries").json()["items"]
    assert [e["id"] for e in entries if e["activity_id"] == receipt["activity_id"]] == [ball["entry_id"]]
    summary = energy(r)
    assert (summary["available"], summary["balls"], summary["ripe"], summary["ripe_balls"]) == (0, REPAIR, REPAIR, 1)
    assert summary["lifetime"]["grown"] == REPAIR

    got = r.post(f"/v1/me/energy/balls/{ball['id']}/collect")
    assert got.status_code == 200, got.text
    assert got.json() == {"collected": REPAIR, "balls": [ball["id"]], "already_collected": [], "available": REPAIR}
    again = r.post(f"/v1/me/energy/balls/{ball['id']}/collect")  # the app double-taps
    assert again.status_code == 200, again.text
    assert again.json() == {"collected": 0, "balls": [], "already_collected": [ball["id"]], "available": REPAIR}
    summary = energy(r)
    assert (summary["available"], summary["balls"], summary["ripe"]) == (REPAIR, 0, 0)
    assert summary["lifetime"]["collected"] == REPAIR
    (ball,) = balls(r, state="collected")
    assert ball["resolved_at"] is not None and ball["ripe"] is False
    await assert_ledger_ok()


async def test_collect_all_takes_every_ripe_ball_at_once_and_then_nothing(client: httpx.Client, db: object) -> None:
    r = register(client)
    for behaviour, days_ago in [("clothes_repair", 0), ("clean_plate", 0), ("own_cup", 0), ("own_cup", 0),
                                ("clothes_repair", 1), ("clean_plate", 2)]:
        grow(r, behaviour, days_ago)
    grown = balls(r)
    assert len(grown) == 6 and len({b["entry_id"] for b in grown}) == 6
    total = 2 * REPAIR + 2 * PLATE + 2 * CUP
    assert sum(b["amount"] for b in grown) == total and energy(r)["ripe_balls"] == 6

    got = r.post("/v1/me/energy/balls/collect")
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["collected"], sorted(body["balls"]), body["available"]) == (total, sorted(b["id"] for b in grown),
                                                                             total)
    again = r.post("/v1/me/energy/balls/collect").json()
    assert (again["collected"], again["balls"], again["available"]) == (0, [], total)
    assert balls(r, state="growing") == [] and len(balls(r, state="collected")) == 6
    await assert_ledger_ok()


@pytest.mark.usefixtures("energy_policy")
async def test_a_ball_still_growing_cannot_be_collected_yet(client: httpx.Client, db: object) -> None:
    r = register(client)
    configure(EnergyPolicy(ripen_s=3600))
    await grow_here(r, "clothes_repair")
    (ball,) = balls(r)
    assert (ball["state"], ball["ripe"]) == ("growing", False)
    summary = energy(r)
    assert (summary["ripe"], summary["growing"], summary["growing_balls"], summary["balls"]) == (0, REPAIR, 1, REPAIR)
    assert summary["next_ripens_at"] == ball["ripens_at"]

    problem = assert_problem(r.post(f"/v1/me/energy/balls/{ball['id']}/collect"), 409, "ball-not-ripe")
    assert datetime.fromisoformat(problem["ripens_at"]) == datetime.fromisoformat(ball["ripens_at"])
    everything = r.post("/v1/me/energy/balls/collect").json()
    assert (everything["collected"], everything["balls"], everything["available"]) == (0, [], 0)
    assert balls(r)[0]["state"] == "growing"
    await assert_ledger_ok()


@pytest.mark.usefixtures("energy_policy")
async def test_an_uncollected_ball_expires_once_into_the_expiry_account(client: httpx.Client, db: object) -> None:
    r = register(client)
    configure(EnergyPolicy(ripen_s=0, window_s=1))
    await grow_here(r, "clean_plate")
    (ball,) = balls(r)
    await asyncio.sleep(1.2)
    # Past its window it cannot be collected, even before the expiry job has run.
    assert_problem(r.post(f"/v1/me/energy/balls/{ball['id']}/collect"), 409, "ball-expired")
    assert await expire_due() >= 1
    assert await expire_due() == 0  # idempotent: a ball ends once
    (ball,) = balls(r)
    assert ball["state"] == "expired" and ball["resolved_at"] is not None
    assert_problem(r.post(f"/v1/me/energy/balls/{ball['id']}/collect"), 409, "ball-expired")
    assert r.post("/v1/me/energy/balls/collect").json()["collected"] == 0

    summary = energy(r)
    assert (summary["available"], summary["balls"], summary["lifetime"]["expired"]) == (0, 0, PLATE)
    newest = transfers(r)[0]
    assert (newest["kind"], newest["amount"], newest["effect"]) == ("ball.expired", PLATE,
                                                                     {"available": 0, "balls": -PLATE, "held": 0})
    zh, en = name_of("clean_plate")
    assert newest["description"] == {"zh-CN": f"{zh}的能量球过期未收取",
                                     "en": f"The energy ball from {en} expired uncollected"}
    await assert_ledger_ok()


@pytest.mark.usefixtures("energy_policy")
async def test_a_missed_expiry_run_catches_up_on_every_ball_due_since(client: httpx.Client, db: object) -> None:
    r = register(client)
    configure(EnergyPolicy(ripen_s=0, window_s=1))
    for behaviour in ("clothes_repair", "clean_plate", "own_cup"):  # due one after another, no run between
        await grow_here(r, behaviour)
        await asyncio.sleep(0.6)
    await asyncio.sleep(1.2)
    assert await expire_due(batch=1) >= 3  # one late run, in batches smaller than the backlog
    assert {b["state"] for b in balls(r)} == {"expired"}
    assert await expire_due() == 0
    assert energy(r)["lifetime"]["expired"] == REPAIR + PLATE + CUP
    await assert_ledger_ok()


async def test_a_ball_tapped_ten_times_at_once_is_collected_once(client: httpx.Client, base_url: str,
                                                                  db: object) -> None:
    r = register(client)
    grow(r, "clothes_repair")
    (ball,) = balls(r)
    taps = race(10, lambda: httpx.Client(base_url=base_url, timeout=30),
                lambda http: http.post(f"/v1/me/energy/balls/{ball['id']}/collect", headers=r.headers))
    assert all(t.status_code == 200 for t in taps), [t.text for t in taps]
    assert sorted(t.json()["collected"] for t in taps) == [0] * 9 + [REPAIR]
    assert sum(t.json()["already_collected"] == [ball["id"]] for t in taps) == 9
    assert energy(r)["available"] == REPAIR
    await assert_ledger_ok()


def test_another_residents_ball_is_not_found(client: httpx.Client) -> None:
    owner, other = register(client), register(client)
    grow(owner, "clothes_repair")
    (ball,) = balls(owner)
    assert_problem(other.post(f"/v1/me/energy/balls/{ball['id']}/collect"), 404, "ball-not-found")
    assert other.post("/v1/me/energy/balls/collect").json()["collected"] == 0
    assert balls(other) == []
    for missing in (2**62, 2**63, 0, -1):
        assert_problem(other.post(f"/v1/me/energy/balls/{missing}/collect"), 404, "ball-not-found")
    assert balls(owner)[0]["state"] == "growing" and energy(owner)["ripe"] == REPAIR


# --- the statement ------------------------------------------------------------------------------------


def _statement_of(client: httpx.Client, operator: Resident) -> tuple[Resident, list[str]]:
    """award, repair grown, repair collected, plate grown: four transfers, kinds newest first."""
    r = register(client)
    award(operator, r, 500, reason="开业周 Launch week")
    grow(r, "clothes_repair")
    assert r.post("/v1/me/energy/balls/collect").json()["collected"] == REPAIR
    grow(r, "clean_plate")
    return r, ["ball.grown", "ball.collected", "ball.grown", "award"]


async def test_the_statement_lists_every_transfer_newest_first_with_its_effect_and_sentences(
        client: httpx.Client, operator: Resident) -> None:
    r, kinds = _statement_of(client, operator)
    items = transfers(r)
    assert [t["kind"] for t in items] == kinds
    ids = [t["id"] for t in items]
    assert ids == sorted(ids, reverse=True)
    assert [t["effect"] for t in items] == [
        {"available": 0, "balls": PLATE, "held": 0},
        {"available": REPAIR, "balls": -REPAIR, "held": 0},
        {"available": 0, "balls": REPAIR, "held": 0},
        {"available": 500, "balls": 0, "held": 0},
    ]
    (plate_zh, plate_en), (repair_zh, repair_en) = name_of("clean_plate"), name_of("clothes_repair")
    assert [t["description"] for t in items] == [
        {"zh-CN": f"{plate_zh}的能量球长出来了", "en": f"An energy ball grew from {plate_en}"},
        {"zh-CN": f"收取了{repair_zh}的能量", "en": f"Collected the energy from {repair_en}"},
        {"zh-CN": f"{repair_zh}的能量球长出来了", "en": f"An energy ball grew from {repair_en}"},
        {"zh-CN": "运营奖励：开业周 Launch week", "en": "Awarded by Carbon Wallet: 开业周 Launch week"},
    ]
    assert [t["kind"] for t in transfers(r, account="available")] == ["ball.collected", "award"]
    assert [t["kind"] for t in transfers(r, account="held")] == []
    summary = energy(r)
    assert (summary["available"], summary["balls"]) == (500 + REPAIR, PLATE)
    assert (summary["lifetime"]["awarded"], summary["lifetime"]["grown"]) == (500, REPAIR + PLATE)

    page = r.get("/v1/me/energy/transfers", params={"limit": 2}).json()
    assert [t["id"] for t in page["items"]] == ids[:2] and page["next_cursor"]
    assert r.get("/v1/me/energy/transfers", params={"limit": 4}).json()["next_cursor"]  # a full page may have more
    assert r.get("/v1/me/energy/transfers", params={"limit": 5}).json()["next_cursor"] is None
    await assert_ledger_ok()


async def test_cursor_paging_walks_every_transfer_exactly_once(client: httpx.Client, operator: Resident) -> None:
    r, kinds = _statement_of(client, operator)
    everything = [t["id"] for t in transfers(r)]
    seen: list[int] = []
    cursor: str | None = None
    for _ in range(len(everything) + 1):
        got = r.get("/v1/me/energy/transfers", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert got.status_code == 200, got.text
        page = got.json()
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == everything and len(seen) == len(kinds)


def test_cursor_paging_walks_every_ball_exactly_once(client: httpx.Client) -> None:
    r = register(client)
    for behaviour in ("clothes_repair", "clean_plate", "own_cup"):
        grow(r, behaviour)
    everything = [b["id"] for b in balls(r)]
    first = r.get("/v1/me/energy/balls", params={"limit": 2}).json()
    second = r.get("/v1/me/energy/balls", params={"limit": 2, "cursor": first["next_cursor"]})
    assert second.status_code == 200, second.text
    assert [b["id"] for b in first["items"] + second.json()["items"]] == everything
    assert second.json()["next_cursor"] is None


def test_bad_paging_parameters_are_problems(client: httpx.Client, resident: Resident) -> None:
    cursors = ["not-a-cursor", encode_cursor("x"), encode_cursor("0"), encode_cursor("-1"), encode_cursor("²"),
               encode_cursor(str(2**63)), encode_cursor(1, 2)]
    for cursor in cursors:
        assert_problem(resident.get("/v1/me/energy/transfers", params={"cursor": cursor}), 422, "invalid-cursor")
        assert_problem(resident.get("/v1/me/energy/balls", params={"cursor": cursor}), 422, "invalid-cursor")
    for params, status, code in [({"limit": 0}, 422, "invalid-limit"), ({"limit": 201}, 422, "invalid-limit"),
                                 ({"limit": "many"}, 400, "invalid-request"),
                                 ({"account": "savings"}, 400, "invalid-request")]:
        assert_problem(resident.get("/v1/me/energy/transfers", params=params), status, code)
    assert_problem(resident.get("/v1/me/energy/balls", params={"limit": 0}), 422, "invalid-limit")
    assert_problem(resident.get("/v1/me/energy/balls", params={"state": "ripe"}), 400, "invalid-request")


async def test_the_statement_exports_as_csv_one_row_per_transfer(client: httpx.Client, operator: Resident) -> None:
    r, _ = _statement_of(client, operator)
    items = transfers(r)
    got = r.get("/v1/me/energy/transfers/export")
    assert got.status_code == 200, got.text
    assert got.headers["content-type"].startswith("text/csv")
    assert "attachment" in got.headers["content-disposition"]
    header, *rows = list(csv.reader(io.StringIO(got.text)))
    assert header == ["id", "created_at", "kind", "amount", "available", "balls", "held", "description_zh",
                      "description_en"]
    assert [int(row[0]) for row in rows] == [t["id"] for t in items]
    for row, t in zip(rows, items, strict=True):
        assert row[2:] == [t["kind"], str(t["amount"]), str(t["effect"]["available"]), str(t["effect"]["balls"]),
                           str(t["effect"]["held"]), t["description"]["zh-CN"], t["description"]["en"]]
        assert datetime.fromisoformat(row[1]) == datetime.fromisoformat(t["created_at"])
    empty = register(client).get("/v1/me/energy/transfers/export")
    assert list(csv.reader(io.StringIO(empty.text))) == [header]


# --- reversal -----------------------------------------------------------------------------------------


def _reverse(operator: Resident, entry_id: int) -> dict[str, int]:
    got = operator.post(f"/v1/admin/book/entries/{entry_id}/reverse", json={"reason": "Partner retracted it"})
    assert got.status_code == 201, got.text
    return got.json()


async def test_reversing_a_credit_cancels_its_growing_ball(client: httpx.Client, operator: Resident) -> None:
    r = register(client)
    grow(r, "clothes_repair")
    (ball,) = balls(r)
    done = _reverse(operator, ball["entry_id"])
    assert (done["energy_cancelled"], done["energy_clawed_back"], done["energy_short"]) == (REPAIR, 0, 0)
    assert balls(r)[0]["state"] == "cancelled"
    assert_problem(r.post(f"/v1/me/energy/balls/{ball['id']}/collect"), 409, "ball-cancelled")
    summary = energy(r)
    assert (summary["available"], summary["balls"], summary["lifetime"]["cancelled"]) == (0, 0, REPAIR)
    assert transfers(r)[0]["kind"] == "ball.cancelled"
    again = operator.post(f"/v1/admin/book/entries/{ball['entry_id']}/reverse", json={"reason": "again"})
    assert_problem(again, 409, "already-reversed")
    await assert_ledger_ok()


async def test_reversing_a_collected_credit_claws_its_energy_back(client: httpx.Client, operator: Resident) -> None:
    r = register(client)
    award(operator, r, 100)
    grow(r, "clean_plate")
    (ball,) = balls(r)
    r.post(f"/v1/me/energy/balls/{ball['id']}/collect")
    done = _reverse(operator, ball["entry_id"])
    assert (done["energy_cancelled"], done["energy_clawed_back"], done["energy_short"]) == (0, PLATE, 0)
    summary = energy(r)
    assert (summary["available"], summary["lifetime"]["clawed_back"]) == (100, PLATE)
    newest = transfers(r)[0]
    assert (newest["kind"], newest["effect"]["available"]) == ("energy.clawback", -PLATE)
    await assert_ledger_ok()


async def test_a_clawback_takes_only_what_is_left_when_part_was_spent(client: httpx.Client,
                                                                      operator: Resident) -> None:
    r = register(client)
    grow(r, "clothes_repair")
    (ball,) = balls(r)
    r.post(f"/v1/me/energy/balls/{ball['id']}/collect")
    project = operator.post("/v1/admin/projects", json={"code": f"trees-{uuid.uuid4().hex[:8]}", "title_zh": "种树",
                                                        "title_en": "Trees", "goal": 10**9})
    assert project.status_code == 201, project.text
    spent = REPAIR - 56
    given = r.post(f"/v1/projects/{project.json()['id']}/donations", json={"amount": spent})
    assert given.status_code == 201, given.text
    done = _reverse(operator, ball["entry_id"])
    assert (done["energy_cancelled"], done["energy_clawed_back"], done["energy_short"]) == (0, 56, spent)
    summary = energy(r)
    assert (summary["available"], summary["lifetime"]["clawed_back"]) == (0, 56)
    await assert_ledger_ok()


# --- operator awards and authentication ---------------------------------------------------------------


async def test_operators_award_energy_once_per_idempotency_key(client: httpx.Client, operator: Resident) -> None:
    r = register(client)
    body = {"holder_id": r.holder_id, "amount": 500, "reason": "Goodwill after the outage 故障补偿"}
    assert_problem(r.post("/v1/admin/ledger/awards", json=body), 403, "operator-only")
    unknown = operator.post("/v1/admin/ledger/awards", json={**body, "holder_id": str(uuid.uuid4())})
    assert_problem(unknown, 404)
    key = {"Idempotency-Key": f"award-{uuid.uuid4()}"}
    first = operator.post("/v1/admin/ledger/awards", json=body, headers=key)
    second = operator.post("/v1/admin/ledger/awards", json=body, headers=key)
    assert (first.status_code, second.status_code) == (200, 200), second.text
    assert first.json() == {"awarded": 500, "available": 500, "replayed": False}
    assert second.json() == {"awarded": 0, "available": 500, "replayed": True}
    (row,) = transfers(r)
    assert (row["kind"], row["amount"]) == ("award", 500)
    assert row["description"]["en"] == "Awarded by Carbon Wallet: Goodwill after the outage 故障补偿"
    assert energy(r)["lifetime"]["awarded"] == 500
    for bad in ({**body, "amount": 0}, {**body, "reason": ""}, {**body, "surprise": 1}):
        assert operator.post("/v1/admin/ledger/awards", json=bad).status_code in (400, 422)
    assert energy(r)["available"] == 500
    await assert_ledger_ok()


def test_an_award_key_reused_for_another_amount_is_refused(client: httpx.Client, operator: Resident) -> None:
    r = register(client)
    key = {"Idempotency-Key": f"award-{uuid.uuid4()}"}
    body = {"holder_id": r.holder_id, "amount": 500, "reason": "Launch week"}
    assert operator.post("/v1/admin/ledger/awards", json=body, headers=key).json()["awarded"] == 500
    other = operator.post("/v1/admin/ledger/awards", json={**body, "amount": 700}, headers=key)
    assert energy(r)["available"] == 500
    assert_problem(other, 422, "idempotency-key-reused")


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/me/energy"), ("GET", "/v1/me/energy/balls"), ("POST", "/v1/me/energy/balls/collect"),
    ("POST", "/v1/me/energy/balls/1/collect"), ("GET", "/v1/me/energy/transfers"),
    ("GET", "/v1/me/energy/transfers/export"), ("GET", "/v1/me/energy/settings"),
    ("PATCH", "/v1/me/energy/settings"), ("GET", f"/v1/friends/{uuid.UUID(int=1)}/energy/balls"),
    ("POST", f"/v1/friends/{uuid.UUID(int=1)}/energy/balls/1/help"),
])
def test_energy_requests_without_a_token_are_refused(client: httpx.Client, method: str, path: str) -> None:
    body = {"friends_may_collect": False} if method == "PATCH" else None
    assert_problem(client.request(method, path, json=body), 401)
