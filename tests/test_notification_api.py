"""The residents' notification API over HTTP: phones that receive push (token formats per platform, idempotent
re-registration, a token moving to the account now signed in on the phone, at most 20, listed by token tail only,
removed with the session that registered them on logout or a password change elsewhere); notification settings
(defaults, quiet hours, the daily cap, per-trigger switches, strict bodies, all or nothing, the locked trigger);
and the inbox's unread count and read-all up to the message the app showed."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest

from notifications.catalogue import triggers
from tests.notification_support import apns_token, fcm_token, tell
from tests.support import Resident, assert_problem, deliver_pending_events, register

SETTINGS = "/v1/me/notification-settings"


def add(resident: Resident, platform: str, token: str, status: int = 200) -> dict[str, Any]:
    r = resident.post("/v1/me/devices", json={"platform": platform, "token": token, "app_version": "7.1.0"})
    assert r.status_code == status, r.text
    return r.json()


def listed(resident: Resident) -> list[dict[str, Any]]:
    r = resident.get("/v1/me/devices")
    assert r.status_code == 200, r.text
    return r.json()


def signed_in_again(resident: Resident) -> Resident:
    """The same account in a second session (another app install)."""
    r = resident.client.post("/v1/auth/login", json={"login": resident.login, "password": resident.password})
    assert r.status_code == 200, r.text
    body = r.json()
    return dataclasses.replace(resident, session_id=body["session_id"], access_token=body["access_token"],
                               refresh_token=body["refresh_token"])


# --- devices --------------------------------------------------------------------------------------------


def test_phones_register_with_their_platforms_token_format_and_again_idempotently(client: httpx.Client) -> None:
    resident = register(client)
    android, iphone = fcm_token(), apns_token().upper()
    first = add(resident, "fcm", android)
    assert {k: first[k] for k in ("platform", "token_tail", "app_version", "this_session")} == {
        "platform": "fcm", "token_tail": android[-6:], "app_version": "7.1.0", "this_session": True}
    assert "token" not in first
    ios = add(resident, "apns", iphone)
    assert ios["token_tail"] == iphone[-6:].lower()  # APNs tokens are hex: stored in one case
    again = add(resident, "fcm", android)
    assert again["id"] == first["id"] and again["created_at"] == first["created_at"]
    assert again["last_seen_at"] >= first["last_seen_at"]
    assert add(resident, "apns", iphone.lower())["id"] == ios["id"]
    assert sorted(d["id"] for d in listed(resident)) == sorted([first["id"], ios["id"]])
    assert all(set(d) == set(first) for d in listed(resident))

    assert_problem(resident.post("/v1/me/devices", json={"platform": "fcm", "token": "too-short"}), 422,
                   "invalid-push-token")
    assert_problem(resident.post("/v1/me/devices", json={"platform": "fcm", "token": "bad token with spaces!"}),
                   422, "invalid-push-token")
    assert_problem(resident.post("/v1/me/devices", json={"platform": "apns", "token": "z" * 64}), 422,
                   "invalid-push-token")
    assert_problem(resident.post("/v1/me/devices", json={"platform": "apns", "token": android}), 422,
                   "invalid-push-token")
    assert_problem(resident.post("/v1/me/devices", json={"platform": "wns", "token": android}), 400)
    assert_problem(resident.post("/v1/me/devices", json={"platform": "fcm", "token": android, "extra": 1}), 400)
    assert_problem(client.post("/v1/me/devices", json={"platform": "fcm", "token": android}), 401)
    assert len(listed(resident)) == 2


def test_a_token_registered_by_another_account_moves_to_the_one_now_signed_in_on_the_phone(
        client: httpx.Client) -> None:
    before, after = register(client), register(client)
    token = fcm_token()
    mine = add(before, "fcm", token)

    moved = add(after, "fcm", token)

    assert listed(before) == []
    assert [d["id"] for d in listed(after)] == [moved["id"]] and moved["token_tail"] == token[-6:]
    assert_problem(before.delete(f"/v1/me/devices/{mine['id']}"), 404, "device-not-found")


def test_at_most_twenty_phones_and_one_already_registered_can_still_refresh(client: httpx.Client) -> None:
    resident = register(client)
    tokens = [fcm_token() for _ in range(20)]
    for token in tokens:
        add(resident, "fcm", token)
    assert_problem(resident.post("/v1/me/devices", json={"platform": "apns", "token": apns_token()}), 409,
                   "too-many-devices")
    add(resident, "fcm", tokens[7])  # the same phone again is not a 21st
    assert len(listed(resident)) == 20


def test_a_phone_is_removed_by_its_owner_only(client: httpx.Client) -> None:
    owner, other = register(client), register(client)
    device = add(owner, "apns", apns_token())
    assert_problem(other.delete(f"/v1/me/devices/{device['id']}"), 404, "device-not-found")
    assert_problem(owner.delete("/v1/me/devices/0"), 404, "device-not-found")
    assert [d["id"] for d in listed(owner)] == [device["id"]]
    assert owner.delete(f"/v1/me/devices/{device['id']}").status_code == 204
    assert listed(owner) == []
    assert_problem(owner.delete(f"/v1/me/devices/{device['id']}"), 404, "device-not-found")


def test_logging_out_removes_the_phones_of_that_session_only(client: httpx.Client) -> None:
    phone_a = register(client)
    phone_b = signed_in_again(phone_a)
    a, b = add(phone_a, "fcm", fcm_token()), add(phone_b, "apns", apns_token())
    assert {d["id"]: d["this_session"] for d in listed(phone_a)} == {a["id"]: True, b["id"]: False}
    assert {d["id"]: d["this_session"] for d in listed(phone_b)} == {a["id"]: False, b["id"]: True}

    assert phone_b.post("/v1/auth/logout").status_code == 204

    assert [d["id"] for d in listed(phone_a)] == [a["id"]]
    assert_problem(phone_b.get("/v1/me/devices"), 401)


def test_a_password_change_signs_the_other_sessions_out_with_their_phones(client: httpx.Client) -> None:
    here = register(client)
    elsewhere, another = signed_in_again(here), signed_in_again(here)
    kept = add(here, "fcm", fcm_token())
    for session in (elsewhere, another):
        add(session, "apns", apns_token())

    r = here.post("/v1/me/password", json={"current_password": here.password, "new_password": "a new horse battery"})
    assert r.status_code == 204, r.text

    assert [d["id"] for d in listed(here)] == [kept["id"]]
    assert_problem(elsewhere.get("/v1/me/devices"), 401)


# --- notification settings -------------------------------------------------------------------------------


def test_settings_start_from_the_catalogues_defaults(resident: Resident) -> None:
    r = resident.get(SETTINGS)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["quiet_hours"], body["daily_cap"]) == (None, 10)
    got = {t["trigger"]: t for t in body["triggers"]}
    assert list(got) == list(triggers())
    for key, t in triggers().items():
        assert got[key] == {"trigger": key, "name": {"zh-CN": t.name_zh, "en": t.name_en}, "push": t.push,
                            "live": True, "locked": t.locked, "quiet": t.quiet, "capped": t.capped}
    assert got["account"]["locked"] and not got["account"]["quiet"] and not got["redemption"]["capped"]


def test_quiet_hours_and_the_daily_cap_change_and_clear(resident: Resident) -> None:
    def patch(body: dict[str, Any]) -> dict[str, Any]:
        r = resident.patch(SETTINGS, json=body)
        assert r.status_code == 200, r.text
        assert resident.get(SETTINGS).json() == r.json()
        return r.json()

    assert patch({"quiet_hours": {"start": "22:00", "end": "07:30"}})["quiet_hours"] == {"start": "22:00",
                                                                                         "end": "07:30"}
    assert patch({"daily_cap": 0})["quiet_hours"] == {"start": "22:00", "end": "07:30"}  # left out: unchanged
    assert patch({"daily_cap": 100})["daily_cap"] == 100
    assert patch({"quiet_hours": None})["quiet_hours"] is None
    assert patch({"triggers": {"social": {"push": False}, "weekly_report": {"live": False}}})["daily_cap"] == 100
    got = {t["trigger"]: (t["push"], t["live"]) for t in patch({})["triggers"]}
    assert (got["social"], got["weekly_report"], got["energy_ripe"]) == ((False, True), (True, False), (True, True))
    assert {t["trigger"]: t["push"] for t in patch({"triggers": {"social": {"push": True}}})["triggers"]}["social"]


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, 400, None),
    ({"quiet_hours": {"start": "7:00", "end": "08:00"}}, 400, None),
    ({"quiet_hours": {"start": "22:00"}}, 400, None),
    ({"quiet_hours": {"start": "22:00", "end": "22:00"}}, 422, "invalid-quiet-hours"),
    ({"daily_cap": 101}, 422, "invalid-daily-cap"),
    ({"daily_cap": -1}, 422, "invalid-daily-cap"),
    ({"daily_cap": "5"}, 400, None),
    ({"daily_cap": 2.5}, 400, None),
    ({"triggers": {"no_such_trigger": {"push": False}}}, 422, "unknown-trigger"),
    ({"triggers": {"social": {"push": "no"}}}, 400, None),
    ({"triggers": {"social": {"push": 0}}}, 400, None),
    ({"triggers": {"social": {"sms": True}}}, 400, None),
    ({"triggers": {"social": True}}, 400, None),
    ({"triggers": {"account": {"push": False}}}, 422, "locked-trigger"),
    ({"quiet": {"start": "22:00", "end": "07:00"}}, 400, None),
])
def test_a_bad_settings_change_is_refused_and_changes_nothing(client: httpx.Client, body: dict[str, Any],
                                                              status: int, code: str | None) -> None:
    resident = register(client)
    before = resident.get(SETTINGS).json()
    assert_problem(resident.patch(SETTINGS, json=body), status, code)
    assert resident.get(SETTINGS).json() == before


def test_a_settings_change_is_all_or_nothing(resident: Resident) -> None:
    before = resident.get(SETTINGS).json()
    assert_problem(resident.patch(SETTINGS, json={
        "quiet_hours": {"start": "01:00", "end": "02:00"}, "daily_cap": 3,
        "triggers": {"social": {"push": False}, "nope": {"push": True}}}), 422, "unknown-trigger")
    assert_problem(resident.patch(SETTINGS, json={
        "daily_cap": 3, "triggers": {"social": {"push": False}, "account": {"push": False}}}), 422, "locked-trigger")
    assert resident.get(SETTINGS).json() == before
    assert resident.patch(SETTINGS, json={"triggers": {"account": {"push": True}}}).status_code == 200


# --- the inbox ------------------------------------------------------------------------------------------


async def test_the_unread_count_and_read_all_up_to_the_message_the_app_showed(client: httpx.Client,
                                                                              db: object) -> None:
    resident = register(client, language="en")
    await deliver_pending_events()  # the welcome message
    assert resident.post("/v1/me/inbox/read-all", json={}).json()["unread"] == 0
    ids = [await tell(resident.holder_id, "energy_awarded", {"amount": 5, "reason": "a test"}),
           await tell(resident.holder_id, "badge_earned", {"badge": "第一次骑行", "badge_en": "First ride"}),
           await tell(resident.holder_id, "challenge_met", {
               "challenge_id": 9, "challenge": "绿色周", "challenge_en": "Green week", "progress": "1 克减排",
               "progress_en": "1 g CO2e avoided"})]

    page = resident.get("/v1/me/inbox").json()
    assert page["unread"] == 3 and resident.get("/v1/me/inbox/unread").json() == {"unread": 3}
    items = {m["id"]: m for m in page["items"]}
    assert [(items[i]["kind"], items[i]["trigger"], items[i]["link"], items[i]["read_at"]) for i in ids] == [
        ("energy_awarded", "energy_awarded", "carbonwallet://energy", None),
        ("badge_earned", "badge_earned", "carbonwallet://progress", None),
        ("challenge_met", "challenge_finished", "carbonwallet://challenges/9", None)]
    assert items[ids[1]]["title"] == "Badge earned: First ride"

    r = resident.post("/v1/me/inbox/read-all", json={"up_to_id": ids[1]})
    assert r.status_code == 200 and r.json() == {"marked": 2, "unread": 1}, r.text
    items = {m["id"]: m for m in resident.get("/v1/me/inbox").json()["items"]}
    assert [items[i]["read_at"] is None for i in ids] == [False, False, True]  # the newer one stays unread
    assert resident.post("/v1/me/inbox/read-all", json={"up_to_id": ids[1]}).json() == {"marked": 0, "unread": 1}
    other = register(client)
    assert other.post("/v1/me/inbox/read-all", json={}).status_code == 200  # another's read-all: not mine
    assert resident.get("/v1/me/inbox/unread").json() == {"unread": 1}
    assert resident.post("/v1/me/inbox/read-all", json={}).json() == {"marked": 1, "unread": 0}
    assert resident.get("/v1/me/inbox/unread").json() == {"unread": 0}
    assert_problem(resident.post("/v1/me/inbox/read-all", json={"up_to_id": "7"}), 400)
    assert_problem(other.post(f"/v1/me/inbox/{ids[2]}/read"), 404, "message-not-found")


def test_unread_needs_a_signed_in_resident(client: httpx.Client) -> None:
    assert_problem(client.get("/v1/me/inbox/unread"), 401)
    assert_problem(client.post("/v1/me/inbox/read-all", json={}), 401)
    assert_problem(client.get(SETTINGS), 401)

