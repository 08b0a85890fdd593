"""Judgement of reported activities, end to end over HTTP: every verdict with its reason in zh-CN and en,
idempotent replays, first-claim-wins dedupe, caps in the holder's local day, the operator's review queue,
the resident's reads of the book, signed pushes, outbox events and crediting under races.

Each test makes its own partners and residents. Expected amounts come from the methodology catalogue
(floor(quantity x factor_mg / per) of the current version), never from literals. Five tests here first
failed on real bugs (an impossible interval failing its batch, the monthly cap read only up to the latest day,
a duplicate credited twice through review, a held copy blocking the real report, long trips missed by the
overlap check); they now guard the fixes.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.partner_support import Partner, bearer, create_partner, link, signed_push
from tests.support import Resident, assert_problem, race, register
from wallet.db import connection
from wallet.methodology.catalogue import CURRENT_RELEASE, behaviours, current_version, reduction_mg

ALLOWED = ["no_disposable_cutlery", "clean_plate", "walking_steps", "shared_bike_ride", "bus_trip", "subway_trip",
           "rail_trip", "home_electricity_saved"]
SHANGHAI = ZoneInfo("Asia/Shanghai")
STEPS = current_version("walking_steps")


# --- helpers ------------------------------------------------------------------------------------------


@dataclass
class Source:
    """A partner linked by one resident: reports go through its access token to the resident's sub-account."""

    client: httpx.Client
    partner: Partner
    token: str
    sub: str
    name: str
    name_en: str

    def one(self, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
        r = self.client.post("/v1/partner/activity", json=body, headers=bearer(self.token))
        assert r.status_code == status, r.text
        return r.json()

    def batch(self, *bodies: dict[str, Any]) -> dict[str, Any]:
        r = self.client.post("/v1/partner/activities", json={"activities": list(bodies)}, headers=bearer(self.token))
        assert r.status_code == 200, r.text
        return r.json()


Linker = Callable[..., Source]


@pytest.fixture
def linked(client: httpx.Client, base_url: str, operator: Resident) -> Linker:
    """`linked(resident, **partner)`: a new partner (unique names, ALLOWED behaviours) the resident linked."""

    def make(resident: Resident, **partner: Any) -> Source:
        tag = uuid.uuid4().hex[:6]
        names = {"name": f"绿行{tag}", "name_en": f"GreenGo {tag}"}
        p = create_partner(operator, **{"allowed_behaviours": ALLOWED, **names, **partner})
        tokens = link(client, base_url, resident, p)
        return Source(client, p, tokens["access_token"], tokens["sub_account_id"], names["name"], names["name_en"])

    return make


def ago(**delta: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(**delta)


def mg(code: str, quantity: int) -> int:
    return reduction_mg(current_version(code), quantity)


def sums(rows: list[dict[str, Any]], key: str) -> dict[str, int]:
    out = Counter[str]()
    for row in rows:
        out[row[key]] += row["reduction_mg"]
    return dict(out)


def local_time(t: datetime, zone: ZoneInfo = SHANGHAI) -> str:
    return t.astimezone(zone).strftime("%m-%d %H:%M")


def item(behaviour: str = "no_disposable_cutlery", quantity: int = 1, occurred: datetime | None = None,
         ended: datetime | None = None, **details: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"event_id": f"ev-{uuid.uuid4().hex}", "behaviour": behaviour, "quantity": quantity,
                            "occurred_at": (occurred or ago(minutes=10)).isoformat()}
    if ended is not None:
        body["ended_at"] = ended.isoformat()
    if details:
        body["details"] = details
    return body


def self_report(resident: Resident, *bodies: dict[str, Any]) -> list[dict[str, Any]]:
    r = resident.post("/v1/me/activities", json={"activities": list(bodies)})
    assert r.status_code == 200, r.text
    return r.json()["receipts"]


def judged(receipt: dict[str, Any], verdict: str, code: str, *, zh: tuple[str, ...] = (),
           en: tuple[str, ...] = ()) -> dict[str, Any]:
    """The verdict and code, and a reason in both languages naming what the resident needs to know."""
    assert (receipt["verdict"], receipt["code"]) == (verdict, code), receipt
    reason = receipt["reason"]
    assert reason["zh-CN"] and reason["en"] and reason["zh-CN"] != reason["en"], reason
    assert all(word in reason["zh-CN"] for word in zh), (reason, zh)
    assert all(word in reason["en"] for word in en), (reason, en)
    counted = verdict in ("credited", "partially_credited")
    assert (receipt["credited_quantity"] > 0) == counted and (receipt["credited_mg"] > 0) == counted, receipt
    return receipt


def pages(who: Resident, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a cursor-paginated list, following next_cursor to the end."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        r = who.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        out += r.json()["items"]
        if (cursor := r.json()["next_cursor"]) is None:
            return out


def mine(resident: Resident, limit: int = 200, **params: Any) -> list[dict[str, Any]]:
    """All my activities, newest first."""
    return pages(resident, "/v1/me/activities", limit=limit, **params)


def book(resident: Resident) -> dict[str, Any]:
    r = resident.get("/v1/me/book")
    assert r.status_code == 200, r.text
    return r.json()


def set_profile(resident: Resident, **fields: str) -> None:
    r = resident.patch("/v1/me", json=fields)
    assert r.status_code == 200, r.text


# --- 1. Verdicts and their reasons --------------------------------------------------------------------


def test_credited_amount_is_the_catalogue_factor_rounded_down(client: httpx.Client, linked: Linker) -> None:
    resident = register(client)
    src = linked(resident)
    steps = judged(src.one(item("walking_steps", 3333)), "credited", "credited", zh=("已计入",), en=("Counted",))
    assert (steps["credited_quantity"], steps["credited_mg"]) == (3333, 3333 * STEPS.factor_mg // STEPS.per)
    cutlery = judged(src.one(item()), "credited", "credited")
    assert cutlery["credited_mg"] == mg("no_disposable_cutlery", 1)
    listed = {a["id"]: a for a in mine(resident)}[steps["activity_id"]]
    assert (listed["behaviour_version"], listed["methodology_release"]) == (STEPS.version, CURRENT_RELEASE)
    assert book(resident)["totals"]["all_time_mg"] == steps["credited_mg"] + cutlery["credited_mg"]


def test_daily_cap_credits_part_then_nothing(client: httpx.Client, linked: Linker) -> None:
    src = linked(register(client))
    cap = STEPS.daily_cap
    judged(src.one(item("walking_steps", cap - 5000)), "credited", "credited")
    part = judged(src.one(item("walking_steps", 8000)), "partially_credited", "daily-cap-partial",
                  zh=(f"{cap:,}", "5,000", "步行"), en=(f"{cap:,}", "5,000", "Walking"))
    assert (part["credited_quantity"], part["credited_mg"]) == (5000, mg("walking_steps", 5000))
    full = judged(src.one(item("walking_steps", 100)), "rejected", "daily-cap-reached")
    assert full["reason"]["en"] == f"The daily Walking cap of {cap:,} steps is reached; nothing more counts today."
    assert full["reason"]["zh-CN"] == f"已达步行每日上限 {cap:,} 步，今天不再计入。"


def test_self_reports_have_a_tighter_cap(client: httpx.Client) -> None:
    resident = register(client)
    cap = STEPS.self_report_daily_cap
    assert cap < STEPS.daily_cap
    (part,) = self_report(resident, item("walking_steps", cap + 2000))
    judged(part, "partially_credited", "self-report-cap-partial", zh=(f"{cap:,}",), en=(f"{cap:,}", "Self-reported"))
    assert (part["credited_quantity"], part["credited_mg"]) == (cap, mg("walking_steps", cap))
    (none,) = self_report(resident, item("walking_steps", 10))
    judged(none, "rejected", "self-report-cap-reached", zh=(f"{cap:,}",), en=(f"{cap:,}",))


def test_every_rejection_has_its_code_and_reason(client: httpx.Client, linked: Linker) -> None:
    resident = register(client)
    src = linked(resident)
    start = ago(hours=5)
    cases: list[tuple[dict[str, Any], str, tuple[str, ...], tuple[str, ...]]] = [
        (item("teleportation"), "unknown-behaviour", ("teleportation",), ("teleportation",)),
        (item("e_receipt"), "behaviour-not-allowed", (src.name,), (src.name_en,)),
        (item(occurred=ago(minutes=-60)), "occurred-in-future", (), ()),
        (item(occurred=ago(days=31)), "outside-reporting-window", ("30",), ("30",)),
        (item(quantity=2), "implausible-quantity", ("1",), ("1",)),
        (item("shared_bike_ride", occurred=start, ended=start + timedelta(seconds=30)), "implausible-duration", (), ()),
        # 3 km in 2 minutes is 90 km/h on a shared bike.
        (item("shared_bike_ride", occurred=start, ended=start + timedelta(minutes=2), distance_m=3000),
         "implausible-speed", ("90", "共享单车"), ("90 km/h", "Shared bike ride")),
    ]
    got = src.batch(*(body for body, *_ in cases))
    assert got["rejected"] == len(cases)
    for receipt, (_, code, zh, en) in zip(got["receipts"], cases, strict=True):
        judged(receipt, "rejected", code, zh=zh, en=en)
        assert receipt["activity_id"]  # stored with its verdict, so the resident sees it too
    (own,) = self_report(resident, item())
    cutlery = behaviours()["no_disposable_cutlery"]
    judged(own, "rejected", "not-self-reportable", zh=(cutlery.name_zh,), en=(cutlery.name_en,))
    assert {a["reason_code"] for a in mine(resident, verdict="rejected")} == {c for _, c, *_ in cases} | {
        "not-self-reportable"}
    assert book(resident)["totals"]["all_time_mg"] == 0


def test_an_activity_ending_before_it_starts_is_rejected_alone(client: httpx.Client, linked: Linker) -> None:
    src = linked(register(client))
    got = src.batch(item(occurred=ago(hours=1), ended=ago(hours=2)), item())["receipts"]
    judged(got[0], "rejected", "invalid-interval", zh=("结束时间",), en=("ends before",))
    judged(got[1], "credited", "credited")


def _two_days_of_one_month() -> tuple[datetime, datetime]:
    """An earlier and a later time, a local day apart in one Shanghai month, both in the past."""
    for back in range(1, 5):
        earlier, later = ago(days=back, hours=1), ago(days=back - 1, hours=1)
        if earlier.astimezone(SHANGHAI).month == later.astimezone(SHANGHAI).month:
            return earlier, later
    raise AssertionError("unreachable")


def test_monthly_cap(client: httpx.Client, linked: Linker) -> None:
    src = linked(register(client))
    v = current_version("home_electricity_saved")
    day1, day2 = _two_days_of_one_month()
    first = v.monthly_cap * 3 // 5
    judged(src.one(item("home_electricity_saved", first, day1)), "credited", "credited")
    part = judged(src.one(item("home_electricity_saved", v.monthly_cap // 2, day2)), "partially_credited",
                  "monthly-cap-partial", zh=(f"{v.monthly_cap:,}",), en=(f"{v.monthly_cap:,}", "monthly"))
    assert part["credited_quantity"] == v.monthly_cap - first
    judged(src.one(item("home_electricity_saved", 1, day2 + timedelta(minutes=5))), "rejected",
           "monthly-cap-reached", en=(f"{v.monthly_cap:,}",))


def test_monthly_cap_counts_later_days_reported_first(client: httpx.Client, linked: Linker) -> None:
    resident = register(client)
    src = linked(resident)
    v = current_version("home_electricity_saved")
    day1, day2 = _two_days_of_one_month()
    judged(src.one(item("home_electricity_saved", v.monthly_cap, day2)), "credited", "credited")
    late = src.one(item("home_electricity_saved", 1, day1))  # an earlier day of the same month
    assert (late["verdict"], late["code"]) == ("rejected", "monthly-cap-reached")


def test_held_verdicts(client: httpx.Client, linked: Linker) -> None:
    resident = register(client)
    (photo,) = self_report(resident, item("clean_plate", photo_ref="photos/abc.jpg"))
    judged(photo, "held", "photo-review", zh=("人工审核",), en=("reviewed",))
    for tier, code in (("device", "no_disposable_cutlery"), ("self_reported", "walking_steps")):
        weak = linked(resident, trust_tier=tier)
        judged(weak.one(item(code, 100 if code == "walking_steps" else 1)), "held", "needs-review-tier",
               zh=(weak.name,), en=(weak.name_en,))
    strong = linked(resident)
    most = STEPS.plausibility.max_per_day
    assert most is not None and most < 2 * (most // 2 + 5000)
    judged(strong.one(item("walking_steps", most // 2 + 5000)), "partially_credited", "daily-cap-partial")
    judged(strong.one(item("walking_steps", most // 2 + 5000)), "held", "implausible-daily-total",
           zh=(f"{most:,}",), en=(f"{most:,}",))
    assert len(mine(resident, verdict="held")) == 4


def test_the_same_order_from_two_partners_counts_once(client: httpx.Client, linked: Linker) -> None:
    resident = register(client)
    a, b = (linked(resident) for _ in range(2))
    when = ago(minutes=30)
    first = judged(a.one(item(occurred=when, order_id="o-1")), "credited", "credited")
    second = b.one(item(occurred=when + timedelta(minutes=2), order_id="o-1"))
    judged(second, "duplicate", "already-counted", zh=(a.name, local_time(when)), en=(a.name_en, local_time(when)))
    at = local_time(when)
    assert second["reason"]["en"] == f"Already counted from {a.name_en} at {at}; the same action counts once."
    assert book(resident)["totals"]["all_time_mg"] == first["credited_mg"]


def test_a_reviewed_copy_of_a_counted_order_still_counts_once(client: httpx.Client, linked: Linker,
                                                              operator: Resident) -> None:
    resident = register(client)
    verified, device = linked(resident), linked(resident, trust_tier="device")
    when = ago(minutes=30)
    verified.one(item(occurred=when, order_id="o-2"))
    copy = device.one(item(occurred=when + timedelta(minutes=1), order_id="o-2"))
    if copy["verdict"] == "held":  # the operator sees "needs-review-tier", not that it was already counted
        r = operator.post(f"/v1/admin/review/{copy['activity_id']}", json={"decision": "credit", "note": "ok"})
        assert r.status_code == 200, r.text
    assert book(resident)["totals"]["all_time_mg"] == mg("no_disposable_cutlery", 1)


def test_a_held_copy_rejected_on_review_does_not_swallow_the_action(client: httpx.Client, linked: Linker,
                                                                   operator: Resident) -> None:
    resident = register(client)
    device, verified = linked(resident, trust_tier="device"), linked(resident)
    when = ago(minutes=30)
    held = judged(device.one(item(occurred=when)), "held", "needs-review-tier")
    verified.one(item(occurred=when + timedelta(minutes=1)))  # today: duplicate, "already counted" (it is not)
    r = operator.post(f"/v1/admin/review/{held['activity_id']}", json={"decision": "reject", "note": "unverifiable"})
    assert r.status_code == 200, r.text
    assert book(resident)["totals"]["all_time_mg"] == mg("no_disposable_cutlery", 1)


def test_overlapping_trips_count_once_and_touching_ones_both(client: httpx.Client, linked: Linker) -> None:
    resident = register(client)
    a, b = (linked(resident) for _ in range(2))
    t0 = ago(hours=4)
    judged(a.one(item("shared_bike_ride", occurred=t0, ended=t0 + timedelta(minutes=15), distance_m=2000)),
           "credited", "credited")
    bus = b.one(item("bus_trip", occurred=t0 + timedelta(minutes=5), ended=t0 + timedelta(minutes=30)))
    judged(bus, "duplicate", "overlapping-trip", zh=(a.name, local_time(t0)), en=(a.name_en, local_time(t0)))
    change = t0 + timedelta(hours=1, minutes=10)  # bus until 08:10, subway from 08:10
    bus = b.one(item("bus_trip", occurred=change - timedelta(minutes=20), ended=change))
    judged(bus, "credited", "credited")
    judged(a.one(item("subway_trip", occurred=change, ended=change + timedelta(minutes=20))), "credited", "credited")
    expected = mg("shared_bike_ride", 1) + mg("bus_trip", 1) + mg("subway_trip", 1)
    assert book(resident)["totals"]["all_time_mg"] == expected


def test_a_long_trip_begun_more_than_a_day_before_still_overlaps(client: httpx.Client, linked: Linker) -> None:
    resident = register(client)
    a, b = (linked(resident) for _ in range(2))
    judged(a.one(item("rail_trip", 1_500_000, occurred=ago(hours=29), ended=ago(hours=1))), "credited", "credited")
    bus = b.one(item("bus_trip", occurred=ago(hours=3), ended=ago(hours=2, minutes=30)))
    assert (bus["verdict"], bus["code"]) == ("duplicate", "overlapping-trip")


# --- 2. Idempotency -----------------------------------------------------------------------------------


def test_single_report_is_idempotent(client: httpx.Client, linked: Linker) -> None:
    src = linked(register(client))
    body = item("walking_steps", STEPS.daily_cap - 1000)
    first = judged(src.one(body), "credited", "credited")
    assert first["replayed"] is False
    again = src.one(body, 200)
    assert again == {**first, "replayed": True}
    # The day fills up afterwards; a replay still answers what was decided then.
    judged(src.one(item("walking_steps", 3000)), "partially_credited", "daily-cap-partial")
    assert src.one(body, 200) == {**first, "replayed": True}
    conflict = client.post("/v1/partner/activity", json={**body, "quantity": 7}, headers=bearer(src.token))
    assert_problem(conflict, 422, "event-id-reused")


def test_batch_judges_each_item_and_replays(client: httpx.Client, linked: Linker) -> None:
    resident = register(client)
    src = linked(resident)
    good, capped = item(), item("walking_steps", STEPS.daily_cap + 1000)
    bodies = [good, item("teleportation"), capped, good, {**good, "quantity": 2}, item(occurred=ago(days=40))]
    got = src.batch(*bodies)
    assert [(r["verdict"], r["code"]) for r in got["receipts"]] == [
        ("credited", "credited"), ("rejected", "unknown-behaviour"), ("partially_credited", "daily-cap-partial"),
        ("credited", "credited"), (None, "event-id-reused"), ("rejected", "outside-reporting-window"),
    ]
    r = got["receipts"]
    assert (r[3]["replayed"], r[3]["activity_id"]) == (True, r[0]["activity_id"])
    assert got["replayed"] == 1  # the repeat inside the batch is answered with the first verdict, not counted again
    assert (got["credited"], got["partially_credited"], got["rejected"], got["conflicts"]) == (1, 1, 2, 1)
    assert len(mine(resident)) == 4  # the repeat and the conflict add nothing
    # Replaying the whole batch answers the stored verdicts, even though the day is now capped.
    again = src.batch(good, capped)["receipts"]
    assert [(x["verdict"], x["credited_quantity"], x["replayed"]) for x in again] == [
        ("credited", 1, True), ("partially_credited", STEPS.daily_cap, True)]
    assert book(resident)["totals"]["all_time_mg"] == mg("no_disposable_cutlery", 1) + mg("walking_steps",
                                                                                        STEPS.daily_cap)


# --- 3. First claim wins, within one batch too ----------------------------------------------------------


def test_first_claim_in_a_batch_wins(client: httpx.Client, linked: Linker) -> None:
    resident = register(client)
    src = linked(resident)
    t0 = ago(hours=3)
    bus = item("bus_trip", occurred=t0 + timedelta(minutes=5), ended=t0 + timedelta(minutes=25))
    bike = item("shared_bike_ride", occurred=t0, ended=t0 + timedelta(minutes=15), distance_m=2000)
    got = src.batch(bus, bike, item("walking_steps", STEPS.daily_cap), item("walking_steps", 10))
    first, second, steps, late = got["receipts"]
    judged(first, "credited", "credited")
    bus_at = local_time(t0 + timedelta(minutes=5))
    judged(second, "duplicate", "overlapping-trip", zh=(src.name, bus_at), en=(src.name_en, bus_at))
    judged(steps, "credited", "credited")
    judged(late, "rejected", "daily-cap-reached")


# --- 4. Caps in the holder's local day ----------------------------------------------------------------


def test_caps_follow_the_residents_local_day(client: httpx.Client, linked: Linker) -> None:
    half = STEPS.daily_cap * 3 // 4
    # New York: 23:30 and 00:30 UTC are one evening there, so they share a cap.
    ny = register(client)
    set_profile(ny, time_zone="America/New_York")
    src = linked(ny)
    midnight = ago(hours=1).replace(hour=0, minute=0, second=0)
    judged(src.one(item("walking_steps", half, midnight - timedelta(minutes=30))), "credited", "credited")
    part = src.one(item("walking_steps", half, midnight + timedelta(minutes=30)))
    judged(part, "partially_credited", "daily-cap-partial")
    assert part["credited_quantity"] == STEPS.daily_cap - half
    # Shanghai: 15:30 and 16:30 UTC are one UTC day but two local days, each with its own cap.
    sh = register(client)
    src = linked(sh)
    local_midnight = ago(hours=1).astimezone(SHANGHAI).replace(hour=0, minute=0, second=0).astimezone(UTC)
    for t in (local_midnight - timedelta(minutes=30), local_midnight + timedelta(minutes=30)):
        got = judged(src.one(item("walking_steps", half, t)), "credited", "credited")
        assert got["credited_quantity"] == half
    days = {p["local_day"] for p in sh.get("/v1/me/book/entries").json()["items"]}
    assert len(days) == 2


# --- 5. The review queue ------------------------------------------------------------------------------


def test_operators_resolve_held_activities(client: httpx.Client, linked: Linker, operator: Resident) -> None:
    resident = register(client)
    (photo,) = self_report(resident, item("clean_plate", photo_ref="photos/plate.jpg"))
    weak = linked(resident, trust_tier="device")
    tier = weak.one(item())
    queue = {x["id"]: x for x in pages(operator, "/v1/admin/review", limit=200)}
    assert queue[photo["activity_id"]]["held_because"] == "photo-review"
    assert queue[photo["activity_id"]]["details"] == {"photo_ref": "photos/plate.jpg"}
    assert queue[tier["activity_id"]]["held_because"] == "needs-review-tier"
    assert_problem(resident.get("/v1/admin/review"), 403)
    path = f"/v1/admin/review/{photo['activity_id']}"
    assert_problem(resident.post(path, json={"decision": "credit", "note": "x"}), 403)
    assert_problem(operator.post(f"/v1/admin/review/{uuid.uuid4()}", json={"decision": "credit", "note": "x"}), 404)

    before = book(resident)["totals"]
    assert_problem(operator.post(path, json={"decision": "credit"}), 422, "note-required")
    assert_problem(operator.post(path, json={"decision": "credit", "note": "   "}), 422, "note-required")
    r = operator.post(path, json={"decision": "credit", "note": "照片清晰 / clear photo"})
    assert r.status_code == 200, r.text
    assert r.json()["verdict"] == "credited" and r.json()["credited_mg"] == mg("clean_plate", 1)
    assert_problem(operator.post(path, json={"decision": "reject", "note": "again"}), 409, "not-held")
    r = operator.post(f"/v1/admin/review/{tier['activity_id']}", json={"decision": "reject", "note": "订单无法核实"})
    assert r.status_code == 200 and r.json()["verdict"] == "rejected", r.text
    assert photo["activity_id"] not in {x["id"] for x in pages(operator, "/v1/admin/review", limit=200)}

    after = book(resident)
    assert after["totals"]["all_time_mg"] == before["all_time_mg"] + mg("clean_plate", 1)
    assert after["totals"]["credited_activities"] == before["credited_activities"] + 1
    entries = resident.get("/v1/me/book/entries").json()["items"]
    assert [e["activity_id"] for e in entries] == [photo["activity_id"]]
    listed = {a["id"]: a for a in mine(resident)}
    got = [(listed[x["activity_id"]]["verdict"], listed[x["activity_id"]]["reason"]) for x in (photo, tier)]
    assert got == [("credited", "经人工审核后计入。照片清晰 / clear photo"),
                   ("rejected", "经人工审核未计入：订单无法核实")]
    set_profile(resident, language="en")
    listed = {a["id"]: a for a in mine(resident)}
    assert [listed[x["activity_id"]]["reason"] for x in (photo, tier)] == [
        "Counted after a review. 照片清晰 / clear photo", "Not counted after a review: 订单无法核实"]


# --- 6. What the resident reads -------------------------------------------------------------------------


def test_activity_list_language_filter_and_pages(client: httpx.Client, linked: Linker) -> None:
    resident = register(client)
    src = linked(resident)
    sent = [src.one(item()) for _ in range(5)] + [src.one(item("teleportation"))]
    sent += src.batch(*(item("walking_steps", n) for n in (100, 200, 300)))["receipts"]
    everything = mine(resident)
    assert {a["id"] for a in everything} == {s["activity_id"] for s in sent}
    received = [datetime.fromisoformat(a["received_at"]) for a in everything]
    assert received == sorted(received, reverse=True)
    assert everything[3]["id"] == sent[5]["activity_id"]  # the single report before the last batch
    paged = mine(resident, limit=2)
    assert [a["id"] for a in paged] == [a["id"] for a in everything]  # no overlap, no gap
    assert [a["verdict"] for a in mine(resident, verdict="rejected")] == ["rejected"]
    by_id = {s["activity_id"]: s for s in sent}
    assert all(a["reason"] == by_id[a["id"]]["reason"]["zh-CN"] for a in everything)
    set_profile(resident, language="en")
    assert all(a["reason"] == by_id[a["id"]]["reason"]["en"] for a in mine(resident, limit=3))
    assert_problem(resident.get("/v1/me/activities", params={"cursor": "nope"}), 422)


def test_book_totals_days_and_entries(client: httpx.Client, linked: Linker) -> None:
    resident = register(client)
    a, b = (linked(resident) for _ in range(2))
    a.one(item())
    a.one(item("walking_steps", 4321, ago(days=2)))
    b.one(item("walking_steps", 1234, ago(days=4)))
    self_report(resident, item("clean_plate"))
    acts = [x for x in mine(resident) if x["credited_mg"]]
    total = sum(x["credited_mg"] for x in acts)
    assert len(acts) == 4

    summary = book(resident)
    assert summary["totals"]["all_time_mg"] == total and summary["totals"]["credited_activities"] == 4
    entries = pages(resident, "/v1/me/book/entries", limit=3)
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    assert {e["activity_id"]: e["reduction_mg"] for e in entries} == {x["id"]: x["credited_mg"] for x in acts}
    today = date.fromisoformat(summary["today"])
    assert summary["totals"]["today_mg"] == sum(e["reduction_mg"] for e in entries if e["local_day"] == str(today))
    assert {c["category"]: c["all_time_mg"] for c in summary["by_category"]} == sums(entries, "category")
    subs = {s["sub_account_id"]: s for s in summary["by_sub_account"]}
    assert subs[a.sub]["all_time_mg"] == mg("no_disposable_cutlery", 1) + mg("walking_steps", 4321)
    assert subs[b.sub]["all_time_mg"] == mg("walking_steps", 1234)
    assert summary["by_sub_account"][0]["kind"] == "self"
    assert summary["by_sub_account"][0]["all_time_mg"] == mg("clean_plate", 1)
    assert all(isinstance(v, int) for v in summary["totals"].values())

    first = today - timedelta(days=6)
    days = resident.get("/v1/me/book/days", params={"from_day": str(first), "to_day": str(today)}).json()
    assert [d["day"] for d in days] == [str(first + timedelta(days=i)) for i in range(7)]
    assert sum(d["reduction_mg"] for d in days) == total
    per_day = sums(entries, "local_day")
    assert all(d["reduction_mg"] == per_day.get(d["day"], 0) for d in days)
    assert any(d["reduction_mg"] == 0 and d["credits"] == 0 for d in days)  # zero-filled
    assert resident.get("/v1/me/book/verify").json()["ok"] is True

    # Unlinking B keeps what it contributed; its activities say their source is gone.
    assert resident.delete(f"/v1/me/accounts/{b.sub}").status_code == 204
    after = book(resident)
    assert after["totals"] == summary["totals"]
    gone = next(s for s in after["by_sub_account"] if s["sub_account_id"] == b.sub)
    assert (gone["status"], gone["all_time_mg"]) == ("unlinked", mg("walking_steps", 1234))
    flags = {x["source"]: x["source_unlinked"] for x in mine(resident)}
    assert flags == {a.name: False, b.name: True, "自己上报": False}


# --- 7. Signed pushes ---------------------------------------------------------------------------------


def test_a_signed_push_for_several_residents_gets_verdicts(client: httpx.Client, base_url: str,
                                                          operator: Resident) -> None:
    partner = create_partner(operator, allowed_behaviours=ALLOWED)
    first, second = register(client), register(client)
    subs = [link(client, base_url, r, partner)["sub_account_id"] for r in (first, second)]
    items = [{**item(), "sub_account_id": subs[0]}, {**item(), "sub_account_id": subs[1]},
             {**item("walking_steps", STEPS.daily_cap + 1), "sub_account_id": subs[0]},
             {**item("teleportation"), "sub_account_id": subs[1]}]
    r = signed_push(client, partner, items)
    assert r.status_code == 200, r.text
    expected = [("credited", "credited")] * 2 + [("partially_credited", "daily-cap-partial"),
                                                  ("rejected", "unknown-behaviour")]
    for receipt, (verdict, code) in zip(r.json()["receipts"], expected, strict=True):
        judged(receipt, verdict, code)
    assert book(first)["totals"]["all_time_mg"] == mg("no_disposable_cutlery", 1) + mg("walking_steps",
                                                                                     STEPS.daily_cap)
    assert book(second)["totals"]["all_time_mg"] == mg("no_disposable_cutlery", 1)
    assert {x["verdict"] for x in mine(second)} == {"credited", "rejected"}


# --- 8. Outbox events ---------------------------------------------------------------------------------


async def test_credited_and_held_activities_record_outbox_events(client: httpx.Client, linked: Linker,
                                                                 db: object) -> None:
    resident = register(client)
    src = linked(resident)
    got = src.batch(item(), item("walking_steps", STEPS.daily_cap + 5), item("teleportation"))["receipts"]
    (held,) = self_report(resident, item("clean_plate", photo_ref="p.jpg"))
    async with connection() as conn:
        events = await conn.fetch("SELECT name, payload FROM outbox_event WHERE holder_id = $1 ORDER BY id",
                                  uuid.UUID(resident.holder_id))
        entries = {str(r["activity"]): r["id"] for r in await conn.fetch(
            "SELECT id, activity FROM book_entry WHERE holder = $1", uuid.UUID(resident.holder_id))}
    payloads = [(e["name"], json.loads(e["payload"]) if isinstance(e["payload"], str) else e["payload"])
                for e in events]
    recorded = [p for n, p in payloads if n == "reduction.recorded"]
    assert sorted(p["activity_id"] for p in recorded) == sorted(x["activity_id"] for x in got[:2])
    for p in recorded:
        receipt = next(x for x in got if x["activity_id"] == p["activity_id"])
        assert (p["entry_id"], p["reduction_mg"]) == (entries[p["activity_id"]], receipt["credited_mg"])
    assert [p for n, p in payloads if n == "activity.held"] == [{"activity_id": held["activity_id"],
                                                                 "code": "photo-review"}]


# --- 9. Races -----------------------------------------------------------------------------------------


def test_concurrent_reports_never_exceed_the_daily_cap(client: httpx.Client, base_url: str, linked: Linker) -> None:
    resident = register(client)
    src = linked(resident)
    each = 5000
    assert 20 * each > STEPS.daily_cap and STEPS.daily_cap % each == 0
    results = race(20, lambda: httpx.Client(base_url=base_url, timeout=60),
                   lambda http: http.post("/v1/partner/activity", json=item("walking_steps", each),
                                          headers=bearer(src.token)))
    assert all(r.status_code == 201 for r in results), [r.text for r in results if r.status_code != 201]
    receipts = [r.json() for r in results]
    assert sum(x["credited_quantity"] for x in receipts) == STEPS.daily_cap
    assert Counter(x["verdict"] for x in receipts) == {"credited": STEPS.daily_cap // each,
                                                       "rejected": 20 - STEPS.daily_cap // each}
    total = sum(x["credited_mg"] for x in receipts)
    assert total == mg("walking_steps", each) * (STEPS.daily_cap // each)
    assert book(resident)["totals"]["all_time_mg"] == total
    assert resident.get("/v1/me/book/verify").json()["ok"] is True
