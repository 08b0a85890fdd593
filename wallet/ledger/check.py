"""Reconciliation (LEDGER L11): what must hold between transfers, cached balances, energy balls, the book,
redemptions, donation projects, and the carbon market's lots, sales and money ledger (`wallet/market/check.py`).
Run by `carbon-wallet ledger check`, the operators' API, and after every
concurrency and fault test. Each check is one query that lists offenders (at most a few, as examples)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wallet.db import connection
from wallet.market.check import MARKET_CHECKS, recomputed_manifests, recomputed_splits

__all__ = ["Finding", "Report", "check_ledger"]


@dataclass(frozen=True, slots=True)
class Finding:
    name: str
    ok: bool
    offenders: int
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Report:
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)


_CHECKS: dict[str, str] = {
    # Every unit's postings sum to zero (true by construction; checked so a bypass would show).
    "postings-sum-to-zero": """
        SELECT unit, sum(amount)::bigint AS total FROM ledger_posting GROUP BY unit HAVING sum(amount) <> 0""",
    # A cached balance is exactly the sum of the account's postings.
    "cached-balance-equals-postings": """
        SELECT a.id, a.code, a.balance, coalesce(p.total, 0)::bigint AS postings FROM ledger_account a
        LEFT JOIN (SELECT account, sum(amount) AS total FROM ledger_posting GROUP BY account) p ON p.account = a.id
        WHERE a.balance IS NOT NULL AND a.balance <> coalesce(p.total, 0)""",
    # No holder account below zero (the CHECK makes this impossible; a disabled constraint would show here).
    "no-balance-below-floor": "SELECT id, code, balance FROM ledger_account WHERE balance < 0",
    # A transfer's two accounts are of its unit (the composite keys enforce it).
    "one-unit-per-transfer": """
        SELECT t.id FROM ledger_transfer t JOIN ledger_account d ON d.id = t.debit_account
        JOIN ledger_account c ON c.id = t.credit_account WHERE d.unit <> t.unit OR c.unit <> t.unit""",
    # A pending (reserving) transfer is resolved at most once, by a transfer of the same amount.
    "pending-resolved-at-most-once": """
        SELECT r.resolves, count(*) AS times, min(p.amount) AS reserved, max(r.amount) AS resolved
        FROM ledger_transfer r JOIN ledger_transfer p ON p.id = r.resolves
        GROUP BY r.resolves HAVING count(*) > 1 OR min(p.amount) <> max(r.amount)""",
    # A redemption's state agrees with its transfers: pending = unresolved, fulfilled = posted, voided = voided.
    "redemption-matches-transfers": """
        SELECT d.id, d.state, t.kind FROM redemption d
        LEFT JOIN ledger_transfer t ON t.resolves = d.reserve_transfer
        WHERE (d.state = 'pending' AND t.id IS NOT NULL)
           OR (d.state = 'fulfilled' AND (t.kind IS DISTINCT FROM 'redemption.posted' OR t.id <> d.resolve_transfer))
           OR (d.state = 'voided' AND (t.kind IS DISTINCT FROM 'redemption.voided' OR t.id <> d.resolve_transfer))""",
    # What sits in a holder's `held` account is exactly their pending redemptions.
    "held-equals-pending-redemptions": """
        SELECT a.holder, a.balance, coalesce(p.total, 0)::bigint AS pending FROM ledger_account a
        LEFT JOIN (SELECT holder, sum(price) AS total FROM redemption WHERE state = 'pending' GROUP BY holder) p
               ON p.holder = a.holder
        WHERE a.purpose = 'held' AND a.balance <> coalesce(p.total, 0)""",
    # What sits in a holder's `balls` account is exactly their growing balls.
    "balls-account-equals-growing-balls": """
        SELECT a.holder, a.balance, coalesce(b.total, 0)::bigint AS growing FROM ledger_account a
        LEFT JOIN (SELECT holder, sum(amount) AS total FROM energy_ball WHERE state = 'growing' GROUP BY holder) b
               ON b.holder = a.holder
        WHERE a.purpose = 'balls' AND a.balance <> coalesce(b.total, 0)""",
    # Every credit with energy grew exactly one ball of that energy, and each ball's life is in the ledger.
    "every-credit-grew-its-ball": """
        SELECT e.id AS entry, e.energy, b.amount FROM book_entry e LEFT JOIN energy_ball b ON b.entry = e.id
        WHERE e.kind = 'credit' AND e.energy > 0 AND (b.id IS NULL OR b.amount <> e.energy)""",
    "every-ball-in-the-ledger": """
        SELECT b.id, b.state FROM energy_ball b
        WHERE NOT EXISTS (SELECT 1 FROM ledger_transfer t WHERE t.key = 'ball:' || b.id || ':grown'
                          AND t.amount = b.amount)
           OR (b.state = 'collected' AND NOT EXISTS (
                   SELECT 1 FROM ledger_transfer t
                   WHERE t.key = 'ball:' || b.id || ':collected' AND t.amount = b.amount))
           OR (b.state = 'expired' AND NOT EXISTS (
                   SELECT 1 FROM ledger_transfer t WHERE t.key = 'ball:' || b.id || ':expired' AND t.amount = b.amount))
           OR (b.state = 'cancelled' AND NOT EXISTS (
                   SELECT 1 FROM ledger_transfer t
                   WHERE t.key = 'ball:' || b.id || ':cancelled' AND t.amount = b.amount))""",
    # A completed project's certificates cover what it raised, and shares sum to exactly one million ppm.
    "certificates-cover-completed-projects": """
        SELECT p.id, p.raised_at_completion, sum(c.amount)::bigint AS certified, sum(c.share_ppm)::bigint AS ppm
        FROM donation_project p LEFT JOIN donation_certificate c ON c.project = p.id WHERE p.status = 'completed'
        GROUP BY p.id HAVING sum(c.amount) IS DISTINCT FROM p.raised_at_completion OR sum(c.share_ppm) <> 1000000""",
}


async def check_ledger(*, examples: int = 5) -> Report:
    findings: list[Finding] = []
    async with connection() as conn:
        for name, sql in {**_CHECKS, **MARKET_CHECKS}.items():
            rows = await conn.fetch(f"SELECT * FROM ({sql}) AS offenders LIMIT {examples + 1}")  # noqa: S608
            count = len(rows) if len(rows) <= examples else await conn.fetchval(
                f"SELECT count(*) FROM ({sql}) AS offenders"  # noqa: S608 - constant SQL
            )
            findings.append(Finding(name, not rows, count,
                                    [{k: str(v) if v is not None else None for k, v in dict(r).items()}
                                     for r in rows[:examples]]))
        for name, recompute in (("lot-manifest-hash-recomputes", recomputed_manifests),
                                ("settlement-split-recomputes", recomputed_splits)):
            found = await recompute(conn)
            findings.append(Finding(name, not found, len(found), [{k: str(v) for k, v in f.items()}
                                                                  for f in found[:examples]]))
    return Report(findings)
