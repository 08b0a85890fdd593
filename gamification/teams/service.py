"""Teams: companies and organisations with departments, which residents join with the team's join code.

What holds, and why:
- A resident is in at most one team at a time: a stay is a `team_member` row, and leaving ends it
  (`left_at`); the partial unique index `team_member_one_team` is the guarantee. A resident's team changes
  run one at a time under a transaction-scoped advisory lock on the resident, so concurrent joins switch
  in turn; should anything slip past the lock, the index refuses it and the caller gets a clean 409.
- Joining another team ends the current stay first, in the same transaction.
- `team.joined`, `team.left` and `team.department_changed` are recorded in the transaction of the change
  (the team and department leaderboards subscribe to them).
- Join codes are 50 random bits (`gamification.codes`): unknown codes are refused with 404 and cannot be
  enumerated. Operators rotate a leaked one; members already in stay.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import asyncpg

from gamification.codes import new_code, read_code
from wallet.db import connection, engine
from wallet.errors import DomainError
from wallet.outbox.service import Event, EventHandler, record_events

__all__ = [
    "DEPARTMENTS_MAX",
    "HANDLERS",
    "KINDS",
    "add_department",
    "change_department",
    "create_team",
    "get_team",
    "join_team",
    "leave_team",
    "list_teams",
    "my_team",
    "rotate_join_code",
    "team_id_for_code",
]

KINDS = ("company", "organisation")
DEPARTMENTS_MAX = 200
_TEAM_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{1,63}$")
_DEPARTMENT_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TEAM_COLUMNS = """t.id, t.code, t.kind, t.name_zh, t.name_en, t.city, t.join_code, t.status, t.created_at,
    (SELECT count(*) FROM team_member m JOIN holder h ON h.id = m.holder AND h.status = 'active'
     WHERE m.team = t.id AND m.left_at IS NULL) AS member_count"""


def _bad(code: str, field: str, detail: str) -> DomainError:
    return DomainError("invalid", code, detail, field=field)


def _text(fields: dict[str, Any], name: str, length_max: int, *, required: bool = True) -> str | None:
    value = fields.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or _CONTROL.search(value) or not value.strip() or len(value.strip()) > length_max:
        raise _bad("invalid-team", name, f"{name} must be text of 1 to {length_max} characters.")
    return value.strip()


def _department(fields: Any) -> dict[str, str]:
    if not isinstance(fields, dict):
        raise _bad("invalid-team", "departments", "Each department is an object with code, name_zh and name_en.")
    code = fields.get("code")
    if not isinstance(code, str) or not _DEPARTMENT_CODE.match(code):
        raise _bad("invalid-team", "code", "A department code is 1-64 lowercase letters, digits or dashes.")
    return {"code": code, "name_zh": _text(fields, "name_zh", 80), "name_en": _text(fields, "name_en", 80)}


def _team(fields: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    code = fields.get("code")
    if not isinstance(code, str) or not _TEAM_CODE.match(code):
        raise _bad("invalid-team", "code", "code must be 2-64 lowercase letters, digits or dashes, e.g. acme-beijing.")
    if fields.get("kind") not in KINDS:
        raise _bad("invalid-team", "kind", "kind must be company or organisation.")
    departments = fields.get("departments") or []
    if not isinstance(departments, list) or len(departments) > DEPARTMENTS_MAX:
        raise _bad("invalid-team", "departments", f"departments must be a list of at most {DEPARTMENTS_MAX}.")
    clean = [_department(d) for d in departments]
    codes = [d["code"] for d in clean]
    if len(set(codes)) != len(codes):
        raise _bad("duplicate-department", "departments", "Each department needs its own code.")
    team = {"code": code, "kind": fields["kind"], "name_zh": _text(fields, "name_zh", 80),
            "name_en": _text(fields, "name_en", 80), "city": _text(fields, "city", 64, required=False)}
    return team, clean


async def _insert_departments(conn: asyncpg.Connection, team_id: int, departments: list[dict[str, str]]) -> None:
    await conn.executemany(
        "INSERT INTO team_department (team, code, name_zh, name_en, created_at) VALUES ($1, $2, $3, $4, now())",
        [(team_id, d["code"], d["name_zh"], d["name_en"]) for d in departments])


async def create_team(fields: dict[str, Any]) -> dict[str, Any]:
    """Validated here as well as at the edge (the CLI reads a JSON file). 409 `team-code-taken`."""
    team, departments = _team(fields)
    for _ in range(5):
        try:
            async with engine().transaction() as tx:
                team_id = await tx.connection.fetchval(
                    """INSERT INTO team (code, kind, name_zh, name_en, city, join_code, status, created_at)
                       VALUES ($1, $2, $3, $4, $5, $6, 'active', now()) RETURNING id""",
                    *team.values(), new_code())
                await _insert_departments(tx.connection, team_id, departments)
            return await get_team(team_id)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name and "join_code" in exc.constraint_name:
                continue  # a join code drawn twice (odds 2^-50): draw again
            raise DomainError("conflict", "team-code-taken", f"A team with code {team['code']} exists.") from exc
    raise DomainError("unavailable", "code-unavailable", "No join code could be made just now; try again.")


async def _departments(conn: asyncpg.Connection, team_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    rows = await conn.fetch(
        """SELECT d.team, d.id, d.code, d.name_zh, d.name_en,
                  (SELECT count(*) FROM team_member m JOIN holder h ON h.id = m.holder AND h.status = 'active'
                   WHERE m.team = d.team AND m.department = d.id AND m.left_at IS NULL) AS member_count
           FROM team_department d WHERE d.team = ANY($1::bigint[]) ORDER BY d.team, d.code""", team_ids)
    out: dict[int, list[dict[str, Any]]] = {t: [] for t in team_ids}
    for r in rows:
        out[r["team"]].append({k: r[k] for k in ("id", "code", "name_zh", "name_en", "member_count")})
    return out


async def get_team(team_id: int) -> dict[str, Any]:
    async with connection() as conn:
        row = await conn.fetchrow(f"SELECT {_TEAM_COLUMNS} FROM team t WHERE t.id = $1", team_id)  # noqa: S608
        if row is None:
            raise DomainError("not_found", "team-not-found", "No team has this id.")
        return {**dict(row), "departments": (await _departments(conn, [team_id]))[team_id]}


async def list_teams() -> list[dict[str, Any]]:
    async with connection() as conn:
        rows = await conn.fetch(f"SELECT {_TEAM_COLUMNS} FROM team t ORDER BY t.id")  # noqa: S608 - constant
        departments = await _departments(conn, [r["id"] for r in rows])
    return [{**dict(r), "departments": departments[r["id"]]} for r in rows]


async def team_id_for_code(code: str) -> int:
    """The CLI names teams by their code."""
    async with connection() as conn:
        team_id = await conn.fetchval("SELECT id FROM team WHERE code = $1", code)
    if team_id is None:
        raise DomainError("not_found", "team-not-found", f"No team has the code {code!r}.")
    return team_id


async def add_department(team_id: int, fields: dict[str, Any]) -> dict[str, Any]:
    department = _department(fields)
    async with engine().transaction() as tx:
        conn = tx.connection
        count = await conn.fetchval(
            "SELECT (SELECT count(*) FROM team_department WHERE team = t.id) FROM team t WHERE t.id = $1 FOR UPDATE",
            team_id)
        if count is None:
            raise DomainError("not_found", "team-not-found", "No team has this id.")
        if count >= DEPARTMENTS_MAX:
            raise DomainError("conflict", "too-many-departments", f"A team has at most {DEPARTMENTS_MAX} departments.")
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM team_department WHERE team = $1 AND code = $2)",
                               team_id, department["code"]):
            raise DomainError("conflict", "department-code-taken",
                              f"This team has a department with code {department['code']} already.")
        await _insert_departments(conn, team_id, [department])
    return await get_team(team_id)


async def rotate_join_code(team_id: int) -> dict[str, Any]:
    """The old code stops working at once; members stay."""
    for _ in range(5):
        try:
            async with connection() as conn:
                done = await conn.fetchval("UPDATE team SET join_code = $2 WHERE id = $1 RETURNING id",
                                           team_id, new_code())
        except asyncpg.UniqueViolationError:
            continue
        if done is None:
            raise DomainError("not_found", "team-not-found", "No team has this id.")
        return await get_team(team_id)
    raise DomainError("unavailable", "code-unavailable", "No join code could be made just now; try again.")


# --- a resident's membership ----------------------------------------------------------------------------


async def my_team(holder_id: uuid.UUID) -> dict[str, Any] | None:
    """My current stay: the team (with its departments to choose from), my department, role and since when."""
    async with connection() as conn:
        stay = await conn.fetchrow(
            "SELECT team, department, role, joined_at FROM team_member WHERE holder = $1 AND left_at IS NULL",
            holder_id)
    if stay is None:
        return None
    team = await get_team(stay["team"])
    department = next((d for d in team["departments"] if d["id"] == stay["department"]), None)
    return {"team": team, "department": department, "role": stay["role"], "joined_at": stay["joined_at"]}


async def _lock_holder(conn: asyncpg.Connection, holder_id: uuid.UUID) -> asyncpg.Record | None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"team-member:{holder_id}")
    return await conn.fetchrow(
        "SELECT id, team, department FROM team_member WHERE holder = $1 AND left_at IS NULL FOR UPDATE", holder_id)


async def _department_id(conn: asyncpg.Connection, team_id: int, code: str | None) -> int | None:
    if code is None:
        return None
    department_id = await conn.fetchval("SELECT id FROM team_department WHERE team = $1 AND code = $2", team_id, code)
    if department_id is None:
        raise _bad("unknown-department", "department_code", "This team has no department with this code.")
    return department_id


def _event(name: str, holder_id: uuid.UUID, team_id: int, department_id: int | None,
           **extra: Any) -> tuple[str, dict[str, Any], uuid.UUID]:
    return name, {"team_id": team_id, "department_id": department_id, **extra}, holder_id


async def join_team(holder_id: uuid.UUID, join_code: str, department_code: str | None = None) -> dict[str, Any]:
    """Join the team with this code, leaving my current one first. Joining the team I am in changes only the
    department, if one is given. 404 `team-not-found`, 422 `unknown-department`."""
    code = read_code(join_code)
    if code is None:
        raise _bad("invalid-join-code", "join_code", "A join code is 10 letters and digits, e.g. 7KX2M9QHPA.")
    try:
        async with engine().transaction() as tx:
            conn = tx.connection
            team_id = await conn.fetchval("SELECT id FROM team WHERE join_code = $1 AND status = 'active'", code)
            if team_id is None:
                raise DomainError("not_found", "team-not-found", "No team has this join code; check it and retry.")
            department_id = await _department_id(conn, team_id, department_code)
            stay = await _lock_holder(conn, holder_id)
            if stay is not None and stay["team"] == team_id:
                if department_code is not None and department_id != stay["department"]:
                    await _move(conn, holder_id, stay, department_id)
            else:
                events = []
                if stay is not None:
                    await conn.execute("UPDATE team_member SET left_at = now() WHERE id = $1", stay["id"])
                    events.append(_event("team.left", holder_id, stay["team"], stay["department"]))
                await conn.execute(
                    """INSERT INTO team_member (team, holder, department, role, joined_at)
                       VALUES ($1, $2, $3, 'member', now())""", team_id, holder_id, department_id)
                events.append(_event("team.joined", holder_id, team_id, department_id))
                await record_events(events)
    except asyncpg.UniqueViolationError as exc:
        raise DomainError("conflict", "team-changed-concurrently",
                          "Your team changed at the same moment; look at it and try again.") from exc
    mine = await my_team(holder_id)
    assert mine is not None
    return mine


async def _move(conn: asyncpg.Connection, holder_id: uuid.UUID, stay: asyncpg.Record,
                department_id: int | None) -> None:
    await conn.execute("UPDATE team_member SET department = $2 WHERE id = $1", stay["id"], department_id)
    await record_events([_event("team.department_changed", holder_id, stay["team"], department_id,
                                from_department_id=stay["department"])])


async def change_department(holder_id: uuid.UUID, department_code: str | None) -> dict[str, Any]:
    """Move to another department of my team (null: none). 404 `not-in-team`, 422 `unknown-department`."""
    async with engine().transaction() as tx:
        conn = tx.connection
        stay = await _lock_holder(conn, holder_id)
        if stay is None:
            raise DomainError("not_found", "not-in-team", "You are not in a team; join one with its join code.")
        department_id = await _department_id(conn, stay["team"], department_code)
        if department_id != stay["department"]:
            await _move(conn, holder_id, stay, department_id)
    mine = await my_team(holder_id)
    assert mine is not None
    return mine


async def leave_team(holder_id: uuid.UUID) -> bool:
    """False when I was in no team (leaving twice is not an error)."""
    async with engine().transaction() as tx:
        stay = await _lock_holder(tx.connection, holder_id)
        if stay is None:
            return False
        await tx.connection.execute("UPDATE team_member SET left_at = now() WHERE id = $1", stay["id"])
        await record_events([_event("team.left", holder_id, stay["team"], stay["department"])])
    return True


async def leave_team_of_deleted_holder(event: Event) -> None:
    """A deleted account's stay ends (its past stays remain, with no personal data in them)."""
    assert event.holder_id is not None
    async with connection() as conn:
        stay = await conn.fetchrow(
            "UPDATE team_member SET left_at = now() WHERE holder = $1 AND left_at IS NULL RETURNING team, department",
            event.holder_id)
    if stay is not None:
        await record_events([_event("team.left", event.holder_id, stay["team"], stay["department"])])


HANDLERS: dict[str, list[EventHandler]] = {"holder.deleted": [leave_team_of_deleted_holder]}
