"""The carbon market under contention (issue 9: "a book entry is in at most one lot, ever, under concurrency";
LEDGER L8, L10, L11).

Service calls run at once on the `db` pool (and, once, HTTP requests at once on the API process): eight lots racing
for a pool that holds three get three lots of disjoint entries and five clear `not-enough-eligible`s; a lot's
cancellation racing new lots lets its released entries be taken again, never twice; ten settlements of one sale
pay each resident once; a settlement racing a cancellation ends one way only; two sales recorded at once for one
lot leave one pending, and one exchange reference raced onto two lots records one sale; an energy payout racing its
residents' collecting and donating neither deadlocks nor loses a unit; two settlements that create the same new
residents' money accounts in opposite orders both finish (they deadlocked before the accounts were made in holder
order). Every scenario ends with a clean `check_ledger()`.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from datetime import date
from typing import Any

import asyncpg
import httpx
import pytest

from tests.ledger_support import Kit, assert_ledger_ok, balances_of, grow, make_kit, source_for
from tests.market_support import contributor, mg_of, new_programme, opt_out_everyone
from tests.support import Resident, assert_problem, race
from wallet.db import connection, engine
from wallet.donations.service import create_project, donate
from wallet.energy.balls import balls_of, collect
from wallet.errors import DomainError
from wallet.market.lots import POOL_LOCK, cancel_lot, create_lot
from wallet.market.sales import cancel_sale, record_sale, settle_sale
from wallet.market.statements import get_consent, set_consent

GRAMS = 1000  # every entry here is 1 kg of clothes: equal entries, so a lot's target counts entries


@pytest.fixture(scope="module")
async def kit(db: object, passwords: Any, settings: Any) -> Kit:
    async def hold() -> None:
        async with connection() as conn:
            await conn.execute("SELECT pg_sleep(0.05)")

    await asyncio.gather(*(hold() for _ in range(10)))  # the pool's connections opened: racers start together
    return await make_kit(passwords, settings)


@pytest.fixture(autouse=True)
async def clean_slate(db: object) -> None:
    await opt_out_everyone()


async def holders(kit: Kit, *entries: int) -> list[uuid.UUID]:
    """Opted-in residents, the i-th with entries[i] recycling entries of 1 kg each."""
    return [(await contributor(kit.template, kit.partner, kit.tokens, [GRAMS] * n)).holder_id for n in entries]


async def pool_order(people: list[uuid.UUID]) -> list[int]:
    """These residents' credits in the order a lot takes them (oldest local day, then entry id)."""
    async with connection() as conn:
        return [r["id"] for r in await conn.fetch(
            "SELECT id FROM book_entry WHERE holder = ANY($1::uuid[]) AND kind = 'credit' ORDER BY local_day, id",
            people)]


async def live_items(lots: list[int]) -> dict[int, list[int]]:
    async with connection() as conn:
        rows = await conn.fetch("SELECT lot, entry FROM market_lot_item WHERE lot = ANY($1::bigint[]) AND NOT released "
                                "ORDER BY entry", lots)
    out: dict[int, list[int]] = {lot: [] for lot in lots}
    for r in rows:
        out[r["lot"]].append(r["entry"])
    return out


async def assert_pooling_consistent(lots: list[int]) -> None:
    """No entry in two live lots anywhere; each lot's totals are its items."""
    async with connection() as conn:
        assert await conn.fetch(
            "SELECT entry FROM market_lot_item WHERE NOT released GROUP BY entry HAVING count(*) > 1") == []
        assert await conn.fetch(
            """SELECT l.id FROM market_lot l JOIN market_lot_item i ON i.lot = l.id WHERE l.id = ANY($1::bigint[])
               GROUP BY l.id HAVING sum(i.reduction_mg) <> max(l.total_mg) OR count(*) <> max(l.entries)
                   OR count(DISTINCT i.holder) <> max(l.holders)""", lots) == []
    await assert_ledger_ok()


async def new_sale(kit: Kit, lot_id: int, price: int = 5_000_000) -> dict[str, Any]:
    sale, _ = await record_sale(kit.operator, lot_id, buyer="某某科技有限公司", exchange_ref=f"R-{uuid.uuid4().hex}",
                                sale_date=date.today(), price_per_tonne_fen=price)
    return sale


def code_of(result: Any) -> str | None:
    """The DomainError's code; anything else that went wrong (a deadlock, a unique violation) fails the test."""
    if isinstance(result, DomainError):
        assert result.kind in ("conflict", "invalid"), result
        return result.code
    if isinstance(result, BaseException):
        raise result
    return None


async def fen_balances(people: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    async with connection() as conn:
        found = dict(await conn.fetch("SELECT holder, balance FROM ledger_account WHERE holder = ANY($1::uuid[]) "
                                      "AND unit = 'fen' AND purpose = 'available'", people))
    return {h: found.get(h, 0) for h in people}


async def state_of(table: str, row_id: int) -> str:
    async with connection() as conn:
        return await conn.fetchval(f"SELECT state FROM {table} WHERE id = $1", row_id)


# --- lots racing for entries --------------------------------------------------------------------------------


async def test_eight_lots_racing_for_a_pool_of_three_get_disjoint_entries_and_five_refusals(kit: Kit) -> None:
    programme = await new_programme()
    people = await holders(kit, 4, 3, 3)  # ten entries: three lots of three, and one left over
    order = await pool_order(people)

    results = await asyncio.gather(*(create_lot(kit.operator, programme.code, mg_of(3 * GRAMS))
                                     for _ in range(8)), return_exceptions=True)

    assert Counter(code_of(r) for r in results) == {None: 3, "not-enough-eligible": 5}, results
    assert {r.extra["available_mg"] for r in results if isinstance(r, DomainError)} == {mg_of(GRAMS)}
    made = sorted(r[0]["id"] for r in results if isinstance(r, tuple))
    assert all(r[1] is True for r in results if isinstance(r, tuple))
    items = await live_items(made)
    # the lots queued on one lock: each took the three oldest entries the one before it left
    assert [items[lot] for lot in made] == [sorted(order[0:3]), sorted(order[3:6]), sorted(order[6:9])]
    await assert_pooling_consistent(made)


async def test_eight_lots_racing_over_http_get_three_201s_and_five_409s(kit: Kit, base_url: str,
                                                                       operator: Resident) -> None:
    programme = await new_programme()
    people = await holders(kit, 3, 4, 3)
    order = await pool_order(people)

    answers = await asyncio.to_thread(
        race, 8, lambda: httpx.Client(base_url=base_url, timeout=60),
        lambda http: http.post("/v1/admin/market/lots", headers=operator.headers,
                               json={"programme": programme.code, "target_mg": mg_of(3 * GRAMS)}))

    assert Counter(a.status_code for a in answers) == {201: 3, 409: 5}, [a.text for a in answers]
    for a in answers:
        if a.status_code == 409:
            assert assert_problem(a, 409, "not-enough-eligible")["available_mg"] == mg_of(GRAMS)
    made = sorted(a.json()["id"] for a in answers if a.status_code == 201)
    assert {(a.json()["entries"], a.json()["total_mg"]) for a in answers if a.status_code == 201} == {
        (3, mg_of(3 * GRAMS))}
    items = await live_items(made)
    assert sorted(e for lot in made for e in items[lot]) == sorted(order[:9])
    await assert_pooling_consistent(made)


async def test_entries_a_cancelled_lot_releases_are_taken_again_but_never_twice(kit: Kit) -> None:
    programme = await new_programme()
    people = await holders(kit, 4, 4)
    pool = set(await pool_order(people))
    first, _ = await create_lot(kit.operator, programme.code, mg_of(8 * GRAMS))
    live, every = [first["id"]], [first["id"]]

    for round_ in range(4):  # each round: cancel every live lot while four half-size lots race for the entries
        calls = [cancel_lot(lot, "race") for lot in live]
        calls += [create_lot(kit.operator, programme.code, mg_of(4 * GRAMS)) for _ in range(4)]
        order = list(range(len(calls)))[::-1 if round_ % 2 else 1]  # cancels first or last
        results = dict(zip(order, await asyncio.gather(*(calls[i] for i in order), return_exceptions=True),
                           strict=True))
        cancels, creates = [results[i] for i in range(len(live))], [results[i] for i in range(len(live), len(calls))]
        assert [code_of(c) for c in cancels] == [None] * len(live) and {c["state"] for c in cancels} == {"cancelled"}
        assert {code_of(r) for r in creates} <= {None, "not-enough-eligible"}, creates
        made = [r[0]["id"] for r in creates if isinstance(r, tuple)]
        assert len(made) <= 2
        taken = await live_items(made)
        assert all(len(taken[lot]) == 4 for lot in made)
        assert len({e for lot in made for e in taken[lot]}) == 4 * len(made)  # disjoint
        assert (await live_items(live)) == {lot: [] for lot in live}  # the cancelled lots hold nothing
        while len(made) < 2:  # what the race left is there for the next lot
            lot, _ = await create_lot(kit.operator, programme.code, mg_of(4 * GRAMS))
            made.append(lot["id"])
        taken = await live_items(made)
        assert sorted(e for lot in made for e in taken[lot]) == sorted(pool)
        live = made
        every += made
        await assert_pooling_consistent(every)


async def test_saying_no_while_a_lot_is_made_waits_for_it_and_later_lots_leave_the_resident_out(kit: Kit) -> None:
    """A lot reads consent batch by batch: a change in the middle must wait, or its manifest would hold the entries
    (and the consent time) of someone who had just said no."""
    programme = await new_programme()
    (resident,) = await holders(kit, 2)
    maker = await asyncpg.connect(os.environ["DATABASE_URL"])  # its own session: what a lot being made holds
    try:
        async with maker.transaction():
            await maker.execute("SELECT pg_advisory_xact_lock($1)", POOL_LOCK)
            saying_no = asyncio.create_task(set_consent(resident, False))
            for _ in range(1000):  # until the choice is seen waiting on the pool's lock
                if await maker.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"):
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the choice never waited for the lot being made")
            assert not saying_no.done() and (await get_consent(resident))["opted_in"] is True
    finally:
        await maker.close()
    assert (await saying_no)["opted_in"] is False
    with pytest.raises(DomainError) as refused:
        await create_lot(kit.operator, programme.code, mg_of(GRAMS))
    assert refused.value.code == "not-enough-eligible"


# --- sales racing -------------------------------------------------------------------------------------------


async def a_lot(kit: Kit, *entries: int, **programme: Any) -> tuple[dict[str, Any], list[uuid.UUID]]:
    code = (await new_programme(**programme)).code
    people = await holders(kit, *entries)
    lot, _ = await create_lot(kit.operator, code, mg_of(sum(entries) * GRAMS))
    return lot, people


async def test_ten_settlements_of_one_sale_pay_each_resident_once(kit: Kit) -> None:
    lot, people = await a_lot(kit, 2, 1, 3, benefit_ppm=123_456, benefit_name_zh="社区植树",
                              benefit_name_en="Community trees")
    sale = await new_sale(kit, lot["id"], price=7_777_777)

    results = await asyncio.gather(*(settle_sale(sale["id"]) for _ in range(10)), return_exceptions=True)

    assert [code_of(r) for r in results] == [None] * 10, results
    assert sorted(made for _, made in results) == [False] * 9 + [True]
    settled = results[0][0]
    assert all(row == settled for row, _ in results) and settled["state"] == "settled"
    async with connection() as conn:
        payouts = dict(await conn.fetch("SELECT holder, fen FROM market_payout WHERE sale = $1", sale["id"]))
        transfers = await conn.fetch("SELECT kind, amount, ref->>'holder' AS holder FROM ledger_transfer "
                                     "WHERE unit = 'fen' AND (ref->>'sale')::bigint = $1", sale["id"])
    assert set(payouts) == set(people) and sum(payouts.values()) == settled["residents_fen"]
    assert Counter(t["kind"] for t in transfers) == {"market.proceeds": 3, "market.benefit": 1}
    assert {uuid.UUID(t["holder"]): t["amount"] for t in transfers if t["holder"]} == payouts
    assert await fen_balances(people) == payouts
    await assert_ledger_ok()


async def test_a_settlement_racing_a_cancellation_ends_one_way_only(kit: Kit) -> None:
    for round_ in range(6):
        lot, people = await a_lot(kit, 1, 2)
        sale = await new_sale(kit, lot["id"])
        sale_id, first = sale["id"], ("settle", "cancel") if round_ % 2 else ("cancel", "settle")
        results = await asyncio.gather(*(settle_sale(sale_id) if kind == "settle" else cancel_sale(sale_id, "race")
                                         for kind in first * 2), return_exceptions=True)
        settles = [r for r in results if not isinstance(r, BaseException) and r[0]["state"] == "settled"]
        cancels = [r for r in results if not isinstance(r, BaseException) and r[0]["state"] == "cancelled"]
        codes = Counter(code_of(r) for r in results)
        assert sum(made for _, made in settles + cancels) == 1, results  # one call won
        if await state_of("market_sale", sale_id) == "settled":
            assert codes == {None: 2, "sale-settled": 2} and len(settles) == 2, results
            assert sum((await fen_balances(people)).values()) == settles[0][0]["residents_fen"]
        else:
            assert codes == {None: 2, "sale-cancelled": 2} and len(cancels) == 2, results
            assert set((await fen_balances(people)).values()) == {0}
            assert await state_of("market_lot", lot["id"]) == "open"
        await assert_ledger_ok()


async def test_two_sales_recorded_at_once_for_one_lot_leave_one_pending(kit: Kit) -> None:
    lot, _ = await a_lot(kit, 2)
    for _ in range(3):
        results = await asyncio.gather(new_sale(kit, lot["id"]), new_sale(kit, lot["id"]), return_exceptions=True)
        assert sorted(map(str, [code_of(r) for r in results])) == ["None", "sale-pending"], results
        async with connection() as conn:
            pending = await conn.fetch("SELECT id FROM market_sale WHERE lot = $1 AND state = 'pending'", lot["id"])
        (won,) = [r for r in results if isinstance(r, dict)]
        assert [p["id"] for p in pending] == [won["id"]]
        assert await state_of("market_lot", lot["id"]) == "pending"
        await cancel_sale(won["id"], "the next round")  # the lot is open again
    await assert_ledger_ok()


async def test_one_exchange_reference_raced_onto_two_lots_records_one_sale(kit: Kit) -> None:
    programme = await new_programme()
    await holders(kit, 2)
    lots = [(await create_lot(kit.operator, programme.code, mg_of(GRAMS)))[0]["id"] for _ in range(2)]
    ref = f"R-{uuid.uuid4().hex}"
    results = await asyncio.gather(*(record_sale(kit.operator, lot, buyer="某某科技有限公司", exchange_ref=ref,
                                                 sale_date=date.today(), price_per_tonne_fen=5_000) for lot in lots),
                                   return_exceptions=True)
    assert sorted(map(str, [code_of(r) for r in results])) == ["None", "exchange-ref-used"], results
    async with connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM market_sale WHERE exchange_ref = $1", ref) == 1
    await assert_ledger_ok()


async def test_two_settlements_creating_the_same_money_accounts_in_opposite_orders_do_not_deadlock(kit: Kit) -> None:
    """Residents a, b, c new to the money ledger: one lot has them by first entry as a, b, c, the other as c, b, a.
    A third transaction creating b's account (as any concurrent settlement paying b would) holds both settlements
    at b until it rolls back; then each must still finish."""
    programme = await new_programme()
    people = await holders(kit, 0, 0, 0)
    sources = [await source_for(h, kit.partner) for h in people]
    for source in [*sources, *reversed(sources)]:
        await grow(source, [GRAMS])
    lots = [(await create_lot(kit.operator, programme.code, mg_of(3 * GRAMS)))[0] for _ in range(2)]
    sales = [await new_sale(kit, lot["id"]) for lot in lots]
    async with engine().pool.acquire() as blocker:  # a connection of its own: not the tasks' Piccolo transaction
        held = blocker.transaction()
        await held.start()
        await blocker.execute("""INSERT INTO ledger_account (unit, purpose, code, holder, balance, created_at)
                                 VALUES ('fen', 'available', $1, $2, 0, now())""", f"fen:{people[1]}:available",
                              people[1])
        settling = asyncio.gather(*(settle_sale(s["id"]) for s in sales), return_exceptions=True)
        await both_waiting(settling)
        await held.rollback()
    results = await settling
    assert [code_of(r) for r in results] == [None, None], results
    async with connection() as conn:
        paid = await conn.fetch("SELECT holder, sum(fen)::bigint AS fen FROM market_payout "
                                "WHERE sale = ANY($1::bigint[]) GROUP BY holder", [s["id"] for s in sales])
    assert await fen_balances(people) == {r["holder"]: r["fen"] for r in paid}
    await assert_ledger_ok()


async def both_waiting(settling: asyncio.Future[Any]) -> None:
    """Until both settlements wait on a lock in the statement that creates money accounts (or one has ended)."""
    for _ in range(3000):
        async with connection() as conn:
            waiting = await conn.fetchval(
                """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                   AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO ledger_account%'""")
        if waiting >= 2 or settling.done():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the settlements never reached the statement that creates money accounts")


async def test_an_energy_payout_racing_its_residents_spending_neither_deadlocks_nor_loses_energy(kit: Kit) -> None:
    rate = 3
    lot, people = await a_lot(kit, 2, 2, 2, 2, payout="energy", energy_per_fen=rate)
    sale = await new_sale(kit, lot["id"], price=9_000_000)
    project = await create_project({"code": f"race-{uuid.uuid4().hex[:12]}", "title_zh": "社区风机",
                                    "title_en": "Community turbine", "goal": 10**9})
    ripe = {h: [b["id"] for b in await balls_of(h)] for h in people}
    for h in people:  # one ball collected before the race (the energy to donate), one left to collect in it
        await collect(h, ripe[h][0])
    before = await balances_of(people)
    gift = {h: before[h]["available"] // 2 for h in people}

    results = await asyncio.gather(
        settle_sale(sale["id"]),
        *(collect(h, ripe[h][1]) for h in people),
        *(donate(h, project["id"], gift[h], idempotency_key=uuid.uuid4().hex) for h in people),
        return_exceptions=True)

    assert [code_of(r) for r in results] == [None] * len(results), results
    settled, made = results[0]
    assert made is True
    collected = {h: r["collected"] for h, r in zip(people, results[1:1 + len(people)], strict=True)}
    async with connection() as conn:
        paid = dict(await conn.fetch("SELECT holder, energy FROM market_payout WHERE sale = $1", sale["id"]))
        fen = dict(await conn.fetch("SELECT holder, fen FROM market_payout WHERE sale = $1", sale["id"]))
    assert all(paid[h] == fen[h] * rate > 0 for h in people) and sum(fen.values()) == settled["residents_fen"]
    after = await balances_of(people)
    assert after == {h: {"available": before[h]["available"] + collected[h] + paid[h] - gift[h],
                         "balls": before[h]["balls"] - collected[h], "held": 0} for h in people}
    assert await fen_balances(people) == {h: 0 for h in people}  # converted, not paid in fen
    await assert_ledger_ok()
