"""Donation projects: residents give energy toward a collective goal; when it is met, every donor gets a
certificate with their share.

Progress is the sum of transfers into the project's ledger account (an index-only scan), not a counter
every donor would have to lock (LEDGER L6). Donors take a shared lock on the project row, so many give at
once; completing takes the exclusive lock, so the certificates cover exactly the donations committed before
it and none can slip in after.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from wallet.db import connection, engine
from wallet.errors import DomainError
from wallet.ledger.allocation import largest_remainder
from wallet.ledger.service import ENERGY, Transfer, lock_holder, post
from wallet.outbox.service import Event, EventHandler, record_events

__all__ = [
    "HANDLERS",
    "certificates_of",
    "complete_if_met",
    "create_project",
    "donate",
    "donations_of",
    "get_project",
    "list_projects",
    "update_project",
]

_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{1,63}$")
DONATION_MAX = 10_000_000
PPM = 1_000_000

def _given(account: str) -> str:
    """Per holder, what they gave to the project account `account` net of corrections (a reversed donation
    takes its energy back out), with their first donation for a stable order."""
    return f"""SELECT a.holder, sum(x.amount)::bigint AS amount, min(x.id) AS first FROM (
        SELECT debit_account AS account, amount, id FROM ledger_transfer WHERE credit_account = {account}
        UNION ALL SELECT credit_account, -amount, id FROM ledger_transfer WHERE debit_account = {account}) x
      JOIN ledger_account a ON a.id = x.account WHERE a.holder IS NOT NULL GROUP BY a.holder"""  # noqa: S608


_COLUMNS = f"""p.id, p.code, p.title_zh, p.title_en, p.description_zh, p.description_en, p.outcome_zh, p.outcome_en,
    p.images, p.goal, p.account, p.status, p.opens_at, p.closes_at, p.completed_at, p.raised_at_completion,
    ((SELECT coalesce(sum(amount), 0) FROM ledger_transfer WHERE credit_account = p.account)
     - (SELECT coalesce(sum(amount), 0) FROM ledger_transfer WHERE debit_account = p.account))::bigint AS raised,
    (SELECT count(*) FROM ({_given("p.account")}) g WHERE g.amount > 0) AS donors"""  # noqa: S608 - constant


def _out(row: Any) -> dict[str, Any]:
    out = dict(row)
    if out["status"] == "open" and out["closes_at"] is not None and out["closes_at"] <= datetime.now(UTC):
        out["status"] = "closed"  # past its closing time: it takes no more donations
    images = out.get("images")
    out["images"] = msgspec.json.decode(images) if isinstance(images, str | bytes) else (images or [])
    return out


def _bad(field: str, detail: str) -> DomainError:
    return DomainError("invalid", "invalid-project", detail, field=field)


def _clean(fields: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, limit, required in (("title_zh", 120, True), ("title_en", 120, True), ("description_zh", 4000, False),
                                  ("description_en", 4000, False), ("outcome_zh", 200, False),
                                  ("outcome_en", 200, False)):
        if partial and name not in fields:
            continue
        value = fields.get(name, "" if not required else None)
        if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
            raise _bad(name, f"{name} must be text of {'1' if required else '0'} to {limit} characters.")
        out[name] = value.strip()
    if not partial or "goal" in fields:
        goal = fields.get("goal")
        if isinstance(goal, bool) or not isinstance(goal, int) or not 1 <= goal <= 10**15:
            raise _bad("goal", "goal must be a whole number of energy, at least 1.")
        out["goal"] = goal
    if not partial or "images" in fields:
        images = fields.get("images") or []
        if not isinstance(images, list) or len(images) > 8 or not all(
                isinstance(i, str) and i.startswith("https://") and len(i) <= 500 for i in images):
            raise _bad("images", "images must be a list of at most 8 https URLs.")
        out["images"] = msgspec.json.encode(images).decode()
    if "closes_at" in fields:
        value = fields["closes_at"]
        try:
            out["closes_at"] = None if value is None else datetime.fromisoformat(value)
        except (TypeError, ValueError) as exc:
            raise _bad("closes_at", "closes_at must be an ISO 8601 time with an offset, or null.") from exc
    if "status" in fields:
        if fields["status"] not in ("open", "closed"):
            raise _bad("status", "status can be set to open or closed; a project completes by meeting its goal.")
        out["status"] = fields["status"]
    return out


async def create_project(fields: dict[str, Any]) -> dict[str, Any]:
    code = fields.get("code")
    if not isinstance(code, str) or not _CODE.match(code):
        raise _bad("code", "code must be 2-64 lowercase letters, digits or dashes, e.g. wind-turbine-2027.")
    clean = _clean(fields, partial=False)
    async with engine().transaction() as tx:
        conn = tx.connection
        try:
            account = await conn.fetchval(
                """INSERT INTO ledger_account (unit, purpose, code, holder, balance, created_at)
                   VALUES ($1, 'project', $2, NULL, NULL, now()) RETURNING id""",
                ENERGY, f"energy:project:{code}",
            )
        except asyncpg.UniqueViolationError as exc:
            raise DomainError("conflict", "project-code-taken", f"A project with code {code} exists.") from exc
        names = ", ".join(clean)
        values = ", ".join(f"${i}" + ("::jsonb" if n == "images" else "") for i, n in enumerate(clean, start=3))
        project_id = await conn.fetchval(
            f"""INSERT INTO donation_project (code, account, {names}, status, opens_at, created_at)
                VALUES ($1, $2, {values}, 'open', now(), now()) RETURNING id""",  # noqa: S608 - checked names
            code, account, *clean.values(),
        )
    return await get_project(project_id)


async def update_project(project_id: int, changes: dict[str, Any]) -> dict[str, Any]:
    clean = _clean(changes, partial=True)
    if clean:
        sets = ", ".join(f"{n} = ${i}" + ("::jsonb" if n == "images" else "") for i, n in enumerate(clean, start=2))
        async with connection() as conn:
            done = await conn.fetchval(
                f"UPDATE donation_project SET {sets} WHERE id = $1 AND status <> 'completed' RETURNING id",  # noqa: S608
                project_id, *clean.values(),
            )
        if done is None:
            await get_project(project_id)
            raise DomainError("conflict", "project-completed", "A completed project's record stays as it was.")
        if "goal" in clean or clean.get("status") == "open":  # a lowered goal may be met already
            await complete_if_met(project_id)
    return await get_project(project_id)


async def get_project(project_id: int) -> dict[str, Any]:
    async with connection() as conn:
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM donation_project p WHERE p.id = $1", project_id)  # noqa: S608
    if row is None:
        raise DomainError("not_found", "project-not-found", "No donation project has this id.")
    return _out(row)


async def list_projects(*, include_closed: bool = False) -> list[dict[str, Any]]:
    async with connection() as conn:
        rows = await conn.fetch(
            f"""SELECT {_COLUMNS} FROM donation_project p
                WHERE $1 OR (p.status <> 'closed' AND (p.status = 'completed' OR p.closes_at IS NULL
                                                       OR p.closes_at > now()))
                ORDER BY p.status = 'open' DESC, p.id""",  # noqa: S608 - constant columns
            include_closed,
        )
    return [_out(r) for r in rows]


def _donation_hash(project_id: int, amount: int) -> str:
    return hashlib.sha256(f"donate:v1:{project_id}:{amount}".encode()).hexdigest()


async def donate(holder_id: uuid.UUID, project_id: int, amount: int, *, idempotency_key: str | None,
                 now: datetime | None = None) -> tuple[dict[str, Any], bool]:
    """Give `amount` energy; returns the donation and whether this call made it (False: a replay)."""
    if isinstance(amount, bool) or not 1 <= amount <= DONATION_MAX:
        raise DomainError("invalid", "invalid-amount",
                          f"amount must be a whole number of energy from 1 to {DONATION_MAX}.")
    key = f"donation:{holder_id}:{idempotency_key or uuid.uuid4()}"
    digest = _donation_hash(project_id, amount)
    now = now or datetime.now(UTC)
    async with engine().transaction() as tx:
        conn = tx.connection
        accounts = await lock_holder(conn, holder_id)
        earlier = await conn.fetchrow("SELECT id, amount, ref, created_at FROM ledger_transfer WHERE key = $1", key)
        if earlier is not None:
            ref = earlier["ref"] if isinstance(earlier["ref"], dict) else msgspec.json.decode(earlier["ref"])
            if ref.get("request") != digest:
                raise DomainError("invalid", "idempotency-key-reused",
                                  "This Idempotency-Key was used for a different donation; use a new key.")
            return _donation(earlier["id"], project_id, earlier["amount"], earlier["created_at"]), False
        project = await conn.fetchrow(
            "SELECT id, account, status, opens_at, closes_at FROM donation_project WHERE id = $1 FOR SHARE", project_id
        )
        if project is None:
            raise DomainError("not_found", "project-not-found", "No donation project has this id.")
        if project["status"] == "completed":
            raise DomainError("conflict", "project-completed", "This project has met its goal; thank you!")
        closes = project["closes_at"]
        if project["status"] != "open" or project["opens_at"] > now or (closes and closes <= now):
            raise DomainError("conflict", "project-closed", "This project is not taking donations now.")
        if accounts.balances["available"] < amount:
            raise DomainError("conflict", "insufficient-energy",
                              f"You have {accounts.balances['available']} energy to give.",
                              available=accounts.balances["available"])
        ids = await post(conn, [Transfer(key, accounts.available, project["account"], amount, "donation",
                                         {"project": project_id, "request": digest})])
        await record_events([("donation.made", {"project_id": project_id, "amount": amount}, holder_id)])
    return _donation(ids[key], project_id, amount, now), True


def _donation(transfer_id: int, project_id: int, amount: int, at: datetime) -> dict[str, Any]:
    return {"id": transfer_id, "project_id": project_id, "amount": amount, "created_at": at}


async def donations_of(holder_id: uuid.UUID) -> list[dict[str, Any]]:
    """Per project the resident gave to: how much (net of corrections), how often, their share so far."""
    async with connection() as conn:
        rows = await conn.fetch(
            f"""WITH mine AS (SELECT id FROM ledger_account
                              WHERE holder = $1 AND unit = 'energy' AND purpose = 'available')
                SELECT {_COLUMNS}, m.given, m.times, m.last_at FROM (
                    SELECT q.account, sum(CASE WHEN t.credit_account = q.account THEN t.amount ELSE -t.amount END)
                               ::bigint AS given,
                           count(*) FILTER (WHERE t.kind = 'donation') AS times,
                           max(t.created_at) FILTER (WHERE t.kind = 'donation') AS last_at
                    FROM ledger_transfer t
                    JOIN donation_project q ON q.account IN (t.credit_account, t.debit_account)
                    WHERE (t.debit_account = (SELECT id FROM mine) OR t.credit_account = (SELECT id FROM mine))
                      AND t.kind IN ('donation', 'correction')
                    GROUP BY q.account) m
                JOIN donation_project p ON p.account = m.account ORDER BY m.last_at DESC""",  # noqa: S608
            holder_id,
        )
    return [{**_out(r), "share_ppm": r["given"] * PPM // r["raised"] if r["raised"] else 0} for r in rows]


async def certificates_of(holder_id: uuid.UUID) -> list[dict[str, Any]]:
    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT c.id, c.number, c.project, c.amount, c.share_ppm, c.donors, c.issued_at, p.title_zh, p.title_en,
                      p.outcome_zh, p.outcome_en, p.goal, p.raised_at_completion
               FROM donation_certificate c JOIN donation_project p ON p.id = c.project
               WHERE c.holder = $1 ORDER BY c.id DESC""",
            holder_id,
        )
    return [dict(r) for r in rows]


async def complete_if_met(project_id: int) -> int:
    """Complete a project whose donations reached its goal and issue one certificate per donor, shares by
    largest remainder so they sum to exactly 100%. Idempotent; returns how many certificates were issued."""
    async with connection() as conn:  # the cheap look first: most donations leave the goal unmet
        below = await conn.fetchval(
            f"""SELECT p.status <> 'open' OR raised < p.goal FROM (SELECT {_COLUMNS} FROM donation_project p) p
                WHERE p.id = $1""",  # noqa: S608 - constant columns
            project_id,
        )
    if below is None or below:
        return 0
    async with engine().transaction() as tx:
        conn = tx.connection
        project = await conn.fetchrow(
            "SELECT id, account, goal, status FROM donation_project WHERE id = $1 FOR UPDATE", project_id
        )
        if project is None or project["status"] != "open":
            return 0
        donors = await conn.fetch(
            f"SELECT * FROM ({_given('$1')}) g WHERE g.amount > 0 ORDER BY g.first",  # noqa: S608
            project["account"],
        )
        raised = sum(d["amount"] for d in donors)
        if raised < project["goal"]:
            return 0
        shares = largest_remainder(PPM, [d["amount"] for d in donors])
        await conn.execute(
            """UPDATE donation_project SET status = 'completed', completed_at = now(), raised_at_completion = $2
               WHERE id = $1""",
            project_id, raised,
        )
        await conn.execute(
            """INSERT INTO donation_certificate (number, project, holder, amount, share_ppm, donors, issued_at)
               SELECT 'CW-D' || $1::bigint || '-' || lpad(n::text, 6, '0'), $1::bigint, h, a, s, $5, now()
               FROM unnest($2::uuid[], $3::bigint[], $4::int[]) WITH ORDINALITY AS d(h, a, s, n)""",
            project_id, [d["holder"] for d in donors], [d["amount"] for d in donors], shares, len(donors),
        )
        await record_events([("donation.certified", {"project_id": project_id, "share_ppm": s, "amount": d["amount"]},
                              d["holder"]) for d, s in zip(donors, shares, strict=True)])
    return len(donors)


async def _on_donation(event: Event) -> None:
    await complete_if_met(int(event.payload["project_id"]))


HANDLERS: dict[str, list[EventHandler]] = {"donation.made": [_on_donation]}
