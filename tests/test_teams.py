"""Teams over HTTP: operators create teams with departments (validated, operator-only), list them with
member counts, add departments and rotate join codes, also from the CLI; residents join with a join code
(unknown → 404, unknown department → 422), change department, switch teams (the old stay ends) and leave,
with `team.*` events recorded in the same transaction; concurrent joins by one resident never leave two
active memberships; a deleted account's stay ends; the demo seed is idempotent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.teams.demo import DEMO_FRIENDS, DEMO_MEMBERS, DEMO_TEAM, seed_friends_and_team
from tests.support import PASSWORD, ROOT, Resident, assert_problem, deliver_pending_events, race, register
from wallet.db import connection


def team_spec(**changes: Any) -> dict[str, Any]:
    return {"code": f"team-{uuid.uuid4().hex[:10]}", "kind": "company", "name_zh": "绿动科技",
            "name_en": "GreenMotion Tech", "city": "北京市",
            "departments": [{"code": "engineering", "name_zh": "研发部", "name_en": "Engineering"},
                            {"code": "marketing", "name_zh": "市场部", "name_en": "Marketing"}], **changes}


def create(operator: Resident, **changes: Any) -> dict[str, Any]:
    response = operator.post("/v1/admin/teams", json=team_spec(**changes))
    assert response.status_code == 201, response.text
    return response.json()


def join(r: Resident, join_code: str, department_code: str | None = None) -> httpx.Response:
    body = {"join_code": join_code} | ({"department_code": department_code} if department_code else {})
    return r.client.put("/v1/me/team", json=body, headers=r.headers)


def mine(r: Resident) -> dict[str, Any]:
    response = r.get("/v1/me/team")
    assert response.status_code == 200, response.text
    return response.json()


async def team_events(holder_id: str) -> list[tuple[str, dict[str, Any]]]:
    async with connection() as conn:
        rows = await conn.fetch("SELECT name, payload FROM outbox_event WHERE holder_id = $1 AND name LIKE 'team.%' "
                                "ORDER BY id", uuid.UUID(holder_id))
    return [(r["name"], json.loads(r["payload"]) if isinstance(r["payload"], str) else r["payload"]) for r in rows]


async def active_stays(holder_id: str) -> list[int]:
    async with connection() as conn:
        rows = await conn.fetch("SELECT team FROM team_member WHERE holder = $1 AND left_at IS NULL",
                                uuid.UUID(holder_id))
    return [r["team"] for r in rows]


def test_an_operator_creates_and_lists_teams_with_departments(operator: Resident) -> None:
    team = create(operator)
    assert (team["kind"], team["name_zh"], team["city"], team["status"], team["member_count"]) == (
        "company", "绿动科技", "北京市", "active", 0)
    assert [d["code"] for d in team["departments"]] == ["engineering", "marketing"]
    assert len(team["join_code"]) == 10
    listed = {t["id"]: t for t in operator.get("/v1/admin/teams").json()}
    assert listed[team["id"]] == team
    assert operator.get(f"/v1/admin/teams/{team['id']}").json() == team
    bare = create(operator, kind="organisation", city=None, departments=[])
    assert (bare["kind"], bare["city"], bare["departments"]) == ("organisation", None, [])


def test_team_admin_refuses_what_is_not_valid(operator: Resident) -> None:
    team = create(operator)
    assert_problem(operator.post("/v1/admin/teams", json=team_spec(code=team["code"])), 409, "team-code-taken")
    twice = [{"code": "ops", "name_zh": "运营", "name_en": "Ops"}] * 2
    assert_problem(operator.post("/v1/admin/teams", json=team_spec(departments=twice)), 422, "duplicate-department")
    assert_problem(operator.post("/v1/admin/teams", json=team_spec(code="Not A Code")), 422, "invalid-team")
    assert_problem(operator.post("/v1/admin/teams", json=team_spec(name_en="   ")), 422, "invalid-team")
    assert_problem(operator.post("/v1/admin/teams", json=team_spec(name_zh="a\u0000b")), 422, "invalid-team")
    assert_problem(operator.post("/v1/admin/teams", json=team_spec(kind="club")), 400, "invalid-request")
    assert_problem(operator.post("/v1/admin/teams", json=team_spec(extra=1)), 400, "invalid-request")
    assert_problem(operator.get("/v1/admin/teams/999999999"), 404, "team-not-found")
    assert_problem(operator.get("/v1/admin/teams/0"), 404, "team-not-found")


def test_only_operators_run_teams(client: httpx.Client, operator: Resident) -> None:
    resident = register(client)
    team = create(operator)
    assert_problem(resident.post("/v1/admin/teams", json=team_spec()), 403, "operator-only")
    assert_problem(resident.get("/v1/admin/teams"), 403, "operator-only")
    assert_problem(resident.post(f"/v1/admin/teams/{team['id']}/join-code/rotate"), 403, "operator-only")
    assert_problem(resident.post(f"/v1/admin/teams/{team['id']}/departments",
                                 json={"code": "x", "name_zh": "x", "name_en": "x"}), 403, "operator-only")
    assert_problem(client.get("/v1/admin/teams"), 401, "authentication-required")


def test_departments_are_added_once_and_a_rotated_join_code_replaces_the_old(client: httpx.Client,
                                                                             operator: Resident) -> None:
    team = create(operator)
    department = {"code": "finance", "name_zh": "财务部", "name_en": "Finance"}
    added = operator.post(f"/v1/admin/teams/{team['id']}/departments", json=department)
    assert added.status_code == 201, added.text
    assert [d["code"] for d in added.json()["departments"]] == ["engineering", "finance", "marketing"]
    assert_problem(operator.post(f"/v1/admin/teams/{team['id']}/departments", json=department), 409,
                   "department-code-taken")
    assert_problem(operator.post("/v1/admin/teams/999999999/departments", json=department), 404, "team-not-found")
    member = register(client)
    assert join(member, team["join_code"], "finance").status_code == 200
    rotated = operator.post(f"/v1/admin/teams/{team['id']}/join-code/rotate")
    assert rotated.status_code == 200
    assert rotated.json()["join_code"] != team["join_code"]
    assert_problem(join(register(client), team["join_code"]), 404, "team-not-found")
    assert join(register(client), rotated.json()["join_code"]).status_code == 200
    assert mine(member)["team"]["id"] == team["id"], "members stay"
    assert operator.get(f"/v1/admin/teams/{team['id']}").json()["member_count"] == 2


async def test_a_resident_joins_changes_department_and_leaves(client: httpx.Client, operator: Resident,
                                                              db: object) -> None:
    team = create(operator)
    r = register(client)
    assert mine(r) == {"team": None, "department": None, "role": None, "joined_at": None}
    code = team["join_code"]
    joined = join(r, f"{code[:5].lower()}-{code[5:].lower()}", "engineering")
    assert joined.status_code == 200, joined.text
    body = joined.json()
    assert (body["team"]["id"], body["department"]["code"], body["role"]) == (team["id"], "engineering", "member")
    assert "join_code" not in body["team"], "residents do not see the join code"
    assert body == mine(r)
    assert body["team"]["member_count"] == 1 and body["department"]["member_count"] == 1
    moved = r.patch("/v1/me/team", json={"department_code": "marketing"})
    assert moved.json()["department"]["code"] == "marketing"
    assert r.patch("/v1/me/team", json={"department_code": None}).json()["department"] is None
    assert join(r, code, "engineering").json()["department"]["code"] == "engineering", "same team: department only"
    assert join(r, code).json()["department"]["code"] == "engineering", "no department given: kept"
    assert r.delete("/v1/me/team").status_code == 204
    assert mine(r)["team"] is None
    assert r.delete("/v1/me/team").status_code == 204
    assert_problem(r.patch("/v1/me/team", json={"department_code": "marketing"}), 404, "not-in-team")
    engineering, marketing = (d["id"] for d in team["departments"])
    assert await team_events(r.holder_id) == [
        ("team.joined", {"team_id": team["id"], "department_id": engineering}),
        ("team.department_changed", {"team_id": team["id"], "department_id": marketing,
                                     "from_department_id": engineering}),
        ("team.department_changed", {"team_id": team["id"], "department_id": None,
                                     "from_department_id": marketing}),
        ("team.department_changed", {"team_id": team["id"], "department_id": engineering,
                                     "from_department_id": None}),
        ("team.left", {"team_id": team["id"], "department_id": engineering}),
    ]


async def test_joining_another_team_ends_the_current_stay(client: httpx.Client, operator: Resident,
                                                          db: object) -> None:
    first, second = create(operator), create(operator)
    r = register(client)
    join(r, first["join_code"], "marketing")
    switched = join(r, second["join_code"])
    assert switched.status_code == 200
    assert (switched.json()["team"]["id"], switched.json()["department"]) == (second["id"], None)
    assert await active_stays(r.holder_id) == [second["id"]]
    assert operator.get(f"/v1/admin/teams/{first['id']}").json()["member_count"] == 0
    marketing = first["departments"][1]["id"]
    assert [name for name, _ in await team_events(r.holder_id)] == ["team.joined", "team.left", "team.joined"]
    assert (await team_events(r.holder_id))[1][1] == {"team_id": first["id"], "department_id": marketing}


def test_unknown_codes_and_departments_change_nothing(client: httpx.Client, operator: Resident) -> None:
    team = create(operator)
    r = register(client)
    assert_problem(join(r, "ZZZZZZZZZZ"), 404, "team-not-found")
    assert_problem(join(r, "short"), 422, "invalid-join-code")
    assert_problem(join(r, team["join_code"], "no-such-department"), 422, "unknown-department")
    assert mine(r)["team"] is None
    join(r, team["join_code"], "engineering")
    assert_problem(r.patch("/v1/me/team", json={"department_code": "no-such-department"}), 422, "unknown-department")
    assert_problem(join(r, "ZZZZZZZZZZ"), 404, "team-not-found")
    assert mine(r)["department"]["code"] == "engineering"
    assert_problem(r.client.put("/v1/me/team", json={"department_code": "x"}, headers=r.headers), 400)


@pytest.mark.parametrize("rounds", [3])
async def test_concurrent_joins_leave_one_active_membership(client: httpx.Client, operator: Resident, base_url: str,
                                                            db: object, rounds: int) -> None:
    teams = [create(operator) for _ in range(3)]
    for _ in range(rounds):
        r = register(client)
        codes = iter([t["join_code"] for t in teams] * 3)

        def act(http: httpx.Client, r: Resident = r, codes: Any = codes) -> httpx.Response:
            return http.put("/v1/me/team", json={"join_code": next(codes)}, headers=r.headers)

        answers = race(9, lambda: httpx.Client(base_url=base_url, timeout=30), act)
        assert {a.status_code for a in answers} <= {200, 409}, [a.text for a in answers]
        for refused in (a for a in answers if a.status_code == 409):
            assert_problem(refused, 409, "team-changed-concurrently")
        stays = await active_stays(r.holder_id)
        assert len(stays) == 1 and mine(r)["team"]["id"] == stays[0]
        names = [name for name, _ in await team_events(r.holder_id)]
        assert names.count("team.joined") - names.count("team.left") == 1


async def test_a_deleted_account_leaves_its_team(client: httpx.Client, operator: Resident, db: object) -> None:
    team = create(operator)
    r = register(client)
    join(r, team["join_code"])
    assert r.delete("/v1/me", json={"password": PASSWORD, "confirm": "DELETE"}).status_code == 204
    assert operator.get(f"/v1/admin/teams/{team['id']}").json()["member_count"] == 0
    await deliver_pending_events()
    assert await active_stays(r.holder_id) == []
    assert [name for name, _ in await team_events(r.holder_id)] == ["team.joined", "team.left"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "api.cli", "team", *args], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)


def test_the_cli_creates_lists_extends_and_rotates_teams(tmp_path: Path, operator: Resident) -> None:
    spec = team_spec(departments=[{"code": "ops", "name_zh": "运营部", "name_en": "Operations"}])
    path = tmp_path / "team.json"
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    created = _cli("create", str(path))
    assert created.returncode == 0, created.stderr
    assert spec["code"] in created.stdout and "ops" in created.stdout
    assert _cli("create", str(path)).returncode == 1, "the code is taken"
    added = _cli("add-department", spec["code"], "design", "设计部", "Design")
    assert added.returncode == 0, added.stderr
    listed = _cli("list")
    assert listed.returncode == 0 and "design" in listed.stdout and spec["code"] in listed.stdout
    team = next(t for t in operator.get("/v1/admin/teams").json() if t["code"] == spec["code"])
    assert _cli("rotate-join-code", spec["code"]).returncode == 0
    assert operator.get(f"/v1/admin/teams/{team['id']}").json()["join_code"] != team["join_code"]
    assert _cli("rotate-join-code", "no-such-team").returncode == 1


async def test_the_demo_friends_and_company_are_seeded_once(client: httpx.Client, db: object) -> None:
    residents = [uuid.UUID(register(client).holder_id) for _ in range(5)]

    async def snapshot() -> tuple[Any, ...]:
        async with connection() as conn:
            friendships = await conn.fetchval(
                "SELECT count(*) FROM friendship WHERE holder_a = ANY($1::uuid[]) OR holder_b = ANY($1::uuid[])",
                residents)
            stays = await conn.fetch(
                """SELECT m.holder, d.code FROM team_member m JOIN team t ON t.id = m.team AND t.code = $2
                   LEFT JOIN team_department d ON d.id = m.department WHERE m.holder = ANY($1::uuid[])""",
                residents, DEMO_TEAM["code"])
            events = await conn.fetchval("SELECT count(*) FROM outbox_event WHERE holder_id = ANY($1::uuid[])",
                                         residents)
        return friendships, sorted((r["holder"], r["code"]) for r in stays), events

    await seed_friends_and_team(residents)
    first = await snapshot()
    assert first[0] == len(DEMO_FRIENDS)
    assert first[1] == sorted((residents[i], code) for i, code in DEMO_MEMBERS.items())
    await seed_friends_and_team(residents)
    assert await snapshot() == first
