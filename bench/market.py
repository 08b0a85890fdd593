"""`python -m bench.market`: issue 9's benchmark, the carbon market on a book of a million entries: the eligible pool's
summary, pooling lots of 10,000, 100,000 and 250,000 entries (the largest a lot may be) with their manifests hashed,
exporting a manifest (in-process and over HTTP through one API process), recording and settling the sale of the
100,000-entry lot to its tens of thousands of contributors, and `check_ledger()` with the lots present. Each write is
measured against raw INSERTs of as many rows in the same run; each timed call is split into its SQL round trips and
Python parts by timing wrappers patched in for its duration.

The book is seeded in bulk rather than through `record_reports`, in the shape intake writes it:
holders (their energy accounts made by the holder trigger), a partner sub-account each, opt-in `market_consent`,
then day by day in recording order a credited `activity` and a `book_entry` per report, chained with the product's
own `EntryFields` / `canonical_bytes` / `chain_hash` (so the chains verify), written with COPY; the `book_head` of
every holder; a growing energy ball per credit with its `ball:<id>:grown` transfer and the `balls` balances, by
INSERT … SELECT. Not written: outbox events, OAuth grants and consents, self sub-accounts. Every entry is a verified
`clothes_recycling@1` credit of 200–3,000 g (within the daily and monthly caps), occurred over `--days` local days that
all end before the programme's `settle_days`, so the whole book is eligible.

Starts the stores and one API process like bench/run.py; the records, the timing of each call's parts, the tables and
where the section goes in bench/RESULTS.md are in bench/market_report.py, the seeding in bench/market_setup.py. About
8 to 15 minutes on the 2-core machine, most of it seeding. Everything started here is stopped here, also on Ctrl-C,
SIGTERM or error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import math
import os
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import httpx

from bench import market_report as report
from bench.energy import close_pool_in_time
from bench.intake import code_state
from bench.intake_setup import ZONE, call, create_partner
from bench.load import LoadSpec
from bench.market_report import BEHAVIOUR, BENEFIT_PPM, PRICE_PER_TONNE_FEN, SETTLE_DAYS, stepping, timed_call
from bench.market_setup import seed_book
from bench.run import PASSWORD, RESULTS, ROOT, Server, machine, pid_file, prepare, session


async def _eligible_target(programme: Any, n: int) -> tuple[int, int]:
    """The exact grams of the next `n` entries in selection order (the product's `_NEXT` from the start of the
    period), so a lot of that target holds exactly `n`."""
    from wallet.db import connection
    from wallet.market import lots

    start, end = lots._window(programme, None, None)
    async with connection() as conn:
        row = await conn.fetchrow(
            f"SELECT coalesce(sum(reduction_mg), 0)::bigint AS mg, count(*) AS n FROM ({lots._NEXT}) x",
            *lots._args(programme, start, end), start, 0, n)
    return row["mg"], row["n"]


def _literal(value: Any) -> str:
    if isinstance(value, list):
        return f"ARRAY[{', '.join(map(_literal, value))}]::text[]"
    return "'" + str(value).replace("'", "''") + "'" if isinstance(value, str | date) else str(int(value))


async def explain(sql: str, *params: Any, generic: bool = False) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of a read, run for real: planned for these values (a custom plan), or the generic
    plan of the statement prepared (EXECUTE with the values as literals; DEALLOCATEd after)."""
    from wallet.db import connection

    async with connection() as conn, conn.transaction():
        if not generic:
            rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, SETTINGS) {sql}", *params)
        else:
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            await conn.execute(f"PREPARE bench_generic AS {sql}")
            rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, SETTINGS) EXECUTE bench_generic("
                                    f"{', '.join(map(_literal, params))})")
            await conn.execute("DEALLOCATE bench_generic")
    return "\n".join(r[0] for r in rows)


async def plan_counts(sql: str) -> str:
    """How often each pooled connection that prepared `sql` planned it custom and generic (pg_prepared_statements)."""
    from wallet.db import engine

    pool = engine().pool
    held = [await pool.acquire() for _ in range(pool.get_size())]
    try:
        counts = [await c.fetchrow("SELECT sum(custom_plans) AS custom, sum(generic_plans) AS generic "
                                   "FROM pg_prepared_statements WHERE statement = $1", sql) for c in held]
    finally:
        for c in held:
            await pool.release(c)
    return ", ".join(f"{r['custom']} custom and {r['generic']} generic" for r in counts if r["custom"] is not None)


async def scratch_tables() -> None:
    """Copies of the tables the writes go to (columns, defaults, CHECKs, indexes; no FKs or triggers), their ids from
    sequences of their own, for the raw baselines."""
    from wallet.db import connection

    async with connection() as conn:
        for name, like in (("bench_market_item", "market_lot_item"), ("bench_market_account", "ledger_account"),
                           ("bench_market_transfer", "ledger_transfer"), ("bench_market_payout", "market_payout")):
            await conn.execute(f"CREATE TABLE {name} (LIKE {like} INCLUDING ALL)")
            await conn.execute(f"CREATE SEQUENCE {name}_seq")
            await conn.execute(f"ALTER TABLE {name} ALTER COLUMN id SET DEFAULT nextval('{name}_seq')")


async def raw_items(spec: LoadSpec, lot: int, first: int, n: int) -> report.Step:
    """The baseline of a lot: INSERT … SELECT of the same entries' rows (an id range) into the scratch item table."""
    from wallet.db import engine

    with stepping(spec, f"raw INSERT … SELECT of {n:,} item rows", n) as step:
        async with engine().transaction() as tx:
            status = await tx.connection.execute(
                """INSERT INTO bench_market_item (lot, entry, holder, reduction_mg, released)
                   SELECT $1, id, holder, reduction_mg, false FROM book_entry WHERE id >= $2 AND id < $3""",
                lot, first, first + n)
    if int(status.split()[-1]) != n:
        raise RuntimeError(f"the raw baseline inserted {status}, not {n:,} rows")
    return step


async def make_lots(spec: LoadSpec, operator: uuid.UUID, programme: Any, args: argparse.Namespace,
                    plans: dict[str, str]) -> list[report.LotRow]:
    from wallet.db import connection
    from wallet.market import lots

    rows, start, end = [], *lots._window(programme, None, None)
    async with connection() as conn:
        first_id = await conn.fetchval("SELECT min(id) FROM book_entry")
    pooled = 0
    for n, size in enumerate(args.lots):
        target, got = await _eligible_target(programme, size)
        if got != size:
            raise RuntimeError(f"only {got:,} eligible entries left for a lot of {size:,}")
        if size == args.sale_lot:
            for generic in (False, True):
                plans[report.next_plan_title(generic, size, pooled)] = await explain(
                    lots._NEXT, *lots._args(programme, start, end), start, 0, lots.LAST_BATCH, generic=generic)
        step, (lot, _) = await timed_call(spec, f"create_lot ({size:,} entries)", size, lambda t=target, k=n: (
            lots.create_lot(operator, programme.code, t, idempotency_key=f"bench-lot-{k}")))
        if lot["entries"] != size:
            raise RuntimeError(f"a lot with the target of {size:,} entries holds {lot['entries']:,}")
        raw = await raw_items(spec, 10**6 + n, first_id + pooled, size)
        rows.append(report.LotRow(size, pooled, lot, step, raw))
        pooled += size
        print(f"  create_lot {size:>7,}: {step.seconds:6.2f} s ({step.per_s:,.0f} entries/s, {lot['holders']:,} "
              f"contributors); raw INSERT … SELECT {raw.seconds:.2f} s ({step.seconds / raw.seconds:.1f}x)",
              flush=True)
        print(f"      _NEXT batches: {', '.join(f'{t:.3f}' for t in step.each.get(report.PICK, []))} s", flush=True)
    return rows


async def exports(spec: LoadSpec, api: Server, token: str, lots_made: list[report.LotRow],
                  args: argparse.Namespace) -> tuple[list[report.Export], float]:
    """In-process (`lot_manifest` + `manifest_csv`, as the endpoints call them) for every lot, `--repeats` times for
    the sale's lot; over HTTP (one API process, one request at a time) for the sale's lot. Hashes checked."""
    from wallet.market.lots import lot_manifest
    from wallet.market.manifest import DOMAIN, manifest_csv

    out, sha_s = [], math.nan
    for row in lots_made:
        lot_id, stored, repeats = row.lot["id"], bytes(row.lot["manifest_hash"]), (
            args.repeats if row.size == args.sale_lot else 1)
        json_runs, csv_runs, step = [], [], None
        for _ in range(repeats):
            step, (lot, manifest) = await timed_call(spec, f"lot_manifest ({row.size:,} entries)", row.size,
                                                     lambda i=lot_id: lot_manifest(i))
            json_runs.append(step.seconds)
            started = time.perf_counter()
            text = manifest_csv(lot["id"], manifest)
            csv_runs.append(step.seconds + time.perf_counter() - started)
        ok = manifest.sha256 == stored == hashlib.sha256(DOMAIN + manifest.body).digest()
        out.append(report.Export(row.size, "in-process", "JSON", json_runs, len(manifest.body), ok, step=step))
        out.append(report.Export(row.size, "in-process", "CSV", csv_runs, len(text.encode()), ok))
        if row.size == args.sale_lot:
            started = time.perf_counter()
            hashlib.sha256(DOMAIN + manifest.body).digest()
            sha_s = time.perf_counter() - started
            for fmt in ("json", "csv"):
                out.append(await http_export(spec, api, token, lot_id, fmt, stored, row.size, args.repeats))
        del manifest, text
        for e in out[-4 if row.size == args.sale_lot else -2:]:
            print(f"  manifest {e.size:>7,} {e.path:<10} {e.fmt:<4} {e.median:6.2f} s  {e.nbytes / 1e6:6.1f} MB  "
                  f"hash {'ok' if e.hash_ok else 'WRONG'}", flush=True)
    return out, sha_s


async def http_export(spec: LoadSpec, api: Server, token: str, lot_id: int, fmt: str, stored: bytes, size: int,
                      repeats: int) -> report.Export:
    from wallet.market.manifest import DOMAIN

    runs, cpu, nbytes, ok = [], [], 0, True
    async with httpx.AsyncClient(base_url=api.base_url, timeout=600) as http:
        for _ in range(repeats):
            digest = hashlib.sha256(DOMAIN)
            with stepping(spec, f"GET manifest.{fmt}") as step:
                async with http.stream("GET", f"/v1/admin/market/lots/{lot_id}/manifest.{fmt}",
                                       headers={"Authorization": f"Bearer {token}"}) as r:
                    nbytes = 0
                    async for chunk in r.aiter_raw():
                        nbytes += len(chunk)
                        digest.update(chunk)
            if r.status_code != 200:
                raise RuntimeError(f"GET manifest.{fmt}: HTTP {r.status_code}")
            body_ok = fmt != "json" or digest.digest() == stored
            ok = ok and body_ok and r.headers.get("manifest-sha256") == stored.hex()
            runs.append(step.seconds)
            cpu.append(step.cpu_s("server"))
    return report.Export(size, "HTTP", fmt.upper(), runs, nbytes, ok, api_cpu_s=statistics.median(cpu))


async def sell(spec: LoadSpec, operator: uuid.UUID, row: report.LotRow, stamp: str,
               batch: int) -> tuple[list[report.Step], report.Step, int, int, dict[str, int]]:
    """record_sale and settle_sale of the lot (and a replayed settle, a no-op), then the raw baseline: the same
    contributors' account, transfer and payout rows as batched INSERT … unnest into the scratch tables."""
    from wallet.db import connection, engine
    from wallet.market.sales import record_sale, settle_sale

    lot_id, holders = row.lot["id"], row.lot["holders"]
    record, (sale, _) = await timed_call(spec, "record_sale", row.size, lambda: record_sale(
        operator, lot_id, buyer="Bench Buyer Co.", exchange_ref=f"BENCH-{stamp}", sale_date=date.today(),
        price_per_tonne_fen=PRICE_PER_TONNE_FEN))
    settle, (sale, made) = await timed_call(spec, "settle_sale", holders, lambda: settle_sale(sale["id"]))
    replay, (_, again) = await timed_call(spec, "settle_sale replayed (no-op)", holders,
                                          lambda: settle_sale(sale["id"]))
    if not made or again or sale["state"] != "settled":
        raise RuntimeError(f"settle_sale: made {made}, replay made {again}, state {sale['state']}")
    async with connection() as conn:
        payouts = await conn.fetch("SELECT holder, reduction_mg, fen FROM market_payout WHERE sale = $1 ORDER BY id",
                                   sale["id"])
        transfers = await conn.fetchval("SELECT count(*) FROM ledger_transfer WHERE ref->>'sale' = $1",
                                        str(sale["id"]))
    print(f"  record_sale {record.seconds:.2f} s; settle_sale {settle.seconds:.2f} s for {len(payouts):,} "
          f"contributors ({len(payouts) / settle.seconds:,.0f}/s, {transfers:,} transfers); replay "
          f"{replay.seconds:.3f} s", flush=True)
    with stepping(spec, "raw batched INSERTs", len(payouts)) as raw:
        async with engine().transaction() as tx:
            conn = tx.connection
            for lo in range(0, len(payouts), batch):
                part = payouts[lo:lo + batch]
                hs, gs, fs = [p["holder"] for p in part], [p["reduction_mg"] for p in part], [p["fen"] for p in part]
                await conn.execute(
                    """INSERT INTO bench_market_account (unit, purpose, code, holder, balance, created_at)
                       SELECT 'fen', 'available', 'fen:' || h || ':available', h, f, now()
                       FROM unnest($1::uuid[], $2::bigint[]) AS x(h, f)""", hs, fs)
                await conn.execute(
                    """INSERT INTO bench_market_transfer (key, unit, debit_account, credit_account, amount, kind, ref,
                                                        created_at)
                       SELECT 'sale:' || $3::bigint || ':holder:' || h, 'fen', 1, 2, f, 'market.proceeds',
                              jsonb_build_object('lot', $4::bigint, 'sale', $3::bigint, 'holder', h), now()
                       FROM unnest($1::uuid[], $2::bigint[]) AS x(h, f) WHERE f > 0""", hs, fs, sale["id"], lot_id)
                await conn.execute(
                    """INSERT INTO bench_market_payout (sale, holder, reduction_mg, fen, energy)
                       SELECT $4, h, g, f, 0 FROM unnest($1::uuid[], $2::bigint[], $3::bigint[]) AS x(h, g, f)""",
                    hs, gs, fs, sale["id"])
    money = {k: sale[k] for k in ("gross_fen", "benefit_fen", "residents_fen")}
    return [record, settle, replay], raw, len(payouts), transfers, money


async def pg_settings() -> dict[str, str]:
    from wallet.db import connection

    names = ("server_version", "shared_buffers", "work_mem", "effective_cache_size", "jit",
             "max_parallel_workers_per_gather", "synchronous_commit")
    async with connection() as conn:
        rows = await conn.fetch("SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1::text[])", list(names))
    return {r["name"]: f"{r['setting']}{' × ' + r['unit'] if r['unit'] else ''}" for r in rows}


async def measure_all(api: Server, spec: LoadSpec, args: argparse.Namespace) -> report.Measured:
    from wallet.db import connection, start_pool
    from wallet.holders.roles import grant_role
    from wallet.ledger.check import check_ledger
    from wallet.market import lots
    from wallet.market.programmes import create_programme
    from wallet.methodology.catalogue import current_version

    stamp, started = f"{int(time.time())}-{secrets.token_hex(3)}", time.perf_counter()
    await start_pool(os.environ["DATABASE_URL"], size_min=1, size_max=4)
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as http:
            partner, _ = await create_partner(http, stamp)
            body = {"email": f"bench-mk-operator-{stamp}@example.com", "password": PASSWORD, "device_name": "bench"}
            me = (await call(http, "POST", "/v1/auth/register", 201, json=body)).json()
        operator, token = uuid.UUID(me["holder_id"]), me["access_token"]
        await grant_role(operator, "operator")
        print(f"seeding {args.holders:,} holders × {args.per_holder} entries over {args.days} days", flush=True)
        book = await seed_book(spec, uuid.UUID(partner["id"]), args, stamp)
        print(f"book of {book.entries:,} entries seeded in {time.perf_counter() - started:.0f} s; {book.verified}",
              flush=True)
        programme = await create_programme({
            "code": f"bench-{stamp}", "name_zh": "基准碳普惠项目", "name_en": "Bench carbon programme",
            "exchange_zh": "北京绿色交易所", "exchange_en": "China Beijing Green Exchange",
            "behaviours": [f"{BEHAVIOUR}@{current_version(BEHAVIOUR).version}"], "trust_tiers": ["verified"],
            "period_from": book.first_day, "period_to": datetime.now(ZONE).date(), "settle_days": SETTLE_DAYS,
            "payout": "fen", "benefit_ppm": BENEFIT_PPM, "benefit_name_zh": "基准社区林",
            "benefit_name_en": "Bench community forest", "benefit_url": "https://bench.example/forest"})
        summaries = []
        for k in range(args.repeats):
            summaries.append(await timed_call(spec, f"eligible_summary, whole pool, run {k + 1}", book.entries,
                                              lambda: lots.eligible_summary(programme.code)))
            step, row = summaries[-1]
            print(f"  eligible_summary run {k + 1}: {step.seconds:.2f} s ({row['entries']:,} entries, "
                  f"{row['holders']:,} holders)", flush=True)
            if row["entries"] != book.entries:
                raise RuntimeError(f"{row['entries']:,} of {book.entries:,} seeded entries are eligible")
        start, end = lots._window(programme, None, None)
        plans = {"eligible_summary (whole pool)": await explain(
            f"""SELECT coalesce(sum(reduction_mg), 0)::bigint AS reduction_mg, count(*) AS entries,
                       count(DISTINCT holder) AS holders FROM ({lots._ELIGIBLE}) x""",
            *lots._args(programme, start, end))}
        await scratch_tables()
        made = await make_lots(spec, operator, programme, args, plans)
        next_plans = await plan_counts(lots._NEXT)
        print(f"  _NEXT planned on the pool's connections: {next_plans}", flush=True)
        summaries.append(await timed_call(spec, "eligible_summary with the lots made", book.entries,
                                          lambda: lots.eligible_summary(programme.code)))
        print(f"  eligible_summary after the lots: {summaries[-1][0].seconds:.2f} s", flush=True)
        exported, sha_s = await exports(spec, api, token, made, args)
        sale_row = next(m for m in made if m.size == args.sale_lot)
        sale, sale_raw, contributors, transfers, money = await sell(spec, operator, sale_row, stamp, args.batch)
        check, found = await timed_call(spec, "check_ledger()", book.entries, check_ledger)
        failed = [f for f in found.findings if not f.ok]
        verdict = (f"all {len(found.findings)} checks pass" if not failed else
                   f"{len(failed)} of {len(found.findings)} checks fail: "
                   + "; ".join(f"{f.name} ({f.offenders:,} offenders)" for f in failed))
        print(f"  check_ledger: {check.seconds:.1f} s, {verdict}", flush=True)
        async with connection() as conn:
            await conn.execute("DROP TABLE bench_market_item, bench_market_account, bench_market_transfer, "
                               "bench_market_payout")
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        return report.Measured(book, programme.code, summaries, made, args.sale_lot, exported, sha_s, sale, sale_raw,
                               contributors, transfers, money, check, verdict, plans, next_plans, await pg_settings(),
                               load)
    finally:
        await close_pool_in_time()


# -- main -------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from wallet.market.lots import MAX_LOT_ENTRIES

    parser = argparse.ArgumentParser(prog="python -m bench.market", description=__doc__.split("\n\n")[0])
    for flag, default, text in (
            ("--holders", 100_000, "opted-in holders"), ("--per-holder", 10, "credits per holder"),
            ("--days", 60, "local days the credits spread over"),
            ("--sale-lot", 100_000, "the lot (by size) exported over HTTP and sold"),
            ("--repeats", 3, "runs of the summary and of each export"),
            ("--batch", 10_000, "rows per raw baseline INSERT")):
        parser.add_argument(flag, type=int, default=default, help=f"{text} (default {default})")
    parser.add_argument("--lots", type=lambda v: [int(x) for x in v.split(",")], default=[10_000, 100_000, 250_000],
                        help="lot sizes in entries, made in this order (default 10000,100000,250000)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    if not (100 <= args.holders <= 2_000_000 and 1 <= args.per_holder <= args.days <= 366
            and all(1 <= n <= MAX_LOT_ENTRIES for n in args.lots) and args.sale_lot in args.lots
            and sum(args.lots) <= args.holders * args.per_holder and 1 <= args.repeats <= 20
            and 100 <= args.batch <= 100_000):
        parser.error(f"--holders 100–2000000, --per-holder 1–--days (at most 366), --lots each 1–{MAX_LOT_ENTRIES:,} "
                     "and together at most holders × per-holder, --sale-lot one of --lots, --repeats 1–20, "
                     "--batch 100–100000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine()  # the load average before we add to it
    with session("cw-bench-market-") as bench:
        env = prepare(bench.servers, bench.data_dir)
        api = Server("api", ["--factory", "api.app:create_app"], env, bench.work, "/ready")
        bench.running.append(api)
        api.start()
        code = code_state()  # what the API just imported
        spec = LoadSpec(port=api.port, path="/", concurrency=1, duration_s=0, warmup_s=0,
                        server_pid=api.proc.pid if api.proc else None,
                        postgres_pid=pid_file(bench.data_dir / "pg" / "postmaster.pid"),
                        valkey_pid=pid_file(bench.data_dir / "valkey" / "server.pid"))
        run: Callable[..., report.Measured] = asyncio.run
        with contextlib.suppress(ImportError):
            import uvloop  # the API runs on uvloop; so do the in-process calls here

            run = uvloop.run
        m = run(measure_all(api, spec, args))
        m.code = code
        section = report.render(datetime.now(UTC), info, m, args)
        print("\n" + section)
        if not args.no_write:
            report.write_results(section)
            print(f"written to {RESULTS.relative_to(ROOT)} ({time.perf_counter() - bench.started:.0f}s in all)")
        return 0
    return 130


if __name__ == "__main__":
    sys.exit(main())
