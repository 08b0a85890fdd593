"""Residents through HTTP: registration, login, profile, password, sessions, export and deletion."""

from __future__ import annotations

import httpx
import pytest

from tests.support import (
    PASSWORD,
    Resident,
    assert_problem,
    deliver_pending_events,
    register,
    unique_email,
    unique_phone,
)
from wallet.db import connection


def test_register_with_email_logs_the_device_in(client: httpx.Client) -> None:
    email = unique_email()
    r = client.post("/v1/auth/register", json={"email": email.upper(), "password": PASSWORD, "device_name": "Pixel"})
    assert r.status_code == 201, r.text
    tokens = r.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 900
    me = client.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()
    assert me["email"] == email  # normalised to lower case
    assert me["id"] == tokens["holder_id"]
    assert me["time_zone"] == "Asia/Shanghai"
    assert me["language"] == "zh-CN"
    assert me["show_on_public_leaderboards"] is False  # public exposure is opt-in


def test_register_with_a_mainland_phone_number(client: httpx.Client) -> None:
    phone = unique_phone()
    resident = register(client, phone=phone)
    me = resident.get("/v1/me").json()
    assert me["phone"] == "+86" + phone
    assert me["email"] is None
    assert me["nickname"] == f"居民{phone[-4:]}"
    # Logging in works with either spelling of the same number.
    for spelling in (phone, "+86" + phone, f"{phone[:3]} {phone[3:7]} {phone[7:]}"):
        r = client.post("/v1/auth/login", json={"login": spelling, "password": PASSWORD})
        assert r.status_code == 200, (spelling, r.text)


def test_one_identity_registers_once(client: httpx.Client) -> None:
    email = unique_email()
    register(client, email=email)
    again = client.post("/v1/auth/register", json={"email": email.title(), "password": PASSWORD})
    assert_problem(again, 409, "identity-taken")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, "invalid-email"),
        ({"phone": "12345", "password": PASSWORD}, "invalid-phone"),
        ({"email": "a@example.com", "phone": "13800138000", "password": PASSWORD}, "one-login-identity"),
        ({"password": PASSWORD}, "one-login-identity"),
        ({"email": "short@example.com", "password": "short"}, "weak-password"),
        ({"email": "tz@example.com", "password": PASSWORD, "time_zone": "Mars/Olympus"}, "invalid-time-zone"),
    ],
)
def test_registration_refusals_say_why(client: httpx.Client, body: dict[str, str], code: str) -> None:
    assert_problem(client.post("/v1/auth/register", json=body), 422, code)


def test_wrong_login_and_wrong_password_look_the_same(client: httpx.Client, resident: Resident) -> None:
    wrong_password = client.post("/v1/auth/login", json={"login": resident.login, "password": "not the password"})
    unknown = client.post("/v1/auth/login", json={"login": unique_email(), "password": PASSWORD})
    a = assert_problem(wrong_password, 401, "invalid-credentials")
    b = assert_problem(unknown, 401, "invalid-credentials")
    assert a["detail"] == b["detail"]


def test_profile_edit(resident: Resident) -> None:
    r = resident.patch(
        "/v1/me",
        json={
            "nickname": "  绿色小林 ",
            "city": "北京市",
            "district": "海淀区",
            "community": "中关村社区",
            "time_zone": "Europe/Berlin",
            "language": "en",
            "show_on_public_leaderboards": True,
            "avatar_url": "https://cdn.example.com/a.png",
        },
    )
    assert r.status_code == 200, r.text
    me = resident.get("/v1/me").json()
    assert me["nickname"] == "绿色小林"
    assert (me["city"], me["district"], me["community"]) == ("北京市", "海淀区", "中关村社区")
    assert me["time_zone"] == "Europe/Berlin"
    assert me["language"] == "en"
    assert me["show_on_public_leaderboards"] is True
    # null clears an optional field; leaving a field out keeps it
    assert resident.patch("/v1/me", json={"community": None}).json()["community"] is None
    assert resident.get("/v1/me").json()["city"] == "北京市"


@pytest.mark.parametrize(
    ("patch", "status", "code"),
    [
        ({"time_zone": "Asia/Nowhere"}, 422, "invalid-time-zone"),
        ({"language": "fr"}, 400, "invalid-request"),
        ({"avatar_url": "javascript:alert(1)"}, 422, "invalid-profile"),
        ({"nickname": "   "}, 422, "invalid-profile"),
        ({"nickname": "x\u0000y"}, 422, "invalid-profile"),
        ({"show_on_public_leaderboards": "yes"}, 400, "invalid-request"),
        ({"email": "takeover@example.com"}, 400, "invalid-request"),
    ],
)
def test_profile_refusals_change_nothing(resident: Resident, patch: dict[str, object], status: int, code: str) -> None:
    before = resident.get("/v1/me").json()
    assert_problem(resident.patch("/v1/me", json=patch), status, code)
    assert resident.get("/v1/me").json() == before


def test_change_password(client: httpx.Client, resident: Resident) -> None:
    new = "an even better passphrase"
    wrong = resident.post("/v1/me/password", json={"current_password": "nope-nope-nope", "new_password": new})
    assert_problem(wrong, 403, "wrong-password")
    weak = resident.post("/v1/me/password", json={"current_password": PASSWORD, "new_password": "aaaaaaaaaa"})
    assert_problem(weak, 422, "weak-password")
    assert resident.post("/v1/me/password", json={"current_password": PASSWORD, "new_password": new}).status_code == 204
    assert_problem(client.post("/v1/auth/login", json={"login": resident.login, "password": PASSWORD}), 401)
    assert client.post("/v1/auth/login", json={"login": resident.login, "password": new}).status_code == 200
    assert resident.get("/v1/me").status_code == 200  # this device stays signed in


def test_sessions_are_per_device(client: httpx.Client, resident: Resident) -> None:
    phone = client.post("/v1/auth/login", json={"login": resident.login, "password": PASSWORD, "device_name": "iPhone"})
    other = phone.json()
    sessions = resident.get("/v1/me/sessions").json()
    assert {s["id"] for s in sessions} == {resident.session_id, other["session_id"]}
    assert [s["current"] for s in sessions if s["id"] == resident.session_id] == [True]
    assert [s["device_name"] for s in sessions if s["id"] == other["session_id"]] == ["iPhone"]
    assert resident.delete(f"/v1/me/sessions/{other['session_id']}").status_code == 204
    revoked = client.get("/v1/me", headers={"Authorization": f"Bearer {other['access_token']}"})
    assert_problem(revoked, 401, "session-revoked")
    assert [s["id"] for s in resident.get("/v1/me/sessions").json()] == [resident.session_id]


def test_logout_ends_the_session(client: httpx.Client, resident: Resident) -> None:
    assert resident.post("/v1/auth/logout").status_code == 204
    assert_problem(resident.get("/v1/me"), 401, "session-revoked")
    refreshed = client.post("/v1/auth/refresh", json={"refresh_token": resident.refresh_token})
    assert_problem(refreshed, 401, "session-revoked")


async def test_welcome_message_arrives_through_the_outbox(resident: Resident, db: object) -> None:
    """The session's API process runs no worker, so one relay pass and its handlers run here in-process."""
    await deliver_pending_events()
    items = resident.get("/v1/me/inbox").json()["items"]
    assert [m["kind"] for m in items] == ["welcome"]
    assert items[0]["title"] == "欢迎来到碳账本"
    resident.patch("/v1/me", json={"language": "en"})
    assert resident.get("/v1/me/inbox").json()["items"][0]["title"] == "Welcome to your carbon book"
    message_id = items[0]["id"]
    assert resident.post(f"/v1/me/inbox/{message_id}/read").status_code == 204
    assert resident.get("/v1/me/inbox").json()["items"][0]["read_at"] is not None


def test_export_holds_my_personal_data(resident: Resident) -> None:
    r = resident.get("/v1/me/export")
    assert r.status_code == 200
    assert "attachment" in r.headers["content-disposition"]
    doc = r.json()
    assert doc["format"] == "carbon-wallet/personal-data/v1"
    assert doc["profile"]["email"] == resident.login
    assert [s["id"] for s in doc["sessions"]] == [resident.session_id]
    assert "password_hash" not in r.text


async def test_delete_account_erases_and_keeps_a_pseudonym(
    client: httpx.Client, resident: Resident, db: object
) -> None:
    await deliver_pending_events()
    wrong = resident.delete("/v1/me", json={"password": "wrong password!", "confirm": "DELETE"})
    assert_problem(wrong, 403, "wrong-password")
    unconfirmed = resident.delete("/v1/me", json={"password": PASSWORD, "confirm": "yes"})
    assert_problem(unconfirmed, 400, "invalid-request")
    assert resident.delete("/v1/me", json={"password": PASSWORD, "confirm": "DELETE"}).status_code == 204
    assert_problem(resident.get("/v1/me"), 401, "session-revoked")
    assert_problem(client.post("/v1/auth/login", json={"login": resident.login, "password": PASSWORD}), 401)

    async with connection() as conn:
        row = await conn.fetchrow("SELECT * FROM holder WHERE id = $1::uuid", resident.holder_id)
        live_sessions = await conn.fetchval(
            "SELECT count(*) FROM auth_session WHERE holder = $1::uuid AND revoked_at IS NULL", resident.holder_id
        )
    assert row is not None, "the holder row stays as the pseudonym book entries point to"
    assert row["status"] == "deleted"
    assert row["deleted_at"] is not None
    personal = ("email", "phone", "password_hash", "avatar_url", "city", "district", "community")
    assert all(row[column] is None for column in personal)
    assert row["nickname"] == ""
    assert live_sessions == 0
    async with connection() as conn:
        device_traces = await conn.fetchval(
            "SELECT count(*) FROM auth_session WHERE holder = $1::uuid AND (user_agent <> '' OR created_ip <> '')",
            resident.holder_id,
        )
    assert device_traces == 0, "device names, user agents and IPs are personal data too"

    await deliver_pending_events()
    async with connection() as conn:
        inbox_left = await conn.fetchval(
            "SELECT count(*) FROM inbox_message WHERE holder_id = $1::uuid", resident.holder_id
        )
    assert inbox_left == 0
    # The identity is free again: the same person may start over with the same e-mail.
    register(client, email=resident.login)


async def test_a_late_welcome_never_reaches_a_deleted_holder(client: httpx.Client, db: object) -> None:
    """Events of one holder may be handled out of order: deletion first, then the registration's welcome."""
    from api.events import EVENT_HANDLERS
    from wallet.outbox.service import handle_event

    resident = register(client)
    async with connection() as conn:
        registered = await conn.fetchval(
            "SELECT event_id FROM outbox_event WHERE holder_id = $1::uuid AND name = 'holder.registered'",
            resident.holder_id,
        )
    assert resident.delete("/v1/me", json={"password": PASSWORD, "confirm": "DELETE"}).status_code == 204
    async with connection() as conn:
        deleted = await conn.fetchval(
            "SELECT event_id FROM outbox_event WHERE holder_id = $1::uuid AND name = 'holder.deleted'",
            resident.holder_id,
        )
    await handle_event(deleted, EVENT_HANDLERS)
    await handle_event(registered, EVENT_HANDLERS)
    async with connection() as conn:
        left = await conn.fetchval("SELECT count(*) FROM inbox_message WHERE holder_id = $1::uuid", resident.holder_id)
    assert left == 0
