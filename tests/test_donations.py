"""Donation projects over HTTP: operators open and close projects (validated, codes unique); anyone browses
them; residents donate energy once per Idempotency-Key and never more than they have; when the goal is met
every donor gets exactly one certificate whose shares sum to exactly 1,000,000 ppm and whose amounts sum to
what was raised, even while 20 residents donate at once and the project completes under them. Every scenario
ends with the ledger check.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.energy_support import assert_ledger_ok, award, energy
from tests.support import Resident, assert_problem, deliver_pending_events, race, register
from wallet.donations.service import complete_if_met
from wallet.ledger.allocation import largest_remainder

PPM = 1_000_000


def new_project(operator: Resident, goal: int = 10**9, **fields: Any) -> dict[str, Any]:
    body = {"code": f"trees-{uuid.uuid4().hex[:10]}", "title_zh": "社区种树", "title_en": "Community trees",
            "outcome_zh": "种下一棵树", "outcome_en": "One tree planted", "goal": goal, **fields}
    r = operator.post("/v1/admin/projects", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def funded(client: httpx.Client, operator: Resident, amount: int) -> Resident:
    r = register(client)
    award(operator, r, amount)
    return r


def donate(r: Resident, project_id: int, amount: Any, key: str | None = None) -> httpx.Response:
    return r.post(f"/v1/projects/{project_id}/donations", json={"amount": amount},
                  headers={"Idempotency-Key": key or f"d-{uuid.uuid4()}"})


def project(client: httpx.Client, project_id: int) -> dict[str, Any]:
    r = client.get(f"/v1/projects/{project_id}")
    assert r.status_code == 200, r.text
    return r.json()


def certificates(r: Resident, project_id: int) -> list[dict[str, Any]]:
    got = r.get("/v1/me/certificates")
    assert got.status_code == 200, got.text
    return [c for c in got.json() if c["project_id"] == project_id]


# --- operators and browsing ---------------------------------------------------------------------------


def test_operators_open_projects_that_anyone_can_browse(client: httpx.Client, operator: Resident) -> None:
    made = new_project(operator, goal=1000, images=["https://img.example/tree.jpg"])
    assert (made["status"], made["goal"], made["raised"], made["donors"], made["progress_ppm"]) == ("open", 1000, 0,
                                                                                                 0, 0)
    assert made["title"] == {"zh-CN": "社区种树", "en": "Community trees"}
    assert made["outcome"] == {"zh-CN": "种下一棵树", "en": "One tree planted"}
    assert made["images"] == ["https://img.example/tree.jpg"] and made["completed_at"] is None
    assert project(client, made["id"]) == made  # no token needed
    listed = client.get("/v1/projects")
    assert listed.status_code == 200 and made["id"] in [p["id"] for p in listed.json()]
    assert_problem(client.get("/v1/projects/999999999"), 404, "project-not-found")
    assert_problem(client.get("/v1/projects/0"), 404, "project-not-found")
    assert_problem(client.get(f"/v1/projects/{2**63}"), 404)


def test_project_validation_duplicates_and_roles(client: httpx.Client, operator: Resident,
                                                 resident: Resident) -> None:
    good = {"code": f"wind-{uuid.uuid4().hex[:8]}", "title_zh": "风机", "title_en": "Wind turbine", "goal": 100}
    for bad, status in [({"code": "Bad Code!"}, 422), ({"code": "x"}, 422), ({"code": "-lead"}, 422),
                        ({"goal": 0}, 400), ({"goal": -5}, 400), ({"goal": "100"}, 400), ({"title_zh": ""}, 422),
                        ({"title_en": "x" * 121}, 400), ({"images": ["http://plain.example/a.jpg"]}, 422),
                        ({"surprise": 1}, 400), ({"status": "completed"}, 400)]:
        assert_problem(operator.post("/v1/admin/projects", json={**good, **bad}), status)
    assert operator.post("/v1/admin/projects", json=good).status_code == 201
    assert_problem(operator.post("/v1/admin/projects", json=good), 409, "project-code-taken")
    assert_problem(resident.post("/v1/admin/projects", json={**good, "code": good["code"] + "-2"}), 403,
                   "operator-only")
    assert_problem(client.post("/v1/admin/projects", json=good), 401)
    made = new_project(operator)
    assert_problem(resident.patch(f"/v1/admin/projects/{made['id']}", json={"status": "closed"}), 403,
                   "operator-only")
    assert_problem(operator.patch("/v1/admin/projects/999999999", json={"status": "closed"}), 404,
                   "project-not-found")
    assert_problem(operator.patch(f"/v1/admin/projects/{made['id']}", json={"status": "completed"}), 400)


# --- donating -----------------------------------------------------------------------------------------


async def test_a_donation_is_made_once_per_idempotency_key(client: httpx.Client, operator: Resident) -> None:
    r = funded(client, operator, 100)
    p = new_project(operator)
    first = donate(r, p["id"], 30, key="gift-1")
    assert first.status_code == 201, first.text
    made = first.json()
    assert (made["project_id"], made["amount"]) == (p["id"], 30)
    again = donate(r, p["id"], 30, key="gift-1")
    assert again.status_code == 200, again.text
    assert again.json()["id"] == made["id"] and again.json()["amount"] == 30
    assert energy(r)["available"] == 70 and project(client, p["id"])["raised"] == 30
    assert_problem(donate(r, p["id"], 31, key="gift-1"), 422, "idempotency-key-reused")
    other = new_project(operator)
    assert_problem(donate(r, other["id"], 30, key="gift-1"), 422, "idempotency-key-reused")
    # Keys are per resident: someone else's gift-1 is their own.
    someone = funded(client, operator, 5)
    assert donate(someone, p["id"], 5, key="gift-1").status_code == 201
    assert energy(r)["available"] == 70 and project(client, p["id"])["raised"] == 35
    assert energy(r)["lifetime"]["donated"] == 30
    await assert_ledger_ok()


async def test_the_same_donation_sent_ten_times_at_once_is_made_once(client: httpx.Client, base_url: str,
                                                                     operator: Resident) -> None:
    r = funded(client, operator, 100)
    p = new_project(operator)
    answers = race(10, lambda: httpx.Client(base_url=base_url, timeout=30),
                   lambda http: http.post(f"/v1/projects/{p['id']}/donations", json={"amount": 40},
                                          headers={**r.headers, "Idempotency-Key": "one-tap"}))
    assert sorted(a.status_code for a in answers) == [200] * 9 + [201], [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert energy(r)["available"] == 60 and project(client, p["id"])["raised"] == 40
    await assert_ledger_ok()


async def test_a_donation_never_gives_more_than_is_available(client: httpx.Client, operator: Resident) -> None:
    r = funded(client, operator, 50)
    p = new_project(operator)
    problem = assert_problem(donate(r, p["id"], 51, key="too-much"), 409, "insufficient-energy")
    assert problem["available"] == 50
    assert energy(r)["available"] == 50 and project(client, p["id"])["raised"] == 0
    award(operator, r, 1)  # a refused donation stored nothing, so its key may be used again
    assert donate(r, p["id"], 51, key="too-much").status_code == 201
    assert energy(r)["available"] == 0
    for amount in (0, -1, 10**12, "5", True, 1.5, None):
        assert_problem(donate(r, p["id"], amount), 400)
    assert_problem(r.post(f"/v1/projects/{p['id']}/donations", json={"amount": 1, "note": "hi"}), 400)
    assert_problem(donate(r, 999999999, 1), 404, "project-not-found")
    assert_problem(client.post(f"/v1/projects/{p['id']}/donations", json={"amount": 1}), 401)
    assert project(client, p["id"])["raised"] == 51
    await assert_ledger_ok()


async def test_a_closed_project_refuses_donations_until_reopened(client: httpx.Client, operator: Resident) -> None:
    r = funded(client, operator, 20)
    p = new_project(operator)
    closed = operator.patch(f"/v1/admin/projects/{p['id']}", json={"status": "closed"})
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    assert_problem(donate(r, p["id"], 5), 409, "project-closed")
    assert p["id"] not in [x["id"] for x in client.get("/v1/projects").json()]
    assert project(client, p["id"])["status"] == "closed"
    assert operator.patch(f"/v1/admin/projects/{p['id']}", json={"status": "open"}).status_code == 200
    assert donate(r, p["id"], 5).status_code == 201
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    assert operator.patch(f"/v1/admin/projects/{p['id']}", json={"closes_at": past}).status_code == 200
    assert_problem(donate(r, p["id"], 5), 409, "project-closed")
    assert energy(r)["available"] == 15
    await assert_ledger_ok()


# --- meeting the goal ---------------------------------------------------------------------------------


async def test_meeting_the_goal_issues_one_certificate_per_donor_with_exact_shares(client: httpx.Client,
                                                                                   operator: Resident,
                                                                                   db: object) -> None:
    a, b, c = (funded(client, operator, 10) for _ in range(3))
    p = new_project(operator, goal=7)
    for donor, amount in [(a, 1), (b, 2), (a, 1), (c, 3)]:  # a gives twice; 2/7, 2/7, 3/7 do not divide evenly
        assert donate(donor, p["id"], amount, key="c-gift" if donor is c else None).status_code == 201
    assert project(client, p["id"])["status"] == "open"  # completion is the outbox handler's work
    await deliver_pending_events()

    done = project(client, p["id"])
    assert (done["status"], done["raised"], done["donors"], done["progress_ppm"]) == ("completed", 7, 3, PPM)
    assert done["completed_at"] is not None
    given = {a.holder_id: 2, b.holder_id: 2, c.holder_id: 3}
    expected = dict(zip(given, largest_remainder(PPM, list(given.values())), strict=True))
    certs = {}
    for donor in (a, b, c):
        (cert,) = certificates(donor, p["id"])
        assert (cert["amount"], cert["share_ppm"]) == (given[donor.holder_id], expected[donor.holder_id])
        assert (cert["donors"], cert["goal"], cert["raised"]) == (3, 7, 7)
        assert cert["project"] == {"zh-CN": "社区种树", "en": "Community trees"}
        certs[donor.holder_id] = cert
    assert sum(x["share_ppm"] for x in certs.values()) == PPM
    assert sorted(x["share_ppm"] for x in certs.values()) == [285714, 285714, 428572]
    assert sum(x["amount"] for x in certs.values()) == done["raised"]
    assert len({x["number"] for x in certs.values()}) == 3

    assert await complete_if_met(p["id"]) == 0  # handling the event again issues nothing twice
    await deliver_pending_events()
    assert [len(certificates(d, p["id"])) for d in (a, b, c)] == [1, 1, 1]
    assert_problem(donate(a, p["id"], 1), 409, "project-completed")
    replay = donate(c, p["id"], 3, key="c-gift")  # a retry of a gift made before completion is still answered
    assert (replay.status_code, replay.json()["amount"]) == (200, 3)
    assert energy(a)["available"] == 8
    assert_problem(operator.patch(f"/v1/admin/projects/{p['id']}", json={"status": "closed"}), 409,
                   "project-completed")

    (mine,) = [d for d in a.get("/v1/me/donations").json() if d["project"]["id"] == p["id"]]
    assert (mine["given"], mine["times"], mine["share_ppm"]) == (2, 2, 2 * PPM // 7)
    assert mine["project"]["status"] == "completed" and mine["last_at"]
    assert register(client).get("/v1/me/certificates").json() == []
    await assert_ledger_ok()


def test_my_donations_list_each_project_with_my_total_times_and_share(client: httpx.Client,
                                                                      operator: Resident) -> None:
    me, other = funded(client, operator, 100), funded(client, operator, 100)
    first, second = new_project(operator), new_project(operator)
    for donor, p, amount in [(me, first, 10), (other, first, 30), (me, first, 5), (me, second, 7)]:
        assert donate(donor, p["id"], amount).status_code == 201
    listed = me.get("/v1/me/donations")
    assert listed.status_code == 200, listed.text
    rows = listed.json()
    assert [row["project"]["id"] for row in rows] == [second["id"], first["id"]]  # latest gift first
    assert [(row["given"], row["times"], row["share_ppm"]) for row in rows] == [(7, 1, PPM), (15, 2, PPM * 15 // 45)]
    assert rows[1]["project"]["raised"] == 45 and rows[1]["project"]["donors"] == 2
    assert register(client).get("/v1/me/donations").json() == []
    assert_problem(client.get("/v1/me/donations"), 401)
    assert_problem(client.get("/v1/me/certificates"), 401)


async def test_twenty_residents_donating_while_the_goal_is_crossed_are_certified_exactly(
        client: httpx.Client, base_url: str, operator: Resident, db: object) -> None:
    """Three waves of 20 donations at once (77 energy a wave, goal 100), while the completion handler's
    work runs over and over: each donation is taken before completion or refused after it, never lost."""
    donors = [funded(client, operator, 50) for _ in range(20)]
    amounts = {d.holder_id: i % 7 + 1 for i, d in enumerate(donors)}
    by_token = {d.headers["Authorization"]: d.holder_id for d in donors}
    p = new_project(operator, goal=100)

    def waves() -> list[httpx.Response]:
        responses: list[httpx.Response] = []
        for wave in range(3):
            queue, lock = iter(donors), threading.Lock()

            def act(http: httpx.Client, wave: int = wave, queue: Any = queue, lock: Any = lock) -> httpx.Response:
                with lock:
                    donor = next(queue)
                return http.post(f"/v1/projects/{p['id']}/donations", json={"amount": amounts[donor.holder_id]},
                                 headers={**donor.headers, "Idempotency-Key": f"wave-{wave}"})

            responses += race(20, lambda: httpx.Client(base_url=base_url, timeout=30), act)
        return responses

    racing = asyncio.ensure_future(asyncio.to_thread(waves))
    while not racing.done():
        await complete_if_met(p["id"])
        await asyncio.sleep(0.001)
    responses = racing.result()
    await deliver_pending_events()

    given = dict.fromkeys(amounts, 0)
    for x in responses:
        if x.status_code == 201:
            holder = by_token[x.request.headers["Authorization"]]
            given[holder] += amounts[holder]
        else:
            assert_problem(x, 409, "project-completed")
    raised = sum(given.values())
    done = project(client, p["id"])
    assert done["status"] == "completed" and done["raised"] == raised >= 100
    certified = {d.holder_id: certificates(d, p["id"]) for d in donors}
    assert {h: sum(c["amount"] for c in certs) for h, certs in certified.items()} == given
    assert all(len(certs) == (given[h] > 0) for h, certs in certified.items())
    assert sum(c["share_ppm"] for certs in certified.values() for c in certs) == PPM
    assert all(energy(d)["available"] == 50 - given[d.holder_id] for d in donors)
    await assert_ledger_ok()
