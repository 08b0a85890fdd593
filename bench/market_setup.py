"""Seeding bench/market.py's book in bulk, in the shape intake writes it (see bench/market.py's docstring): holders
with their partner sub-accounts and opt-in consent, credited activities and chained book entries by COPY, the book
heads, and a growing energy ball per credit with its ledger transfer."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import time
import uuid
from datetime import datetime, timedelta
from datetime import time as clock_time
from typing import Any

from bench import market_report as report
from bench.intake_setup import SCOPES, ZONE
from bench.load import LoadSpec
from bench.market_report import BEHAVIOUR, SETTLE_DAYS, stepping

CHUNK = 50_000  # entries per COPY transaction while seeding
BALL_CHUNK = 250_000  # entries per energy-ball INSERT … SELECT
SAMPLE_CHAINS = 20  # seeded holders whose chains are replayed by the product's verifier


# -- seeding -------------------------------------------------------------------------------------------------------

ACTIVITY_COLUMNS = ("id", "holder", "sub_account", "partner", "external_id", "behaviour", "quantity", "occurred_at",
                    "details", "request_digest", "received_via", "received_at", "verdict", "reason_code",
                    "reason_params", "behaviour_version", "methodology_release", "local_day", "credited_quantity",
                    "credited_mg", "judged_at")


async def _seed_holders(partner_id: uuid.UUID, holders: list[uuid.UUID], subs: list[uuid.UUID], stamp: str,
                        since: datetime) -> None:
    from wallet.db import engine

    async with engine().transaction() as tx:
        conn = tx.connection
        await conn.copy_records_to_table("holder", records=[
            (h, "active", f"bench-mk-{stamp}-{i}@example.com", "bench: never logs in", f"bench-mk-{i}", str(ZONE),
             "zh-CN", False, since, since, since) for i, h in enumerate(holders)], columns=[
            "id", "status", "email", "password_hash", "nickname", "time_zone", "language",
            "show_on_public_leaderboards", "created_at", "updated_at", "password_changed_at"])
        await conn.copy_records_to_table("sub_account", records=[
            (s, h, partner_id, "partner", "active", SCOPES, since) for h, s in zip(holders, subs, strict=True)],
            columns=["id", "holder", "partner", "kind", "status", "scopes", "linked_at"])
        await conn.copy_records_to_table("market_consent", records=[(h, True, since) for h in holders],
                                         columns=["holder", "opted_in", "changed_at"])


async def seed_book(spec: LoadSpec, partner_id: uuid.UUID, args: argparse.Namespace, stamp: str) -> report.Book:
    """The book described in the module docstring; returns what it wrote and how long each step took."""
    from wallet.book.chain import EntryFields, canonical_bytes, chain_hash, genesis
    from wallet.book.service import ENTRY_COLUMNS, verify_holder
    from wallet.db import connection, engine
    from wallet.energy.balls import grow_params
    from wallet.methodology.catalogue import CURRENT_RELEASE, behaviours, current_version, energy_for, reduction_mg

    rng, version, steps = random.Random(9), current_version(BEHAVIOUR), []

    def done(step: report.Step) -> None:
        steps.append(step)
        print(f"  {step.name}: {step.seconds:.1f} s", flush=True)

    category = behaviours()[BEHAVIOUR].category
    last_day = datetime.now(ZONE).date() - timedelta(days=SETTLE_DAYS + 1)
    first_day = last_day - timedelta(days=args.days - 1)
    since = datetime.combine(first_day - timedelta(days=1), clock_time(9), ZONE)
    holders = [uuid.uuid4() for _ in range(args.holders)]
    subs = [uuid.uuid4() for _ in range(args.holders)]
    with stepping(spec, "holders, sub-accounts, market consent (COPY; 3 energy accounts each by trigger)",
                  args.holders) as step:
        await _seed_holders(partner_id, holders, subs, stamp, since)
    done(step)

    on_day: list[list[int]] = [[] for _ in range(args.days)]
    for i in range(args.holders):
        for d in rng.sample(range(args.days), args.per_holder):
            on_day[d].append(i)
    seq, total = [0] * args.holders, [0] * args.holders
    last, last_at = [genesis(h) for h in holders], [since] * args.holders
    entry_columns = ["holder", *(c for c in ENTRY_COLUMNS if c != "reverses")]
    written = 0

    def build(days: range) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], float]:
        """These days' activities and entries in recording order, each entry chained onto its holder's last."""
        nonlocal written
        started, acts, entries = time.perf_counter(), [], []
        for d in days:
            day = first_day + timedelta(days=d)
            opens = datetime.combine(day, clock_time(8), ZONE)
            today = []
            for i in on_day[d]:
                occurred = opens + timedelta(seconds=rng.randrange(13 * 3600), microseconds=rng.randrange(10**6))
                today.append((occurred + timedelta(seconds=rng.randrange(30, 900)), occurred, i))
            today.sort()
            for recorded, occurred, i in today:
                quantity = rng.randrange(200, 3001)
                mg = reduction_mg(version, quantity)
                energy, activity, external = energy_for(version, mg), uuid.uuid4(), f"mk-{stamp}-{written}"
                seq[i] += 1
                fields = EntryFields(
                    kind="credit", activity_id=activity, external_id=external, reverses=None,
                    sub_account_id=subs[i], partner_id=partner_id, trust_tier="verified", behaviour=BEHAVIOUR,
                    behaviour_version=version.version, methodology_release=CURRENT_RELEASE, category=category,
                    quantity=quantity, reduction_mg=mg, energy=energy, occurred_at=occurred, local_day=day,
                    holder_id=holders[i], seq=seq[i], recorded_at=recorded)
                canonical = canonical_bytes(fields)
                digest = chain_hash(last[i], canonical)
                acts.append((activity, holders[i], subs[i], partner_id, external, BEHAVIOUR, quantity, occurred, "{}",
                             hashlib.sha256(external.encode()).hexdigest(), "token", recorded, "credited", "credited",
                             "{}", version.version, CURRENT_RELEASE, day, quantity, mg, recorded))
                entries.append((holders[i], seq[i], "credit", activity, subs[i], partner_id, "verified", BEHAVIOUR,
                                version.version, CURRENT_RELEASE, category, quantity, mg, energy, occurred, day,
                                recorded, last[i], digest, canonical, ""))
                last[i], last_at[i], total[i] = digest, recorded, total[i] + mg
                written += 1
        return acts, entries, time.perf_counter() - started

    async def copy(acts: list[tuple[Any, ...]], entries: list[tuple[Any, ...]]) -> float:
        started = time.perf_counter()
        async with engine().transaction() as tx:
            await tx.connection.copy_records_to_table("activity", records=acts, columns=ACTIVITY_COLUMNS)
            await tx.connection.copy_records_to_table("book_entry", records=entries, columns=entry_columns)
        return time.perf_counter() - started

    per_chunk = max(1, CHUNK * args.days // (args.holders * args.per_holder))
    gen_s, copy_s, pending = 0.0, 0.0, None
    with stepping(spec, "activities + chained book entries (Python chain hashing in a thread, overlapping COPY)",
                  args.holders * args.per_holder) as step:
        for lo in range(0, args.days, per_chunk):  # the next chunk is built while the previous one is copied
            acts, entries, spent = await asyncio.to_thread(build, range(lo, min(args.days, lo + per_chunk)))
            gen_s += spent
            if pending is not None:
                copy_s += await pending
            pending = asyncio.create_task(copy(acts, entries))
            print(f"    {written:>9,} entries built: Python {gen_s:.0f} s, COPY {copy_s:.0f} s", flush=True)
        if pending is not None:
            copy_s += await pending
        async with engine().transaction() as tx:
            await tx.connection.copy_records_to_table(
                "book_head", records=[(h, seq[i], last[i], total[i], last_at[i]) for i, h in enumerate(holders)],
                columns=["holder_id", "seq", "head_hash", "total_mg", "updated_at"])
    step.name += f" — Python {gen_s:.0f} s, COPY {copy_s:.0f} s, overlapped"
    done(step)

    ripen, window = grow_params()
    with stepping(spec, "energy balls + `ball:<id>:grown` transfers + `balls` balances (INSERT … SELECT)",
                  written) as step:
        async with connection() as conn:
            lo, hi = await conn.fetchrow("SELECT min(id), max(id) FROM book_entry")
        for start in range(lo, hi + 1, BALL_CHUNK):
            async with engine().transaction() as tx:
                await tx.connection.execute(
                    """WITH balls AS (
                         INSERT INTO energy_ball (holder, entry, amount, grown_at, ripens_at, expires_at, state)
                         SELECT holder, id, energy, recorded_at, recorded_at + $3, recorded_at + $3 + $4, 'growing'
                         FROM book_entry WHERE id BETWEEN $1 AND $2 AND kind = 'credit' AND energy > 0 ORDER BY id
                         RETURNING id, holder, entry, amount, grown_at)
                       INSERT INTO ledger_transfer (key, unit, debit_account, credit_account, amount, kind, ref,
                                                    created_at)
                       SELECT 'ball:' || b.id || ':grown', 'energy',
                              (SELECT id FROM ledger_account WHERE code = 'energy:issuance'), a.id, b.amount,
                              'ball.grown', jsonb_build_object('ball', b.id, 'entry', b.entry), b.grown_at
                       FROM balls b JOIN ledger_account a ON a.holder = b.holder AND a.unit = 'energy'
                                                         AND a.purpose = 'balls'
                       ORDER BY b.id""", start, min(hi, start + BALL_CHUNK - 1), ripen, window)
        async with engine().transaction() as tx:
            await tx.connection.execute(
                """UPDATE ledger_account a SET balance = a.balance + s.total
                   FROM (SELECT holder, sum(amount)::bigint AS total FROM energy_ball GROUP BY holder) s
                   WHERE a.holder = s.holder AND a.unit = 'energy' AND a.purpose = 'balls'""")
    done(step)
    with stepping(spec, "VACUUM ANALYZE") as step:
        async with connection() as conn:
            await conn.execute("VACUUM ANALYZE")
    done(step)

    sample = random.Random(5).sample(holders, min(SAMPLE_CHAINS, len(holders)))
    checked = [await verify_holder(h) for h in sample]
    good = sum(v.ok for v in checked)
    verified = (f"{good} of {len(checked)} sampled holders' chains replay with the product's verifier "
                f"(`verify_holder`: hashes, links, head, credited activities)"
                + ("" if good == len(checked) else f"; first failure: {next(v.reason for v in checked if not v.ok)}"))
    async with connection() as conn:
        sizes = {t: await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", t)
                 for t in ("book_entry", "activity", "energy_ball", "ledger_transfer", "book_head", "market_consent")}
    return report.Book(args.holders, written, sum(total), first_day, last_day, steps, verified, sizes)
