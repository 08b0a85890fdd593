"""Corrections are reversing entries: the original credit stays in the chain, a negative entry cancels it,
totals net out, the chain still verifies, and the resident reads why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.partner_support import bearer, create_partner, link
from tests.support import Resident, assert_problem, register


def _credited(client: httpx.Client, base_url: str, operator: Resident) -> tuple[Resident, dict]:
    partner = create_partner(operator, allowed_behaviours=["parcel_box_reuse"])
    resident = register(client)
    token = link(client, base_url, resident, partner)["access_token"]
    occurred = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    receipt = client.post("/v1/partner/activity", headers=bearer(token), json={
        "event_id": "box-1", "behaviour": "parcel_box_reuse", "quantity": 1, "occurred_at": occurred,
    }).json()
    assert receipt["verdict"] == "credited", receipt
    return resident, receipt


def test_an_operator_reverses_a_credit_and_the_book_nets_out(
    client: httpx.Client, base_url: str, operator: Resident
) -> None:
    resident, receipt = _credited(client, base_url, operator)
    entry = resident.get("/v1/me/book/entries").json()["items"][0]
    assert entry["kind"] == "credit" and entry["reduction_mg"] == receipt["credited_mg"]

    # Only operators, and with a reason.
    assert_problem(resident.post(f"/v1/admin/book/entries/{entry['id']}/reverse", json={"reason": "x"}), 403,
                   "operator-only")
    entry_id = entry["id"]
    assert_problem(operator.post(f"/v1/admin/book/entries/{entry_id}/reverse", json={"reason": "  "}), 422,
                   "reason-required")

    done = operator.post(f"/v1/admin/book/entries/{entry_id}/reverse",
                         json={"reason": "包裹箱已被他人领取 / box collected by someone else"})
    assert done.status_code == 201, done.text
    assert done.json()["reduction_mg"] == -receipt["credited_mg"] and done.json()["seq"] == 2
    assert_problem(operator.post(f"/v1/admin/book/entries/{entry_id}/reverse", json={"reason": "again"}), 409,
                   "already-reversed")
    assert_problem(operator.post(f"/v1/admin/book/entries/{done.json()['entry_id']}/reverse",
                                 json={"reason": "undo"}), 409, "not-a-credit")
    assert_problem(operator.post("/v1/admin/book/entries/999999999/reverse", json={"reason": "x"}), 404,
                   "entry-not-found")

    book = resident.get("/v1/me/book").json()
    assert book["totals"]["all_time_mg"] == 0 and book["totals"]["energy"] == 0
    chain = resident.get("/v1/me/book/entries").json()["items"]
    assert [(e["seq"], e["kind"], e["reduction_mg"]) for e in chain] == [
        (1, "credit", receipt["credited_mg"]), (2, "reversal", -receipt["credited_mg"])
    ]
    assert chain[1]["prev_hash"] == chain[0]["entry_hash"]
    assert resident.get("/v1/me/book/verify").json()["ok"] is True
    activity = resident.get("/v1/me/activities").json()["items"][0]
    assert activity["verdict"] == "credited" and activity["reversed_at"] is not None
    assert activity["reversal_note"].startswith("包裹箱")
