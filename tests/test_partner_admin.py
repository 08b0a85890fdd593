"""The operators' partner registry: the admin API, the `partner` / `grant-role` CLI and partner secrets.

Why: this is where partners get the credentials that let them write into residents' books, so only
operators may use it, what it accepts is validated (redirect URIs decide where authorization codes go),
secrets are shown once and stored hashed or sealed, and rotating a secret never locks a partner out
during the overlap it was promised, nor keeps an old secret alive past it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.partner_support import REDIRECT_URI, Partner, activity, create_partner, link, signed_push
from tests.support import ROOT, Resident, assert_problem, register
from wallet.db import connection

ADMIN = "/v1/admin/partners"


def new_partner_body(**overrides: Any) -> dict[str, Any]:
    return {
        "name": f"管理测试 {uuid.uuid4().hex[:6]}", "kind": "logistics", "redirect_uris": [REDIRECT_URI],
        "allowed_scopes": ["activities:write"], "allowed_behaviours": ["parcel_box_reuse"], **overrides,
    }


def authenticates(client: httpx.Client, client_id: str, secret: str | None) -> bool:
    """A refresh-token grant with a garbage token: a client that fails authentication gets 401
    invalid_client; one that passes gets as far as the grant, which is 400 invalid_grant."""
    data = {"grant_type": "refresh_token", "refresh_token": "cwpr_" + uuid.uuid4().hex}
    if secret is None:
        r = client.post("/oauth/token", data={**data, "client_id": client_id})
    else:
        r = client.post("/oauth/token", data=data, auth=(client_id, secret))
    if r.status_code == 401:
        assert r.json()["error"] == "invalid_client", r.text
        return False
    assert (r.status_code, r.json()["error"]) == (400, "invalid_grant"), r.text
    return True


# --- 1. Operators only --------------------------------------------------------------------------------


def test_admin_routes_are_for_operators_only(client: httpx.Client, operator: Resident) -> None:
    partner = create_partner(operator)
    one = f"{ADMIN}/{partner.id}"
    calls: list[tuple[str, str, Any]] = [
        ("POST", ADMIN, new_partner_body()), ("GET", ADMIN, None), ("GET", one, None),
        ("PATCH", one, {"name": "改名"}), ("POST", f"{one}/status", {"status": "suspended"}),
        ("POST", f"{one}/secrets/client", {"overlap_s": 0}), ("POST", f"{one}/secrets/webhook", {"overlap_s": 0}),
    ]
    resident = register(client)
    for method, path, body in calls:
        r = client.request(method, path, json=body, headers=resident.headers)
        assert_problem(r, 403, "operator-only")
        assert_problem(client.request(method, path, json=body), 401, "authentication-required")
        assert_problem(client.request(method, path, json=body, headers={"Authorization": "Bearer nope"}), 401)
    # Nothing the resident sent had any effect.
    after = operator.get(one).json()
    assert (after["name"], after["status"]) == (partner.body["name"], "active")
    assert authenticates(client, partner.client_id, partner.client_secret)
    assert len([s for s in after["secrets"] if s["expires_at"] is None]) == 2


# --- 2. Registering a partner -------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "field"), [
    ({"redirect_uris": ["http://example.com/cb"]}, "redirect_uris"),
    ({"redirect_uris": ["https://x.example/cb#done"]}, "redirect_uris"),
    ({"redirect_uris": ["javascript:alert(1)"]}, "redirect_uris"),
    ({"redirect_uris": ["https:///no-host"]}, "redirect_uris"),
    ({"redirect_uris": [REDIRECT_URI, "https://x.example/a b"]}, "redirect_uris"),
    ({"allowed_behaviours": ["parcel_box_reuse", "teleportation"]}, "allowed_behaviours"),
    ({"name": "   "}, "name"),
])
def test_create_refuses_invalid_partners(operator: Resident, overrides: dict[str, Any], field: str) -> None:
    body = assert_problem(operator.post(ADMIN, json=new_partner_body(**overrides)), 422, "invalid-partner")
    assert body["field"] == field


@pytest.mark.parametrize("overrides", [
    {"allowed_scopes": ["activities:write", "admin:all"]},
    {"kind": "spaceship"},
    {"client_type": "secret"},
    {"rate_limit_per_minute": 0},
    {"redirect_uris": []},
    {"redirect_uris": [f"https://x.example/{i}" for i in range(11)]},
    {"status": "active"},
])
def test_create_refuses_what_the_schema_does_not_allow(operator: Resident, overrides: dict[str, Any]) -> None:
    assert_problem(operator.post(ADMIN, json=new_partner_body(**overrides)), 400, "invalid-request")


def test_native_app_and_loopback_redirect_uris_are_accepted(operator: Resident) -> None:
    uris = ["com.example.app:/cb", "http://127.0.0.1:8765/cb", "http://localhost:8765/cb", "http://[::1]:8765/cb",
            "com.example.app:/cb"]
    r = operator.post(ADMIN, json=new_partner_body(redirect_uris=uris))
    assert r.status_code == 201, r.text
    assert r.json()["partner"]["redirect_uris"] == uris[:4]  # exact, in order, without repeats


def test_secrets_are_shown_once(client: httpx.Client, operator: Resident) -> None:
    r = operator.post(ADMIN, json=new_partner_body())
    assert r.status_code == 201, r.text
    created = r.json()
    client_secret, webhook_secret = created["client_secret"], created["webhook_secret"]
    assert client_secret.startswith("cws_") and webhook_secret.startswith("whsec_")
    assert len(base64.b64decode(webhook_secret.removeprefix("whsec_"))) == 32
    partner = created["partner"]
    assert partner["client_id"].startswith("cwc_") and partner["status"] == "active"

    for shown in (operator.get(f"{ADMIN}/{partner['id']}"), operator.get(ADMIN)):
        assert shown.status_code == 200
        assert client_secret not in shown.text and webhook_secret not in shown.text
        assert client_secret[4:] not in shown.text and webhook_secret[6:] not in shown.text
    hints = {s["purpose"]: s["hint"] for s in operator.get(f"{ADMIN}/{partner['id']}").json()["secrets"]}
    assert hints == {"client": client_secret[-4:], "webhook": webhook_secret[-4:]}
    assert authenticates(client, partner["client_id"], client_secret)


def test_a_public_client_has_no_client_secret(client: httpx.Client, operator: Resident) -> None:
    r = operator.post(ADMIN, json=new_partner_body(client_type="public"))
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["client_secret"] is None and created["webhook_secret"].startswith("whsec_")
    assert [s["purpose"] for s in created["partner"]["secrets"]] == ["webhook"]
    partner_id = created["partner"]["id"]
    assert_problem(operator.post(f"{ADMIN}/{partner_id}/secrets/client", json={}), 409, "public-client")
    assert operator.post(f"{ADMIN}/{partner_id}/secrets/webhook", json={}).status_code == 201
    assert authenticates(client, created["partner"]["client_id"], None)
    assert not authenticates(client, created["partner"]["client_id"], "cws_guess")


async def test_secrets_are_stored_hashed_or_sealed(operator: Resident, db: object) -> None:
    created = operator.post(ADMIN, json=new_partner_body()).json()
    client_secret, webhook_secret = created["client_secret"], created["webhook_secret"]
    webhook_key = base64.b64decode(webhook_secret.removeprefix("whsec_"))
    partner_id = uuid.UUID(created["partner"]["id"])
    async with connection() as conn:
        rows = {r["purpose"]: dict(r) for r in await conn.fetch(
            "SELECT * FROM partner_secret WHERE partner = $1", partner_id)}
        partner_row = await conn.fetchval("SELECT row_to_json(p)::text FROM partner p WHERE id = $1", partner_id)
        events = await conn.fetchval(
            "SELECT coalesce(string_agg(payload::text, ' '), '') FROM outbox_event WHERE payload->>'partner_id' = $1",
            str(partner_id),
        )
    client_row, webhook_row = rows["client"], rows["webhook"]
    assert re.fullmatch(r"[0-9a-f]{64}", client_row["secret_hash"])
    assert client_row["secret_hash"] == hashlib.sha256(client_secret.encode()).hexdigest()
    assert client_row["secret_sealed"] is None
    assert webhook_row["secret_hash"] is None
    sealed = bytes(webhook_row["secret_sealed"])
    assert webhook_secret.encode() not in sealed and webhook_key not in sealed
    assert webhook_secret.removeprefix("whsec_").encode() not in sealed
    everything = " ".join(str(v) for row in rows.values() for v in row.values()) + partner_row + events
    for plain in (client_secret, client_secret[4:], webhook_secret, webhook_secret[6:]):
        assert plain not in everything


# --- 3. Changing a partner ----------------------------------------------------------------------------


def test_patch_changes_take_effect_at_once(client: httpx.Client, base_url: str, operator: Resident) -> None:
    partner = create_partner(operator)
    token = link(client, base_url, register(client), partner)["access_token"]
    one = f"{ADMIN}/{partner.id}"
    r = operator.patch(one, json={"redirect_uris": ["https://new.example/cb", "com.example.app:/cb"],
                                  "allowed_behaviours": ["parcel_box_reuse"], "rate_limit_per_minute": 900})
    assert r.status_code == 200, r.text
    changed = r.json()
    assert changed["redirect_uris"] == ["https://new.example/cb", "com.example.app:/cb"]
    assert (changed["allowed_behaviours"], changed["rate_limit_per_minute"]) == (["parcel_box_reuse"], 900)
    assert changed["client_type"] == partner.body["client_type"] and changed["name"] == partner.body["name"]
    assert operator.get(one).json()["redirect_uris"] == changed["redirect_uris"]
    both = [activity(), activity(behaviour="parcel_box_reuse")]
    got = client.post("/v1/partner/activities", json={"activities": both},
                      headers={"Authorization": f"Bearer {token}"}).json()
    assert [(x["verdict"], x["code"]) for x in got["receipts"]] == [
        ("rejected", "behaviour-not-allowed"), ("credited", "credited"),
    ]

    assert_problem(operator.patch(one, json={"client_type": "public"}), 400, "invalid-request")
    bad = assert_problem(operator.patch(one, json={"redirect_uris": ["http://example.com/cb"]}), 422, "invalid-partner")
    assert bad["field"] == "redirect_uris"
    assert_problem(operator.patch(one, json={"allowed_behaviours": ["teleportation"]}), 422, "invalid-partner")
    assert_problem(operator.patch(f"{ADMIN}/{uuid.uuid4()}", json={"name": "x"}), 404, "partner-not-found")
    assert operator.get(one).json()["redirect_uris"] == changed["redirect_uris"]  # refused patches changed nothing


def test_suspend_and_activate(client: httpx.Client, base_url: str, operator: Resident) -> None:
    partner = create_partner(operator)
    token = link(client, base_url, register(client), partner)["access_token"]
    status = f"{ADMIN}/{partner.id}/status"
    r = operator.post(status, json={"status": "suspended", "reason": "复核中"})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["status_reason"]) == ("suspended", "复核中")
    shown = operator.get(f"{ADMIN}/{partner.id}").json()
    assert (shown["status"], shown["status_reason"]) == ("suspended", "复核中")
    assert_problem(client.get("/v1/partner/profile", headers={"Authorization": f"Bearer {token}"}), 403,
                   "partner-suspended")
    refused = client.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": "cwpr_x"},
                          auth=partner.basic)
    assert (refused.status_code, refused.json()["error"]) == (400, "unauthorized_client")

    r = operator.post(status, json={"status": "active"})
    assert (r.json()["status"], r.json()["status_reason"]) == ("active", "")
    assert client.get("/v1/partner/profile", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert_problem(operator.post(status, json={"status": "deleted"}), 400, "invalid-request")
    assert_problem(operator.post(f"{ADMIN}/{partner.id}/secrets/master", json={}), 404, "unknown-secret")


# --- 4. Client secret rotation ------------------------------------------------------------------------


def test_client_secret_rotation_overlaps(client: httpx.Client, operator: Resident) -> None:
    partner = create_partner(operator)
    rotate = f"{ADMIN}/{partner.id}/secrets/client"
    r = operator.post(rotate, json={"overlap_s": 3600})
    assert r.status_code == 201, r.text
    assert (r.json()["purpose"], r.json()["previous_valid_for_s"]) == ("client", 3600)
    old, new = partner.client_secret, r.json()["secret"]
    assert new.startswith("cws_") and new != old
    assert authenticates(client, partner.client_id, old)
    assert authenticates(client, partner.client_id, new)
    live = operator.get(f"{ADMIN}/{partner.id}").json()["secrets"]
    clients = [s for s in live if s["purpose"] == "client"]
    assert sorted(s["hint"] for s in clients) == sorted([old[-4:], new[-4:]])
    assert [s["expires_at"] is None for s in clients] == [False, True]  # oldest first; the old one ends

    newest = operator.post(rotate, json={"overlap_s": 0}).json()["secret"]
    assert not authenticates(client, partner.client_id, old)
    assert not authenticates(client, partner.client_id, new)
    assert authenticates(client, partner.client_id, newest)
    assert [s["hint"] for s in operator.get(f"{ADMIN}/{partner.id}").json()["secrets"]
            if s["purpose"] == "client"] == [newest[-4:]]


# --- 5. The CLI ---------------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    assert os.environ.get("DATABASE_URL")
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=120, check=False)


def test_cli_manages_partners_and_roles(client: httpx.Client, base_url: str, operator: Resident) -> None:
    name = f"命令行平台 {uuid.uuid4().hex[:6]}"
    made = cli("partner", "create", "--name", name, "--kind", "logistics", "--redirect-uri", "https://x.example/cb",
               "--redirect-uri", REDIRECT_URI, "--scope", "activities:write", "--behaviour", "parcel_box_reuse")
    assert made.returncode == 0, made.stdout + made.stderr
    created = json.loads(made.stdout)
    client_id = created["partner"]["client_id"]
    assert created["client_secret"].startswith("cws_") and created["webhook_secret"].startswith("whsec_")
    assert authenticates(client, client_id, created["client_secret"])

    listed = cli("partner", "list")
    assert listed.returncode == 0 and re.search(rf"^{re.escape(client_id)}\s+active\s+logistics\s", listed.stdout, re.M)

    # The webhook secret the CLI sealed opens in the API: a push signed with it verifies.
    partner = Partner(created["partner"]["id"], client_id, created["client_secret"], created["webhook_secret"])
    sub = link(client, base_url, register(client), partner, scopes=["activities:write"])["sub_account_id"]
    pushed = signed_push(client, partner, [{**activity(behaviour="parcel_box_reuse"), "sub_account_id": sub}])
    assert pushed.status_code == 200 and pushed.json()["credited"] == 1, pushed.text

    suspended = cli("partner", "suspend", client_id, "--reason", "test")
    assert suspended.returncode == 0 and f"{client_id}: suspended" in suspended.stdout
    shown = operator.get(f"{ADMIN}/{partner.id}").json()
    assert (shown["status"], shown["status_reason"]) == ("suspended", "test")
    assert cli("partner", "activate", client_id).returncode == 0
    assert operator.get(f"{ADMIN}/{partner.id}").json()["status"] == "active"

    rotated = cli("partner", "rotate-secret", client_id, "client", "--overlap-s", "0")
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    assert not authenticates(client, client_id, created["client_secret"])
    assert authenticates(client, client_id, json.loads(rotated.stdout)["secret"])

    staff = register(client)
    assert_problem(staff.get(ADMIN), 403, "operator-only")
    granted = cli("grant-role", staff.login, "operator")
    assert granted.returncode == 0 and "done" in granted.stdout, granted.stdout + granted.stderr
    assert staff.get(ADMIN).status_code == 200
    assert "no change" in cli("grant-role", staff.login, "operator").stdout
    assert cli("revoke-role", staff.login, "operator").returncode == 0
    assert_problem(staff.get(ADMIN), 403, "operator-only")


@pytest.mark.parametrize(("args", "message"), [
    (["partner", "create", "--name", "X", "--kind", "spaceship", "--redirect-uri", "https://x.example/cb",
      "--scope", "activities:write"], "kind must be one of"),
    (["partner", "create", "--name", "X", "--kind", "logistics", "--redirect-uri", "http://x.example/cb",
      "--scope", "activities:write"], "Redirect URI"),
    (["partner", "suspend", "cwc_nobody"], "No partner has client id"),
    (["grant-role", "nobody-at-all@example.com", "operator"], "No active holder"),
])
def test_cli_errors_are_readable(args: list[str], message: str) -> None:
    done = cli(*args)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert message in output and "Traceback" not in output, output


# --- 6. Demo partners ---------------------------------------------------------------------------------


async def test_demo_partners_are_seeded_once(
    client: httpx.Client, operator: Resident, passwords: Any, settings: Any, db: object
) -> None:
    from api.demo import seed_demo
    from wallet.sealing import SecretBox

    box = SecretBox(settings.data_key)
    await seed_demo(passwords, box)
    assert await seed_demo(passwords, box) == 0  # the second run creates nothing
    partners = operator.get(ADMIN).json()
    counts = Counter(p["client_id"] for p in partners)
    expected = {"demo-food-delivery": ("food_delivery", "confidential"),
                "demo-logistics": ("logistics", "confidential"), "demo-second-hand": ("second_hand", "public")}
    for client_id, (kind, client_type) in expected.items():
        assert counts[client_id] == 1, counts
        partner = next(p for p in partners if p["client_id"] == client_id)
        assert (partner["kind"], partner["client_type"], partner["status"]) == (kind, client_type, "active")
    assert authenticates(client, "demo-food-delivery", "demo-food-delivery-secret")
    assert authenticates(client, "demo-second-hand", None)
