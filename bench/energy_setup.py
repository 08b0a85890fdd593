"""Setup and baselines for bench/energy.py: wallets with residents' access tokens, funded by an operator award;
the mall's two bench rewards; wallets with ripe energy balls grown through intake; the raw-SQL twin of one
redemption's row writes; and, for one in-process row, the intake statement without its energy CTEs.

Residents are linked to the bench partner in-process (`link_in_process` from bench/intake_setup.py) and get an
app session and access token through the functions login ends in (`start_session`, a token signed with the API's
own key), so thousands of wallets take seconds instead of minutes of argon2 and HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bench.intake_setup import Item, link_in_process

PRICE = 10  # energy per redemption: a funded wallet can redeem FUND / PRICE times
FUND = 1_000_000  # the largest single award (wallet.energy.awards.AWARD_MAX)
STOCK = 10_000_000  # the finite reward's stock: the largest an operator may set, never sold out in a run
BALLS = 10  # ripe balls per collect-all wallet
OPERATOR = uuid.uuid5(uuid.NAMESPACE_URL, "https://bench.example/operator")  # the awards' operator id (ref only)


@dataclass(frozen=True)
class Wallet:
    holder_id: uuid.UUID
    sub_account_id: uuid.UUID  # the bench partner's sub-account, for Sources that grow balls
    token: str  # a resident access token (/v1/me/…), "" when the wallet is only used in-process
    available: int  # ledger account ids, for the raw baseline's writes
    held: int


async def wallets(env: dict[str, str], partner: dict[str, Any], emails: Sequence[str], *, tokens: bool = True,
                  parallel: int = 8) -> list[Wallet]:
    """Residents linked to the bench partner, each (with `tokens`) with a live app session and an access token
    valid for six hours, and their `available` and `held` ledger account ids."""
    from api.auth.sessions import start_session
    from api.auth.tokens import AccessTokens
    from api.settings import load_settings
    from wallet.db import connection

    linked = await link_in_process(env, partner, emails, tokens=False, parallel=parallel)
    settings = load_settings(env)
    signer = AccessTokens(settings.jwt_private_key_pem, issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                          ttl_s=6 * 3600)
    gate = asyncio.Semaphore(parallel)

    async def token(holder_id: uuid.UUID) -> str:
        if not tokens:
            return ""
        async with gate:
            session = await start_session(holder_id, device_name="bench", user_agent="cw-bench", ip="127.0.0.1",
                                          refresh_ttl_s=settings.refresh_token_ttl_s)
        return signer.issue(holder_id, session.session_id)[0]

    issued = await asyncio.gather(*(token(r.holder_id) for r in linked))
    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT holder, purpose, id FROM ledger_account WHERE holder = ANY($1::uuid[]) AND unit = 'energy'
               AND purpose IN ('available', 'held')""", [r.holder_id for r in linked],
        )
    ids = {(r["holder"], r["purpose"]): r["id"] for r in rows}
    return [Wallet(r.holder_id, r.sub_account_id, t, ids[(r.holder_id, "available")], ids[(r.holder_id, "held")])
            for r, t in zip(linked, issued, strict=True)]


async def fund(holders: Sequence[Wallet], amount: int = FUND, parallel: int = 8) -> None:
    """The operator award (service level, idempotent on its key): energy from issuance straight to `available`."""
    from wallet.energy.awards import award

    gate = asyncio.Semaphore(parallel)

    async def one(w: Wallet) -> None:
        async with gate:
            done = await award(w.holder_id, amount, reason="bench: energy to spend", operator_id=OPERATOR,
                               key="bench-fund")
        if done["available"] < amount:
            raise RuntimeError(f"funding {w.holder_id} left {done['available']} available")

    await asyncio.gather(*(one(w) for w in holders))


async def bench_rewards(stamp: str) -> tuple[int, int]:
    """Two rewards an operator would create, fulfilled by a voucher code we issue (no merchant call): one with
    unlimited stock, one with a finite stock every redemption decrements (the same reward row each time)."""
    from wallet.mall.catalogue import create_reward

    base = {"title_zh": "基准测试咖啡", "title_en": "Bench coffee", "merchant_zh": "基准咖啡",
            "merchant_en": "Bench Coffee", "category": "coffee", "price": PRICE, "fulfilment": "code"}
    unlimited = await create_reward({**base, "code": f"bench-unlimited-{stamp}", "stock": None})
    stocked = await create_reward({**base, "code": f"bench-stocked-{stamp}", "stock": STOCK})
    return unlimited["id"], stocked["id"]


def energetic(pool: Sequence[Item]) -> list[Item]:
    """The items of the intake pool whose credit carries energy (a tiny quantity can round down to none)."""
    from wallet.methodology.catalogue import current_version, energy_for, reduction_mg

    def energy(it: Item) -> int:
        version = current_version(it.behaviour)
        return energy_for(version, reduction_mg(version, it.quantity))

    return [it for it in pool if energy(it) > 0]


async def grow_ripe_balls(srcs: Sequence[Any], items: Sequence[Item], tag: str, parallel: int = 8) -> None:
    """`BALLS` credited activities per source through `record_reports` (the product path: each entry grows its
    ball in the same statement), ripe at once: this process's energy policy gets ripen_s=0 meanwhile (balls
    take it from the process that writes them). Checks that every wallet has exactly `BALLS` ripe balls."""
    from wallet.db import connection
    from wallet.energy.policy import configure, policy
    from wallet.intake.judge import record_reports
    from wallet.intake.reports import Report

    saved, gate = policy(), asyncio.Semaphore(parallel)

    async def one(i: int, src: Any) -> None:
        picked = [items[(i * BALLS + j) % len(items)] for j in range(BALLS)]
        reports = [Report(f"{tag}-{i:06d}-{j}", it.behaviour, it.quantity, it.occurred_at)
                   for j, it in enumerate(picked)]
        async with gate:
            receipts = await record_reports(src, reports)
        if any(r.verdict != "credited" for r in receipts):
            raise RuntimeError(f"growing balls: {[r.code for r in receipts if r.verdict != 'credited']}")

    configure(replace(saved, ripen_s=0))
    try:
        await asyncio.gather(*(one(i, s) for i, s in enumerate(srcs)))
    finally:
        configure(saved)
    async with connection() as conn:
        counts = await conn.fetch(
            """SELECT holder, count(*) AS n FROM energy_ball WHERE holder = ANY($1::uuid[]) AND state = 'growing'
               AND ripens_at <= now() AND expires_at > now() GROUP BY holder""", [s.holder_id for s in srcs],
        )
    if len(counts) != len(srcs) or any(r["n"] != BALLS for r in counts):
        raise RuntimeError("some collect-all wallets do not have exactly the ripe balls they were grown")


# -- raw PostgreSQL: one redemption's row writes ---------------------------------------------------------------

_RESERVE = """
WITH t AS (
    INSERT INTO ledger_transfer (key, unit, debit_account, credit_account, amount, kind, ref, created_at)
    VALUES ($1, 'energy', $2, $3, $4, 'redemption.reserved', jsonb_build_object('reward', $5::bigint), now())
    RETURNING id),
 moved AS (
    UPDATE ledger_account a SET balance = a.balance + m.delta
    FROM (VALUES ($2::bigint, -$4::bigint), ($3::bigint, $4::bigint)) AS m(id, delta)
    WHERE a.id = m.id AND a.balance + m.delta >= 0 RETURNING a.id),{stock}
 d AS (
    INSERT INTO redemption (holder, reward, price, state, idempotency_key, request_hash, local_day, reserve_transfer,
                            attempts, created_at, next_attempt_at)
    SELECT $6, $5, $4, 'pending', $7, $8, current_date, t.id, 0, now(), now() + interval '60 seconds' FROM t
    RETURNING id, reserve_transfer)
SELECT d.id, d.reserve_transfer, (SELECT count(*) FROM moved) AS moved, {stocked} AS stocked FROM d
"""
_STOCK = """
 stock AS (UPDATE reward SET stock = stock - 1 WHERE id = $5 AND stock > 0 RETURNING 1),"""
_POST = """
WITH t AS (
    INSERT INTO ledger_transfer (key, unit, debit_account, credit_account, amount, kind, resolves, ref, created_at)
    VALUES ($1, 'energy', $2, $3, $4, 'redemption.posted', $5,
            jsonb_build_object('redemption', $6::bigint, 'reward', $7::bigint), now())
    RETURNING id),
 moved AS (UPDATE ledger_account SET balance = balance - $4 WHERE id = $2 AND balance >= $4 RETURNING 1),
 d AS (UPDATE redemption SET state = 'fulfilled', voucher_code = $8, voucher_expires_at = now() + interval '30 days',
                             resolve_transfer = (SELECT id FROM t), resolved_at = now()
       WHERE id = $6 AND state = 'pending' RETURNING 1),
 o AS (INSERT INTO outbox_event (event_id, name, holder_id, payload, created_at, dispatch_count)
       VALUES ($9, 'redemption.fulfilled', $10,
               jsonb_build_object('redemption_id', $6::bigint, 'reward_id', $7::bigint, 'price', $4::bigint), now(), 0)
       RETURNING 1)
SELECT (SELECT count(*) FROM moved) + (SELECT count(*) FROM d) + (SELECT count(*) FROM o) AS written
"""
_RESERVES = {stocked: _RESERVE.format(stock=_STOCK if stocked else "",
                                      stocked="(SELECT count(*) FROM stock)" if stocked else "0")
             for stocked in (False, True)}
RAW_ROWS = {False: 8, True: 9}  # rows written per redemption: 2 transfers, 3 balances, redemption ×2, event, (stock)


async def raw_redeem(w: Wallet, mall: int, reward_id: int, stocked: bool, key: str) -> str | None:
    """The rows a fulfilled redemption writes, as raw SQL on one pooled connection, in the two transactions the
    product commits (reserve, then post) but one statement each: the reserving transfer with its guarded balance
    updates (and, `stocked`, the reward row's stock), the pending redemption; then the posting transfer resolving
    it, `held` down, the redemption fulfilled and its outbox event. No reads, locks, checks or Python around it."""
    from wallet.db import connection

    async with connection() as conn:
        row = await conn.fetchrow(
            _RESERVES[stocked],
            f"redemption:{w.holder_id}:{key}:reserve", w.available, w.held, PRICE, reward_id, w.holder_id, key,
            hashlib.sha256(f"redeem:v1:{reward_id}".encode()).digest(),
        )
        if row is None or row["moved"] != 2 or row["stocked"] != int(stocked):
            return "raw reserve wrote too little"
        written = await conn.fetchval(
            _POST, f"redemption:{row['id']}:posted", w.held, mall, PRICE, row["reserve_transfer"], row["id"],
            reward_id, f"CW-BENCH-{row['id']}", uuid.uuid4(), w.holder_id,
        )
    return None if written == 3 else "raw post wrote too little"


# -- intake without its energy CTEs (one in-process row) --------------------------------------------------------


def write_without_energy() -> str:
    """wallet.intake.judge's one write statement with the CTEs `grow_sql` appends replaced by one that only names
    their two parameters (so the arguments still fit): activities, entries, chain head and outbox events as now,
    no balls, ledger transfers or `balls` balance. The private names it needs are looked up loudly."""
    from wallet.energy.balls import grow_sql
    from wallet.intake import judge

    statement, first = getattr(judge, "_WRITE", None), getattr(judge, "_V", None)
    if not isinstance(statement, str) or not isinstance(first, int):
        raise RuntimeError("wallet.intake.judge has no _WRITE/_V any more: update bench/energy_setup.py")
    grow = grow_sql("e", first + 4)
    if statement.count(grow) != 1:
        raise RuntimeError("judge._WRITE no longer ends in grow_sql('e', _V + 4): update bench/energy_setup.py")
    return statement.replace(grow, f"\n     energy_off AS (SELECT ${first + 4}::interval, ${first + 5}::interval)")


@contextlib.contextmanager
def energy_off() -> Iterator[None]:
    """In this process only (the API is untouched), `record_reports` writes with `write_without_energy()`."""
    from wallet.intake import judge

    saved, judge._WRITE = judge._WRITE, write_without_energy()  # type: ignore[attr-defined]
    try:
        yield
    finally:
        judge._WRITE = saved  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Statements:
    """pg_stat_statements figures of a group of statements over a measured window."""

    calls: int = 0
    ms: float = 0.0  # planning + executing, wall time (inflated when a backend waits for a core)
    wal_bytes: float = 0.0  # WAL the statements wrote: what they changed, however busy the machine was

    def per_call(self, name: str) -> float:
        return getattr(self, name) / self.calls if self.calls else float("nan")


async def write_times() -> dict[str, Statements]:
    """From pg_stat_statements since its last reset: intake's write statement with its energy CTEs, without them,
    and every statement together ("all")."""
    from wallet.db import connection

    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT CASE WHEN query NOT LIKE '%INSERT INTO book_entry%' THEN 'other'
                           WHEN query LIKE '%INSERT INTO energy_ball%' THEN 'write with energy'
                           ELSE 'write without energy' END AS part,
                      sum(calls)::bigint AS calls, sum(total_exec_time + total_plan_time) AS ms,
                      sum(wal_bytes)::float8 AS wal
               FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%' GROUP BY 1""")
    out = {r["part"]: Statements(r["calls"], r["ms"], r["wal"]) for r in rows}
    out["all"] = Statements(sum(v.calls for v in out.values()), sum(v.ms for v in out.values()),
                            sum(v.wal_bytes for v in out.values()))
    return out


async def entries_and_balls(holders: Sequence[uuid.UUID]) -> tuple[int, int, int, int]:
    """Of these holders' credit entries: how many, how many carry energy, how many balls grew, their energy."""
    from wallet.db import connection

    async with connection() as conn:
        row = await conn.fetchrow(
            """SELECT count(*) AS entries, count(*) FILTER (WHERE e.energy > 0) AS energetic, count(b.id) AS balls,
                      coalesce(sum(b.amount), 0)::bigint AS energy
               FROM book_entry e LEFT JOIN energy_ball b ON b.entry = e.id
               WHERE e.holder = ANY($1::uuid[]) AND e.kind = 'credit'""", list(holders),
        )
    return row["entries"], row["energetic"], row["balls"], row["energy"]
