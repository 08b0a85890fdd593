"""The partner API as partners see it: reporting with bearer tokens, signed pushes, rate limits and quotas.

Why: partners are other companies' servers retrying on their own schedule, so every report must be
idempotent by event id (a retry gets the stored verdict back), every verdict must carry a code a machine can
act on and a reason the resident can read, one partner must never see or write another's residents, and a
partner's limits must hold across all API worker processes.
Everything runs against the real API process, PostgreSQL and Valkey.
"""

from __future__ import annotations

import base64
import itertools
import os
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from api.ratelimit import RateLimiter
from tests.partner_support import Partner, activity, bearer, create_partner, link, signed_push
from tests.support import ApiProcess, Resident, assert_problem, race, register
from wallet.db import connection
from wallet.errors import DomainError
from wallet.partners.signatures import TOLERANCE_S, sign, verify


def report(client: httpx.Client, token: str, *items: dict[str, Any]) -> httpx.Response:
    return client.post("/v1/partner/activities", json={"activities": list(items)}, headers=bearer(token))


def reported(client: httpx.Client, token: str, *items: dict[str, Any]) -> dict[str, Any]:
    r = report(client, token, *items)
    assert r.status_code == 200, r.text
    return r.json()


def book_of(client: httpx.Client, token: str) -> dict[str, Any]:
    r = client.get("/v1/partner/book", headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json()


def book(client: httpx.Client, token: str) -> int:
    """How many activities this partner reported for the resident, whatever their verdict."""
    return book_of(client, token)["activities"]


def credited(client: httpx.Client, token: str) -> tuple[int, int]:
    """(credited activities, reduction in mg) the resident's book holds from this partner."""
    shown = book_of(client, token)
    return shown["credited_activities"], shown["reduction_mg"]


def tally(body: dict[str, Any]) -> tuple[int, int, int, int, int, int]:
    """A batch's counts: (credited, partially_credited, duplicate, rejected, held, conflicts)."""
    return (body["credited"], body["partially_credited"], body["duplicate"], body["rejected"], body["held"],
            body["conflicts"])


def at(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


def linked(client: httpx.Client, base_url: str, operator: Resident, **partner: Any) -> str:
    """A fresh partner's access token for a fresh resident who linked it."""
    return link(client, base_url, register(client), create_partner(operator, **partner))["access_token"]


def accounts(resident: Resident) -> dict[str, Any]:
    r = resident.get("/v1/me/accounts")
    assert r.status_code == 200, r.text
    return r.json()


def random_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


# Factors of the current catalogue (wallet/methodology/catalogue.toml), in mg CO2e per unit, written out
# here rather than read from the catalogue so that a changed factor shows up as a failing test.
CUTLERY_MG = 15_943  # no_disposable_cutlery: daily cap 5 orders per resident
PARCEL_BOX_MG = 37_000  # parcel_box_reuse: daily cap 10 boxes per resident
CREDITED_REASON = {"zh-CN": "已计入碳账本。", "en": "Counted in your carbon book."}


# --- 1. Reporting -------------------------------------------------------------------------------------


def test_same_event_id_replays_the_verdict_and_different_content_is_refused(
    client: httpx.Client, base_url: str, operator: Resident
) -> None:
    token = linked(client, base_url, operator)
    item = activity()
    first = reported(client, token, item)
    receipt = first["receipts"][0]
    assert tally(first) == (1, 0, 0, 0, 0, 0)
    assert receipt["activity_id"]
    assert receipt == {
        "event_id": item["event_id"], "activity_id": receipt["activity_id"], "verdict": "credited", "code": "credited",
        "reason": CREDITED_REASON, "credited_quantity": 1, "credited_mg": CUTLERY_MG, "replayed": False,
    }
    # The same report again gets the stored verdict back, marked as a replay; nothing is credited twice.
    again = reported(client, token, item)
    assert again["receipts"][0] == {**receipt, "replayed": True}
    assert tally(again) == (0, 0, 0, 0, 0, 0) and again["replayed"] == 1  # replays are counted apart
    changed = reported(client, token, {**item, "quantity": 2})
    assert changed["receipts"][0] == {
        "event_id": item["event_id"], "activity_id": receipt["activity_id"], "verdict": None,
        "code": "event-id-reused", "reason": {"zh-CN": "这个事件编号已用于另一条不同的记录。",
                                              "en": "This event id was already used for a different report."},
        "credited_quantity": 0, "credited_mg": 0, "replayed": False,
    }
    assert tally(changed) == (0, 0, 0, 0, 0, 1)
    assert book(client, token) == 1
    assert credited(client, token) == (1, CUTLERY_MG)


def test_a_batch_may_repeat_an_event_id(client: httpx.Client, base_url: str, operator: Resident) -> None:
    token = linked(client, base_url, operator)
    a, b = activity(), activity()
    body = reported(client, token, a, a, {**a, "quantity": 3}, b)
    verdicts = [(r["event_id"], r["verdict"], r["code"], r["replayed"]) for r in body["receipts"]]
    assert verdicts == [
        (a["event_id"], "credited", "credited", False), (a["event_id"], "credited", "credited", True),
        (a["event_id"], None, "event-id-reused", False), (b["event_id"], "credited", "credited", False),
    ]
    ids = [r["activity_id"] for r in body["receipts"]]
    assert ids[0] == ids[1] == ids[2] and ids[3] not in (None, ids[0])
    assert [r["credited_mg"] for r in body["receipts"]] == [CUTLERY_MG, CUTLERY_MG, 0, CUTLERY_MG]
    assert tally(body) == (2, 0, 0, 0, 0, 1) and body["replayed"] == 1  # a's repeat answers with its verdict
    assert book(client, token) == 2
    assert credited(client, token) == (2, 2 * CUTLERY_MG)


def test_rejections_carry_a_code_and_a_reason_and_credit_nothing(
    client: httpx.Client, base_url: str, operator: Resident
) -> None:
    """Judged and kept (the resident sees what was reported and why it did not count), but never credited."""
    token = linked(client, base_url, operator)
    cases = {
        "behaviour-not-allowed": activity(behaviour="shared_bike_ride"),  # in the catalogue, not allowed here
        "unknown-behaviour": activity(behaviour="teleportation"),  # the schema takes any string
        "occurred-in-future": activity(occurred_at=at(timedelta(hours=1))),
        "outside-reporting-window": activity(occurred_at=at(-timedelta(days=31))),
        "invalid-interval": activity(occurred_at=at(-timedelta(hours=1)), ended_at=at(-timedelta(hours=2))),
    }
    body = reported(client, token, *cases.values())
    receipts = body["receipts"]
    assert [r["code"] for r in receipts] == list(cases)
    assert all(r["verdict"] == "rejected" and r["activity_id"] and not r["replayed"] for r in receipts)
    assert all(r["credited_quantity"] == r["credited_mg"] == 0 and r["reason"]["zh-CN"] for r in receipts)
    assert len({r["activity_id"] for r in receipts}) == len(cases)
    assert [r["reason"]["en"] for r in receipts] == [
        "Test Platform is not allowed to report this kind of action.",
        "“teleportation” is not in the methodology catalogue, so it cannot be counted.",
        "It is dated in the future, so it cannot be counted.",
        "It was reported more than 30 days after it happened, too late to count.",
        "It ends before it starts.",
    ]
    assert tally(body) == (0, 0, 0, len(cases), 0, 0)
    assert book(client, token) == len(cases)
    assert credited(client, token) == (0, 0)


def test_malformed_batches_are_400_problems(client: httpx.Client, base_url: str, operator: Resident) -> None:
    token = linked(client, base_url, operator)
    naive = activity(occurred_at=datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds"))
    bodies: list[Any] = [
        {"activities": [naive]}, {"activities": [activity(colour="green")]}, {"activities": [activity()], "extra": 1},
        {"activities": []}, {"activities": [activity(quantity=0)]}, {"activities": [activity(event_id="has space")]},
        {"activities": [activity() for _ in range(1001)]},
    ]
    for body in bodies:
        assert_problem(client.post("/v1/partner/activities", json=body, headers=bearer(token)), 400, "invalid-request")
    assert book(client, token) == 0
    # A thousand is the most one request may carry: every one is stored and judged. All are the same
    # resident's cutlery on one day, so the daily cap of 5 credits the first five and rejects the rest.
    thousand = reported(client, token, *(activity() for _ in range(1000)))
    receipts = thousand["receipts"]
    assert len(receipts) == 1000 and len({r["activity_id"] for r in receipts} - {None}) == 1000
    assert [r["verdict"] for r in receipts[:5]] == ["credited"] * 5
    assert {(r["verdict"], r["code"]) for r in receipts[5:]} == {("rejected", "daily-cap-reached")}
    assert tally(thousand) == (5, 0, 0, 995, 0, 0)
    assert book(client, token) == 1000
    assert credited(client, token) == (5, 5 * CUTLERY_MG)


def test_book_and_accounts_count_per_source(client: httpx.Client, base_url: str, operator: Resident) -> None:
    a, b = create_partner(operator, name_en="Platform A"), create_partner(operator, name_en="Platform B")
    resident = register(client)
    token_a, token_b = link(client, base_url, resident, a), link(client, base_url, resident, b)
    assert tally(reported(client, token_a["access_token"], activity(), activity())) == (2, 0, 0, 0, 0, 0)
    # B reports two boxes, and the cutlery of an order A already counted minutes ago: it counts once.
    from_b = reported(client, token_b["access_token"], *(activity(behaviour="parcel_box_reuse") for _ in range(2)),
                      activity())
    assert tally(from_b) == (2, 0, 1, 0, 0, 0)
    again = from_b["receipts"][2]
    assert (again["verdict"], again["code"], again["credited_mg"]) == ("duplicate", "already-counted", 0)
    assert again["activity_id"] and again["reason"]["en"].startswith("Already counted from Platform A at ")
    assert book(client, token_a["access_token"]) == 2
    assert book(client, token_b["access_token"]) == 3
    assert credited(client, token_a["access_token"]) == (2, 2 * CUTLERY_MG)
    assert credited(client, token_b["access_token"]) == (2, 2 * PARCEL_BOX_MG)  # never A's activities

    mine = accounts(resident)
    subs = {s["id"]: s for s in mine["sub_accounts"]}
    self_sub = mine["sub_accounts"][0]
    assert self_sub["kind"] == "self" and self_sub["partner"] is None and self_sub["activities"] == 0
    assert subs[token_a["sub_account_id"]]["activities"] == 2
    assert subs[token_b["sub_account_id"]]["activities"] == 3
    assert mine["primary"]["activities"] == sum(s["activities"] for s in mine["sub_accounts"]) == 5
    assert mine["primary"]["linked_partners"] == 2

    assert_problem(resident.delete(f"/v1/me/accounts/{self_sub['id']}"), 409, "self-sub-account")
    assert_problem(resident.delete(f"/v1/me/accounts/{uuid.uuid4()}"), 404, "sub-account-not-found")
    stranger = register(client)  # someone else's sub-account is as unknown as a random id
    assert_problem(stranger.delete(f"/v1/me/accounts/{token_a['sub_account_id']}"), 404, "sub-account-not-found")
    assert accounts(stranger)["sub_accounts"][0]["kind"] == "self"


# --- 2. Partner isolation -----------------------------------------------------------------------------


def test_a_token_acts_only_for_the_resident_who_granted_it(
    client: httpx.Client, base_url: str, operator: Resident
) -> None:
    a, b = create_partner(operator), create_partner(operator)
    first, second = register(client, nickname="只连甲"), register(client, nickname="只连乙")
    first_a, second_b = link(client, base_url, first, a), link(client, base_url, second, b)
    reported(client, first_a["access_token"], activity())

    profile = client.get("/v1/partner/profile", headers=bearer(second_b["access_token"]))
    assert profile.json() == {"sub_account_id": second_b["sub_account_id"], "nickname": "只连乙"}
    reported(client, second_b["access_token"], activity(), activity())
    assert book(client, second_b["access_token"]) == 2
    assert book(client, first_a["access_token"]) == 1

    # The first resident's book holds A's report only and no trace of B.
    mine = accounts(first)
    assert {s["partner"]["id"] for s in mine["sub_accounts"] if s["partner"]} == {a.id}
    assert mine["primary"]["activities"] == 1
    # B cannot reach the first resident by naming A's sub-account in a signed push either.
    refused = signed_push(client, b, [{**activity(), "sub_account_id": first_a["sub_account_id"]}])
    assert [(r["verdict"], r["code"], r["activity_id"]) for r in refused.json()["receipts"]] == [
        ("rejected", "not-linked", None)
    ]
    assert accounts(first)["primary"]["activities"] == 1


def test_an_unlinked_resident_refuses_further_reports(client: httpx.Client, base_url: str, operator: Resident) -> None:
    partner, resident = create_partner(operator), register(client)
    tokens = link(client, base_url, resident, partner)
    token, sub_id = tokens["access_token"], tokens["sub_account_id"]
    assert tally(reported(client, token, activity(), activity())) == (2, 0, 0, 0, 0, 0)

    assert resident.delete(f"/v1/me/accounts/{sub_id}").status_code == 204
    assert_problem(report(client, token, activity()), 403, "resident-unlinked")
    assert_problem(client.get("/v1/partner/book", headers=bearer(token)), 403, "resident-unlinked")
    pushed = signed_push(client, partner, [{**activity(), "sub_account_id": sub_id}])
    assert [(r["verdict"], r["code"], r["activity_id"]) for r in pushed.json()["receipts"]] == [
        ("rejected", "not-linked", None)
    ]

    mine = accounts(resident)
    sub = next(s for s in mine["sub_accounts"] if s["id"] == sub_id)
    assert (sub["status"], sub["activities"], sub["scopes"]) == ("unlinked", 2, [])
    assert mine["primary"]["activities"] == 2 and mine["primary"]["linked_partners"] == 0
    assert resident.delete(f"/v1/me/accounts/{sub_id}").status_code == 204  # unlinking twice changes nothing


# --- 3. Signed pushes ---------------------------------------------------------------------------------


def push_raw(client: httpx.Client, client_id: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return client.post(f"/v1/partners/{client_id}/pushes/activities", content=body,
                       headers={"content-type": "application/json", **headers})


def signed_headers(secret: str, body: bytes, message_id: str, timestamp: int) -> dict[str, str]:
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, message_id, timestamp, body)}


def item_for(sub_account_id: str, **extra: Any) -> dict[str, Any]:
    return {**activity(**extra), "sub_account_id": sub_account_id}


@pytest.fixture(scope="module")
def pushing(client: httpx.Client, base_url: str, operator: Resident) -> dict[str, Any]:
    """One partner with two linked residents and one who unlinked, and another partner with its own."""
    partner, other = create_partner(operator), create_partner(operator)
    tokens = [link(client, base_url, register(client), partner) for _ in range(2)]
    gone = register(client)
    gone_sub = link(client, base_url, gone, partner)["sub_account_id"]
    assert gone.delete(f"/v1/me/accounts/{gone_sub}").status_code == 204
    foreign = link(client, base_url, register(client), other)["sub_account_id"]
    return {"partner": partner, "tokens": tokens, "unlinked": gone_sub, "foreign": foreign}


def test_push_for_linked_residents_is_credited(client: httpx.Client, pushing: dict[str, Any]) -> None:
    """Signed with several `v1,` entries of which one matches, as a partner rotating its secret would."""
    first, second = pushing["tokens"]
    before = [book(client, t["access_token"]) for t in (first, second)]
    keys = [random_webhook_secret(), pushing["partner"].webhook_secret, random_webhook_secret()]
    items = [item_for(first["sub_account_id"]), item_for(second["sub_account_id"])]
    r = signed_push(client, pushing["partner"], items, secrets_=keys)
    assert r.status_code == 200, r.text
    assert tally(r.json()) == (2, 0, 0, 0, 0, 0) and all(x["activity_id"] for x in r.json()["receipts"])
    assert [book(client, t["access_token"]) for t in (first, second)] == [n + 1 for n in before]


def test_push_refuses_every_foreign_sub_account_alike(client: httpx.Client, pushing: dict[str, Any]) -> None:
    ours = pushing["tokens"][0]["sub_account_id"]
    items = [item_for(pushing["foreign"]), item_for(pushing["unlinked"]), item_for(str(uuid.uuid4())), item_for(ours)]
    body = signed_push(client, pushing["partner"], items).json()
    refused = body["receipts"][:3]
    assert [(r["verdict"], r["code"], r["activity_id"]) for r in refused] == [("rejected", "not-linked", None)] * 3
    # Nothing tells a foreign resident from a random id.
    assert len({(r["reason"]["zh-CN"], r["reason"]["en"]) for r in refused}) == 1 and refused[0]["reason"]["en"]
    assert body["receipts"][3]["verdict"] == "credited" and body["receipts"][3]["activity_id"]
    assert tally(body) == (1, 0, 0, 3, 0, 0)


def test_push_signature_failures(client: httpx.Client, pushing: dict[str, Any]) -> None:
    partner: Partner = pushing["partner"]
    sub = pushing["tokens"][0]["sub_account_id"]
    before = book(client, pushing["tokens"][0]["access_token"])
    forged = signed_push(client, partner, [item_for(sub)], secrets_=[random_webhook_secret()])
    assert_problem(forged, 401, "signature-invalid")

    body = httpx.Request("POST", "/", json={"activities": [item_for(sub)]}).content
    headers = signed_headers(partner.webhook_secret, body, "msg_" + uuid.uuid4().hex, int(time.time()))
    altered = body.replace(b'"quantity":1', b'"quantity":9')
    assert altered != body
    assert_problem(push_raw(client, partner.client_id, altered, headers), 401, "signature-invalid")
    for missing in headers:
        partial = {k: v for k, v in headers.items() if k != missing}
        assert_problem(push_raw(client, partner.client_id, body, partial), 401, "signature-missing")
    assert_problem(push_raw(client, "cwc_nobody", body, headers), 401, "signature-invalid")
    assert book(client, pushing["tokens"][0]["access_token"]) == before


def test_push_timestamps_outside_tolerance(client: httpx.Client, pushing: dict[str, Any]) -> None:
    sub = pushing["tokens"][0]["sub_account_id"]
    for offset in (-301, 301):
        if (fraction := time.time() % 1) > 0.5:  # so the server reads the same whole second as we do
            time.sleep(1.02 - fraction)
        r = signed_push(client, pushing["partner"], [item_for(sub)], timestamp=int(time.time()) + offset)
        assert_problem(r, 401, "signature-expired")
    # The exact edges, on a fixed clock.
    secret, now = random_webhook_secret(), 1_800_000_000
    for offset in (-TOLERANCE_S, TOLERANCE_S):
        assert verify([secret], signed_headers(secret, b"{}", "m1", now + offset), b"{}", now_s=now) == "m1"
        with pytest.raises(DomainError, match="webhook-timestamp"):
            verify([secret], signed_headers(secret, b"{}", "m1", now + offset * 301 // 300), b"{}", now_s=now)


def test_a_replayed_push_is_refused_and_records_nothing(client: httpx.Client, pushing: dict[str, Any]) -> None:
    token = pushing["tokens"][1]
    before = book(client, token["access_token"])
    message_id, items = "msg_" + uuid.uuid4().hex, [item_for(token["sub_account_id"])]
    first = signed_push(client, pushing["partner"], items, message_id=message_id, timestamp=int(time.time()) - 10)
    assert first.status_code == 200, first.text
    # Re-signed with a fresh timestamp, and even carrying new events: the webhook-id was used.
    for body in (items, [item_for(token["sub_account_id"])]):
        assert_problem(signed_push(client, pushing["partner"], body, message_id=message_id), 409, "push-replayed")
    assert book(client, token["access_token"]) == before + 1


def test_a_suspended_partner_cannot_push(client: httpx.Client, base_url: str, operator: Resident) -> None:
    partner = create_partner(operator)
    tokens = link(client, base_url, register(client), partner)
    status = f"/v1/admin/partners/{partner.id}/status"
    assert operator.post(status, json={"status": "suspended", "reason": "test"}).status_code == 200
    try:
        pushed = signed_push(client, partner, [item_for(tokens["sub_account_id"])])
        assert_problem(pushed, 403, "partner-suspended")
        forged = signed_push(client, partner, [item_for(tokens["sub_account_id"])], secrets_=[random_webhook_secret()])
        assert_problem(forged, 401, "signature-invalid")  # no status is revealed without a valid signature
        assert_problem(report(client, tokens["access_token"], activity()), 403, "partner-suspended")
    finally:
        assert operator.post(status, json={"status": "active"}).status_code == 200
    assert signed_push(client, partner, [item_for(tokens["sub_account_id"])]).json()["credited"] == 1


def test_a_push_refused_before_its_receipt_can_be_sent_again(client: httpx.Client, pushing: dict[str, Any]) -> None:
    partner: Partner = pushing["partner"]
    sub = pushing["tokens"][0]["sub_account_id"]
    message_id = "msg_" + uuid.uuid4().hex
    bad = signed_push(client, partner, [item_for(sub, quantity=0)], message_id=message_id)
    assert_problem(bad, 400, "invalid-request")
    late = signed_push(client, partner, [item_for(sub)], message_id=message_id, timestamp=int(time.time()) - 400)
    assert_problem(late, 401, "signature-expired")
    fixed = signed_push(client, partner, [item_for(sub)], message_id=message_id)
    assert fixed.status_code == 200 and fixed.json()["credited"] == 1, fixed.text


def test_a_replayed_push_does_not_use_the_daily_quota(client: httpx.Client, base_url: str, operator: Resident) -> None:
    """Regression: the quota used to be taken before the replay was detected."""
    partner = create_partner(operator, daily_quota=4)
    sub = link(client, base_url, register(client), partner)["sub_account_id"]
    message_id = "msg_" + uuid.uuid4().hex
    items = [item_for(sub), item_for(sub)]
    assert signed_push(client, partner, items, message_id=message_id).json()["quota_remaining_today"] == 2
    assert_problem(signed_push(client, partner, items, message_id=message_id), 409, "push-replayed")
    again = signed_push(client, partner, [item_for(sub), item_for(sub)])
    assert again.status_code == 200, again.text  # two units are left: the replay recorded nothing


def test_a_deleted_resident_cannot_be_pushed_to(client: httpx.Client, base_url: str, operator: Resident) -> None:
    """Regression: pushes used to land in a deleted resident's book (the holder's status was not checked)."""
    partner, resident = create_partner(operator), register(client)
    tokens = link(client, base_url, resident, partner)
    assert resident.delete("/v1/me", json={"password": resident.password, "confirm": "DELETE"}).status_code == 204
    assert_problem(report(client, tokens["access_token"], activity()), 401, "token-revoked")  # the token path agrees
    pushed = signed_push(client, partner, [item_for(tokens["sub_account_id"])])
    assert pushed.status_code == 200, pushed.text
    assert [(r["verdict"], r["code"], r["activity_id"]) for r in pushed.json()["receipts"]] == [
        ("rejected", "not-linked", None)
    ]


# --- 4. Webhook secret rotation -----------------------------------------------------------------------


def test_webhook_secret_rotation_overlaps(client: httpx.Client, base_url: str, operator: Resident) -> None:
    partner = create_partner(operator)
    sub = link(client, base_url, register(client), partner)["sub_account_id"]
    rotate = f"/v1/admin/partners/{partner.id}/secrets/webhook"

    def push_with(secret: str) -> httpx.Response:
        return signed_push(client, partner, [item_for(sub)], secrets_=[secret])

    r = operator.post(rotate, json={"overlap_s": 3600})
    assert r.status_code == 201, r.text
    assert r.json()["purpose"] == "webhook" and r.json()["previous_valid_for_s"] == 3600
    old, new = partner.webhook_secret, r.json()["secret"]
    assert new.startswith("whsec_") and new != old
    assert push_with(old).status_code == 200 and push_with(new).status_code == 200
    newest = operator.post(rotate, json={"overlap_s": 0}).json()["secret"]
    assert_problem(push_with(old), 401, "signature-invalid")
    assert_problem(push_with(new), 401, "signature-invalid")
    assert push_with(newest).status_code == 200


# --- 5. Rate limits and daily quotas ------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_workers(work_dir: Path) -> Iterator[ApiProcess]:
    proc = ApiProcess(work_dir, workers=2)
    try:
        yield proc.start()
    finally:
        proc.stop()


def _a_burst_was_split(api: ApiProcess) -> bool:
    """Each worker keeps its own Prometheus registry and /metrics on a new connection answers for one of them.
    Every burst ends 5 OK + 3 limited, so a worker that only ever served whole bursts shows a multiple of
    (5, 3); once one burst was shared, both workers show something else. Counters move just after the
    response, hence the pause."""
    time.sleep(0.3)
    pattern = r'cw_http_requests_total\{{method="GET",route="/v1/partner/\w+",status="{status}"\}} (\S+)'
    for _ in range(3):
        with httpx.Client(base_url=api.base_url, timeout=10) as fresh:  # a new connection each time
            text = fresh.get("/metrics").text
        ok, limited = (sum(int(float(n)) for n in re.findall(pattern.format(status=s), text)) for s in (200, 429))
        if (ok % 5, limited % 3) != (0, 0) or ok // 5 != limited // 3:
            return True
    return False


def test_per_minute_limit_holds_across_two_worker_processes(
    client: httpx.Client, base_url: str, operator: Resident, two_workers: ApiProcess
) -> None:
    """8 concurrent reads against a limit of 5, repeated with fresh partners until one burst was served by
    both worker processes (the kernel picks the worker per connection, sometimes one takes all 8)."""
    paths = itertools.cycle(["/v1/partner/profile", "/v1/partner/book"])
    for _ in range(8):
        partner = create_partner(operator, rate_limit_per_minute=5)
        token = link(client, base_url, register(client), partner)["access_token"]
        # Linking used the token endpoint, which counts too: start this minute's window from zero.
        with redis.Redis.from_url(os.environ["REDIS_URL"]) as valkey:
            valkey.delete(RateLimiter(valkey).key("partner-rpm", partner.id))  # type: ignore[arg-type]
        results = race(8, lambda: httpx.Client(base_url=two_workers.base_url, timeout=30),
                       lambda http, auth=bearer(token): http.get(next(paths), headers=auth))
        assert Counter(r.status_code for r in results) == {200: 5, 429: 3}
        for r in results:
            if r.status_code == 429:
                body = assert_problem(r, 429, "rate-limited")
                assert 1 <= int(r.headers["retry-after"]) <= 60
                assert body["retry_after_s"] == int(r.headers["retry-after"])
        # The main API process shares the budget.
        assert_problem(client.get("/v1/partner/profile", headers=bearer(token)), 429, "rate-limited")
        if _a_burst_was_split(two_workers):
            return
    pytest.fail("one worker process served every burst, so the limit was never tested across processes")


def test_daily_quota_is_all_or_nothing(client: httpx.Client, base_url: str, operator: Resident) -> None:
    """The quota counts activities received, whatever their verdict: a rejected one uses it too."""
    token = linked(client, base_url, operator, daily_quota=10)
    boxes = [activity(behaviour="parcel_box_reuse") for _ in range(5)]
    first = reported(client, token, *boxes, activity(behaviour="teleportation"))
    assert tally(first) == (5, 0, 0, 1, 0, 0) and first["quota_remaining_today"] == 4

    over = report(client, token, *(activity() for _ in range(5)))
    body = assert_problem(over, 429, "daily-quota-exceeded")
    assert 1 <= int(over.headers["retry-after"]) <= 86400 and body["retry_after_s"] == int(over.headers["retry-after"])
    assert book(client, token) == 6  # nothing of the refused batch was stored
    assert credited(client, token) == (5, 5 * PARCEL_BOX_MG)

    last = reported(client, token, *(activity() for _ in range(4)))
    assert tally(last) == (4, 0, 0, 0, 0, 0) and last["quota_remaining_today"] == 0
    assert_problem(report(client, token, activity()), 429, "daily-quota-exceeded")
    assert book(client, token) == 10
    assert credited(client, token) == (9, 5 * PARCEL_BOX_MG + 4 * CUTLERY_MG)


# --- 6. Concurrency -----------------------------------------------------------------------------------


async def test_concurrent_reports_of_one_event_store_one_row(
    client: httpx.Client, base_url: str, operator: Resident, db: object
) -> None:
    token = linked(client, base_url, operator)
    item = activity()
    results = race(20, lambda: httpx.Client(base_url=base_url, timeout=30),
                   lambda http: http.post("/v1/partner/activities", json={"activities": [item]}, headers=bearer(token)))
    assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
    receipts = [r.json()["receipts"][0] for r in results]
    assert Counter((x["verdict"], x["replayed"]) for x in receipts) == {("credited", False): 1, ("credited", True): 19}
    assert len({x["activity_id"] for x in receipts}) == 1 and receipts[0]["activity_id"]
    assert {x["credited_mg"] for x in receipts} == {CUTLERY_MG}
    async with connection() as conn:
        rows = await conn.fetch("SELECT verdict FROM activity WHERE external_id = $1", item["event_id"])
        entries = await conn.fetchval("SELECT count(*) FROM book_entry WHERE activity = $1",
                                      uuid.UUID(receipts[0]["activity_id"]))
    assert [r["verdict"] for r in rows] == ["credited"]
    assert entries == 1  # credited once, whichever request won


async def test_concurrent_pushes_with_one_webhook_id(
    client: httpx.Client, base_url: str, operator: Resident, db: object
) -> None:
    partner = create_partner(operator)
    sub = link(client, base_url, register(client), partner)["sub_account_id"]
    message_id, items = "msg_" + uuid.uuid4().hex, [item_for(sub)]
    results = race(10, lambda: httpx.Client(base_url=base_url, timeout=30),
                   lambda http: signed_push(http, partner, items, message_id=message_id))
    assert Counter(r.status_code for r in results) == {200: 1, 409: 9}
    async with connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM activity WHERE sub_account = $1", uuid.UUID(sub)) == 1
        assert await conn.fetchval(
            "SELECT count(*) FROM partner_push_receipt WHERE partner = $1 AND message_id = $2",
            uuid.UUID(partner.id), message_id,
        ) == 1
