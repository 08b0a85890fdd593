"""What a resident reads about their energy: balances, lifetime totals, and every transfer with a sentence
saying what it was (in both languages, so the app shows whichever the resident picks)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from wallet.db import connection
from wallet.ledger.service import holder_accounts
from wallet.methodology.catalogue import behaviours

__all__ = ["PURPOSES", "describe", "iter_transfers", "summary", "transfers_page"]

PURPOSES = ("available", "balls", "held")

# kind → (zh, en); {what} is the behaviour, reward or project, {who} the friend who helped.
_SENTENCES: dict[str, tuple[str, str]] = {
    "ball.grown": ("{what}的能量球长出来了", "An energy ball grew from {what}"),
    "ball.collected": ("收取了{what}的能量", "Collected the energy from {what}"),
    "ball.helped": ("好友{who}帮你收取了{what}的能量",
                    "Your friend {who} collected the energy from {what} for you"),
    "ball.expired": ("{what}的能量球过期未收取", "The energy ball from {what} expired uncollected"),
    "ball.cancelled": ("{what}的减排被撤销，能量球作废",
                       "The reduction from {what} was reversed; its ball is cancelled"),
    "energy.clawback": ("{what}的减排被撤销，收回已收取的能量",
                        "The reduction from {what} was reversed; its collected energy is taken back"),
    "redemption.reserved": ("兑换{what}：能量已预留", "Redeeming {what}: energy reserved"),
    "redemption.posted": ("兑换{what}：已完成", "Redeemed {what}"),
    "redemption.voided": ("兑换{what}：已取消，能量退回", "Redemption of {what} cancelled; energy returned"),
    "donation": ("捐赠给{what}", "Donated to {what}"),
    "award": ("运营奖励：{what}", "Awarded by Carbon Wallet: {what}"),
    "correction": ("更正：{what}", "Correction: {what}"),
}


def describe(kind: str, what: tuple[str, str], who: str = "") -> dict[str, str]:
    zh, en = _SENTENCES.get(kind, ("{what}", "{what}"))
    return {"zh-CN": zh.format(what=what[0], who=who), "en": en.format(what=what[1], who=who)}


_TOTALS = """
WITH mine AS (SELECT unnest($1::bigint[]) AS id)
SELECT t.kind, sum(t.amount)::bigint AS amount, count(*) AS transfers
FROM ledger_transfer t WHERE t.id IN (
    SELECT x.id FROM mine CROSS JOIN LATERAL (
        SELECT id FROM ledger_transfer WHERE debit_account = mine.id
        UNION SELECT id FROM ledger_transfer WHERE credit_account = mine.id) x)
GROUP BY t.kind
"""

_RIPE = """
SELECT count(*) FILTER (WHERE ripens_at <= now()) AS ripe_balls,
       coalesce(sum(amount) FILTER (WHERE ripens_at <= now()), 0)::bigint AS ripe,
       count(*) FILTER (WHERE ripens_at > now()) AS growing_balls,
       coalesce(sum(amount) FILTER (WHERE ripens_at > now()), 0)::bigint AS growing,
       min(ripens_at) FILTER (WHERE ripens_at > now()) AS next_ripens_at,
       min(expires_at) FILTER (WHERE ripens_at <= now()) AS next_expires_at
FROM energy_ball WHERE holder = $1 AND state = 'growing' AND expires_at > now()
"""


async def summary(holder_id: uuid.UUID) -> dict[str, Any]:
    """Balances are the cached ones (checked against transfers by the ledger check); totals are sums."""
    async with connection() as conn:
        accounts = await holder_accounts(conn, holder_id)
        totals = {r["kind"]: r["amount"] for r in await conn.fetch(_TOTALS, accounts.ids)}
        ripe = await conn.fetchrow(_RIPE, holder_id)
    collected = totals.get("ball.collected", 0)
    return {
        **{p: accounts.balances[p] for p in PURPOSES},
        **dict(ripe),
        "lifetime": {
            "grown": totals.get("ball.grown", 0), "collected": collected, "expired": totals.get("ball.expired", 0),
            "cancelled": totals.get("ball.cancelled", 0), "clawed_back": totals.get("energy.clawback", 0),
            "redeemed": totals.get("redemption.posted", 0), "donated": totals.get("donation", 0),
            "awarded": totals.get("award", 0), "corrected": totals.get("correction", 0),
        },
    }


_PAGE = """
WITH mine AS (SELECT unnest($1::bigint[]) AS id),
picked AS (
    SELECT DISTINCT x.id FROM mine CROSS JOIN LATERAL (
        (SELECT id FROM ledger_transfer WHERE debit_account = mine.id AND ($2::bigint IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3)
        UNION ALL
        (SELECT id FROM ledger_transfer WHERE credit_account = mine.id AND ($2::bigint IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3)) x
)
SELECT t.id, t.kind, t.amount, t.debit_account, t.credit_account, t.ref, t.created_at, t.resolves,
       e.behaviour, r.title_zh AS reward_zh, r.title_en AS reward_en, p.title_zh AS project_zh,
       p.title_en AS project_en, h.nickname AS helper, t.ref->>'reason' AS reason
FROM ledger_transfer t JOIN (SELECT id FROM picked ORDER BY id DESC LIMIT $3) k ON k.id = t.id
LEFT JOIN book_entry e ON e.id = (t.ref->>'entry')::bigint
LEFT JOIN reward r ON r.id = (t.ref->>'reward')::bigint
LEFT JOIN donation_project p ON p.id = (t.ref->>'project')::bigint
LEFT JOIN holder h ON h.id = (t.ref->>'helper')::uuid
ORDER BY t.id DESC
"""


def _row(r: Any, purpose_of: dict[int, str]) -> dict[str, Any]:
    effect = dict.fromkeys(PURPOSES, 0)
    if r["debit_account"] in purpose_of:
        effect[purpose_of[r["debit_account"]]] -= r["amount"]
    if r["credit_account"] in purpose_of:
        effect[purpose_of[r["credit_account"]]] += r["amount"]
    if r["behaviour"]:
        known = behaviours().get(r["behaviour"])
        what = (known.name_zh, known.name_en) if known else (r["behaviour"], r["behaviour"])
    elif r["reward_zh"]:
        what = (r["reward_zh"], r["reward_en"])
    elif r["project_zh"] and r["kind"] != "correction":
        what = (r["project_zh"], r["project_en"])
    else:
        what = (r["reason"] or "", r["reason"] or "")
    kind = "ball.helped" if r["kind"] == "ball.collected" and r["helper"] is not None else r["kind"]
    return {"id": r["id"], "kind": r["kind"], "amount": r["amount"], "created_at": r["created_at"],
            "effect": effect, "description": describe(kind, what, r["helper"] or ""), "resolves": r["resolves"],
            "ref": r["ref"]}


async def transfers_page(holder_id: uuid.UUID, *, before: int | None, limit: int,
                         account: str | None = None) -> list[dict[str, Any]]:
    """Newest first, keyset on the transfer id; `account` narrows to one of available, balls, held."""
    async with connection() as conn:
        accounts = await holder_accounts(conn, holder_id)
        purpose_of = {accounts.available: "available", accounts.balls: "balls", accounts.held: "held"}
        ids = [i for i, p in purpose_of.items() if account is None or p == account]
        rows = await conn.fetch(_PAGE, ids, before, limit)
    return [_row(r, purpose_of) for r in rows]


async def iter_transfers(holder_id: uuid.UUID, *, page: int = 1000) -> AsyncIterator[dict[str, Any]]:
    """Every transfer, newest first, a page at a time (for the CSV export)."""
    before: int | None = None
    while True:
        rows = await transfers_page(holder_id, before=before, limit=page)
        for row in rows:
            yield row
        if len(rows) < page:
            return
        before = rows[-1]["id"]
