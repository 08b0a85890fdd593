"""Properties of the carbon market (issue 9's quality bar; LEDGER L8, L9, L10, L11).

1. The proceeds split, for any inputs: the public-benefit share is the floor of its ppm, the parts sum exactly to
   the gross, each resident's part is the floor or the floor + 1 of their exact pro-rata share, equal grams earlier
   in the order never get less, and reordering the contributors only moves units between exact ties.
2. A Hypothesis state machine drives the real services on the real database (lots created, cancelled, sold,
   settled, settled again, sales cancelled, residents opting in and out, new entries) against a small pure-Python
   model of which entries sit in which live lot and what each resident was paid. After every step: no entry is in
   two live lots, the live items, lot and sale states and every fen balance agree with the model, a replayed
   settlement changes nothing, and `check_ledger()` is clean.
3. The checker catches tampering: with the tables' guards switched off inside a transaction that is rolled back,
   an edited lot item, a deleted or edited payout, an edited gross or an entry put in a second live lot each show up
   as exactly the findings that describe them.
"""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.ledger_support import Kit, assert_ledger_ok, grow, make_kit, new_holder, source_for
from tests.market_support import contributor, mg_of, new_programme, opt_out_everyone
from wallet.db import connection, engine
from wallet.errors import DomainError
from wallet.intake.reports import Source
from wallet.ledger.check import check_ledger
from wallet.market.lots import cancel_lot, create_lot
from wallet.market.programmes import PPM
from wallet.market.sales import MG_PER_TONNE, cancel_sale, gross_fen, record_sale, settle_sale, split_proceeds
from wallet.market.statements import set_consent

T = TypeVar("T")
SPLITS = settings(max_examples=300, deadline=None)
MACHINE = settings(max_examples=30, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BENEFIT = {"benefit_name_zh": "社区植树", "benefit_name_en": "Community trees"}


def reference_split(gross: int, ppm: int, grams: list[int]) -> tuple[int, list[int]]:
    """The split written out with exact fractions: the model's expectation of a settlement."""
    benefit = math.floor(Fraction(gross * ppm, PPM))
    rest, whole = gross - benefit, sum(grams)
    exact = [Fraction(rest * g, whole) for g in grams]
    shares = [math.floor(x) for x in exact]
    for i in sorted(range(len(grams)), key=lambda i: (shares[i] - exact[i], i))[:rest - sum(shares)]:
        shares[i] += 1
    return benefit, shares


# --- 1. the split ------------------------------------------------------------------------------------------

GROSS = st.one_of(st.integers(0, 50), st.integers(0, 10**15))
PPMS = st.one_of(st.sampled_from([0, 1, 100_000, 333_333, 999_999, PPM]), st.integers(0, PPM))
# Few distinct values, so equal grams (and equal remainders of different grams) are common.
WEIGHTS = st.one_of(st.lists(st.sampled_from([1, 2, 3, 1280, 2560, 3840]), min_size=1, max_size=12),
                    st.lists(st.integers(1, 10**13), min_size=1, max_size=12))


@SPLITS
@given(gross=GROSS, ppm=PPMS, grams=WEIGHTS)
def test_the_split_sums_exactly_and_each_part_is_its_floor_or_one_more(gross: int, ppm: int,
                                                                       grams: list[int]) -> None:
    benefit, shares = split_proceeds(gross, ppm, grams)
    assert benefit == gross * ppm // PPM == math.floor(Fraction(gross * ppm, PPM))
    assert benefit + sum(shares) == gross and len(shares) == len(grams)
    rest, whole = gross - benefit, sum(grams)
    for g, share in zip(grams, shares, strict=True):
        assert share - math.floor(Fraction(rest * g, whole)) in (0, 1)
    assert (benefit, shares) == reference_split(gross, ppm, grams) == split_proceeds(gross, ppm, grams)


@SPLITS
@given(gross=GROSS, ppm=PPMS, grams=WEIGHTS)
def test_equal_grams_earlier_in_the_order_never_get_less(gross: int, ppm: int, grams: list[int]) -> None:
    _, shares = split_proceeds(gross, ppm, grams)
    pairs = [(i, j) for i in range(len(grams)) for j in range(i + 1, len(grams)) if grams[i] == grams[j]]
    assert all(shares[i] - shares[j] in (0, 1) for i, j in pairs), (grams, shares)


@SPLITS
@given(gross=GROSS, ppm=PPMS, grams=WEIGHTS, seed=st.randoms(use_true_random=False))
def test_reordering_contributors_moves_units_only_between_exact_ties(gross: int, ppm: int, grams: list[int],
                                                                     seed: random.Random) -> None:
    """Each grams value's multiset of shares is the same in any order, unless another grams value has the very same
    remainder (then the earlier of the tied gets the unit); and the number of extra units per remainder never moves."""
    order = list(range(len(grams)))
    seed.shuffle(order)
    benefit, shares = split_proceeds(gross, ppm, grams)
    benefit2, shuffled = split_proceeds(gross, ppm, [grams[i] for i in order])
    assert benefit2 == benefit
    rest, whole = gross - benefit, sum(grams)
    remainder = {g: rest * g % whole for g in grams}

    def by(key: Callable[[int], Any], parts: list[int], weights: list[int]) -> dict[Any, list[int]]:
        out: dict[Any, list[int]] = {}
        for g, share in zip(weights, parts, strict=True):
            out.setdefault(key(g), []).append(share - rest * g // whole)
        return {k: sorted(v) for k, v in out.items()}

    permuted = [grams[i] for i in order]
    assert by(remainder.get, shares, grams) == by(remainder.get, shuffled, permuted)
    alone = {g for g in grams if sum(1 for h in set(grams) if remainder[h] == remainder[g]) == 1}
    before, after = by(lambda g: g, shares, grams), by(lambda g: g, shuffled, permuted)
    assert {g: before[g] for g in alone} == {g: after[g] for g in alone}


@SPLITS
@given(total=st.one_of(st.integers(0, 10**6), st.integers(0, 10**15)), price=st.integers(1, 10**9))
def test_gross_is_the_floor_of_grams_times_price(total: int, price: int) -> None:
    assert gross_fen(total, price) == math.floor(Fraction(total * price, MG_PER_TONNE))


# --- 2. the state machine ---------------------------------------------------------------------------------


@dataclass
class Entry:
    holder: int
    mg: int
    day: date


@dataclass
class Lot:
    entries: list[int]
    state: str = "open"


@dataclass
class Sale:
    lot: int
    gross: int
    state: str = "pending"
    settled: dict[str, Any] | None = None


@dataclass
class Holder:
    id: uuid.UUID
    source: Source
    opted_in: bool
    grown: int = 0  # grams reported today (the behaviour's daily cap is 30,000 g)
    paid: int = 0  # fen


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run_coroutine_threadsafe(coro, MarketMachine.loop).result(timeout=120)


def outcome(coro: Coroutine[Any, Any, T]) -> tuple[T | None, str | None]:
    try:
        return run(coro), None
    except DomainError as exc:
        return None, exc.code


GRAMS = st.integers(1, 3000)
PICK = st.integers(0, 1000)
PRICE = st.one_of(st.integers(1, 50_000), st.integers(50_000, 10**9))


class MarketMachine(RuleBasedStateMachine):
    loop: ClassVar[asyncio.AbstractEventLoop]
    kit: ClassVar[Kit]

    def __init__(self) -> None:
        super().__init__()
        self.holders: list[Holder] = []
        self.entries: dict[int, Entry] = {}
        self.live: dict[int, int] = {}  # entry -> the live lot holding it
        self.lots: dict[int, Lot] = {}
        self.sales: dict[int, Sale] = {}
        self.code, self.ppm = "", 0

    @initialize(ppm=st.one_of(st.sampled_from([0, 0, 1, 100_000, 999_999]), st.integers(0, 300_000)),
                grams=st.lists(st.lists(GRAMS, min_size=1, max_size=3), min_size=2, max_size=4),
                opted=st.lists(st.sampled_from([True, True, True, False]), min_size=4, max_size=4))
    def open_a_programme(self, ppm: int, grams: list[list[int]], opted: list[bool]) -> None:
        async def setup() -> None:
            await opt_out_everyone()
            self.code = (await new_programme(benefit_ppm=ppm, **(BENEFIT if ppm else {}))).code
            for quantities, opted_in in zip(grams, opted, strict=False):
                holder = await new_holder(self.kit.template, "market")
                self.holders.append(Holder(holder, await source_for(holder, self.kit.partner), opted_in))
                await set_consent(holder, opted_in)
                await self._grow(len(self.holders) - 1, quantities)

        self.ppm = ppm
        run(setup())

    async def _grow(self, h: int, quantities: list[int]) -> None:
        holder = self.holders[h]
        await grow(holder.source, quantities)
        holder.grown += sum(quantities)
        async with connection() as conn:
            for r in await conn.fetch("SELECT id, reduction_mg, local_day FROM book_entry WHERE holder = $1 AND "
                                      "kind = 'credit' ORDER BY id", holder.id):
                self.entries.setdefault(r["id"], Entry(h, r["reduction_mg"], r["local_day"]))

    def _pick(self, things: dict[int, Any], pick: int) -> int:
        return sorted(things)[pick % len(things)]

    @rule(who=PICK, grams=GRAMS)
    def a_resident_recycles_more(self, who: int, grams: int) -> None:
        h = who % len(self.holders)
        if self.holders[h].grown + grams <= 25_000:
            run(self._grow(h, [grams]))

    @rule(who=PICK, opted_in=st.booleans())
    def a_resident_opts_in_or_out(self, who: int, opted_in: bool) -> None:
        holder = self.holders[who % len(self.holders)]
        assert run(set_consent(holder.id, opted_in))["opted_in"] is opted_in
        holder.opted_in = opted_in

    @rule(permille=st.integers(1, 1000), beyond=st.integers(0, 9))
    def an_operator_creates_a_lot(self, permille: int, beyond: int) -> None:
        eligible = sorted((e for e, x in self.entries.items()
                           if self.holders[x.holder].opted_in and e not in self.live),
                          key=lambda e: (self.entries[e].day, e))
        total = sum(self.entries[e].mg for e in eligible)
        target = total + 1 + permille if beyond == 0 or total == 0 else max(1, total * permille // 1000)
        lot, refused = outcome(create_lot(self.kit.operator, self.code, target))
        if total < target:
            assert refused == "not-enough-eligible", lot
            return
        taken, running = [], 0
        for e in eligible:
            if running >= target:
                break
            taken.append(e)
            running += self.entries[e].mg
        assert refused is None and lot is not None
        assert (lot[0]["state"], lot[0]["total_mg"], lot[0]["entries"], lot[0]["holders"]) == (
            "open", running, len(taken), len({self.entries[e].holder for e in taken}))
        self.lots[lot[0]["id"]] = Lot(sorted(taken))
        self.live.update({e: lot[0]["id"] for e in taken})

    @precondition(lambda self: self.lots)
    @rule(pick=PICK)
    def an_operator_cancels_a_lot(self, pick: int) -> None:
        lot_id = self._pick(self.lots, pick)
        lot = self.lots[lot_id]
        out, refused = outcome(cancel_lot(lot_id, "model test"))
        expected = {"pending": "sale-pending", "settled": "lot-sold"}.get(lot.state)
        assert refused == expected, (lot.state, refused)
        if expected is None:
            assert out is not None and out["state"] == "cancelled"
            if lot.state == "open":  # a cancelled lot's entries may be in a newer lot by now
                self.live = {e: x for e, x in self.live.items() if x != lot_id}
            lot.state = "cancelled"

    @precondition(lambda self: self.lots)
    @rule(pick=PICK, price=PRICE, open_only=st.booleans())
    def an_operator_records_a_sale(self, pick: int, price: int, open_only: bool) -> None:
        lots = {i: x for i, x in self.lots.items() if x.state == "open" or not open_only} or self.lots
        self._record(self._pick(lots, pick), price)

    @precondition(lambda self: self.sales)
    @rule(pick=PICK, pending_only=st.booleans())
    def an_operator_settles_a_sale(self, pick: int, pending_only: bool) -> None:
        sales = {i: x for i, x in self.sales.items() if x.state == "pending" or not pending_only} or self.sales
        self._settle(self._pick(sales, pick))

    @precondition(lambda self: any(x.state == "open" for x in self.lots.values()))
    @rule(pick=PICK, price=PRICE)
    def an_open_lot_is_sold_and_paid_for(self, pick: int, price: int) -> None:
        sale_id = self._record(self._pick({i: x for i, x in self.lots.items() if x.state == "open"}, pick), price)
        assert sale_id is not None
        self._settle(sale_id)

    def _record(self, lot_id: int, price: int) -> int | None:
        lot = self.lots[lot_id]
        out, refused = outcome(record_sale(self.kit.operator, lot_id, buyer="模型买方", sale_date=date.today(),
                                           exchange_ref=f"MODEL-{uuid.uuid4().hex}", price_per_tonne_fen=price))
        expected = {"pending": "sale-pending", "settled": "lot-sold", "cancelled": "lot-cancelled"}.get(lot.state)
        assert refused == expected, (lot.state, refused)
        if out is None:
            return None
        assert out[1] is True and out[0]["state"] == "pending"
        gross = sum(self.entries[e].mg for e in lot.entries) * price // MG_PER_TONNE
        assert out[0]["gross_fen"] == gross
        self.sales[out[0]["id"]] = Sale(lot_id, gross)
        lot.state = "pending"
        return out[0]["id"]

    def _settle(self, sale_id: int) -> None:
        sale = self.sales[sale_id]
        out, refused = outcome(settle_sale(sale_id))
        if sale.state == "cancelled":
            assert refused == "sale-cancelled"
            return
        assert refused is None and out is not None
        if sale.state == "settled":
            assert out == (sale.settled, False)
            return
        row, made = out
        assert made is True and row["state"] == "settled"
        lot = self.lots[sale.lot]
        grams: dict[int, int] = {}
        for e in lot.entries:  # ascending ids: each resident's first entry decides the order
            grams[self.entries[e].holder] = grams.get(self.entries[e].holder, 0) + self.entries[e].mg
        benefit, shares = reference_split(sale.gross, self.ppm, list(grams.values()))
        assert (row["benefit_fen"], row["residents_fen"]) == (benefit, sale.gross - benefit)
        paid = dict(zip(grams, shares, strict=True))
        assert run(self._payouts(sale_id)) == {self.holders[h].id: fen for h, fen in paid.items()}
        assert row["paid"] == sum(1 for fen in shares if fen)  # the public count of residents paid
        for h, fen in paid.items():
            self.holders[h].paid += fen
        sale.state, sale.settled, lot.state = "settled", row, "settled"

    @precondition(lambda self: any(s.state == "settled" for s in self.sales.values()))
    @rule(pick=PICK)
    def settling_a_settled_sale_again_changes_nothing(self, pick: int) -> None:
        settled = {i: s for i, s in self.sales.items() if s.state == "settled"}
        sale_id = self._pick(settled, pick)
        before = run(self._balances())
        assert run(settle_sale(sale_id)) == (settled[sale_id].settled, False)
        assert run(self._balances()) == before

    @precondition(lambda self: self.sales)
    @rule(pick=PICK)
    def an_operator_cancels_a_sale(self, pick: int) -> None:
        sale_id = self._pick(self.sales, pick)
        sale = self.sales[sale_id]
        out, refused = outcome(cancel_sale(sale_id, "model test"))
        if sale.state == "settled":
            assert refused == "sale-settled"
            return
        assert refused is None and out is not None and out[0]["state"] == "cancelled"
        assert out[1] is (sale.state == "pending")
        if sale.state == "pending":
            sale.state, self.lots[sale.lot].state = "cancelled", "open"

    async def _balances(self) -> dict[uuid.UUID, int]:
        async with connection() as conn:
            found = dict(await conn.fetch(
                """SELECT holder, balance FROM ledger_account WHERE holder = ANY($1::uuid[]) AND unit = 'fen'
                   AND purpose = 'available'""", [h.id for h in self.holders]))
        return {h.id: found.get(h.id, 0) for h in self.holders}

    async def _payouts(self, sale_id: int) -> dict[uuid.UUID, int]:
        async with connection() as conn:
            return dict(await conn.fetch("SELECT holder, fen FROM market_payout WHERE sale = $1", sale_id))

    @invariant()
    def the_database_agrees_with_the_model(self) -> None:
        if self.holders:
            run(self._agree())

    async def _agree(self) -> None:
        async with connection() as conn:
            assert await conn.fetch(
                "SELECT entry FROM market_lot_item WHERE NOT released GROUP BY entry HAVING count(*) > 1") == []
            assert dict(await conn.fetch("SELECT entry, lot FROM market_lot_item WHERE NOT released AND "
                                         "entry = ANY($1::bigint[])", list(self.entries))) == self.live
            assert dict(await conn.fetch("SELECT id, state FROM market_lot WHERE id = ANY($1::bigint[])",
                                         list(self.lots))) == {i: x.state for i, x in self.lots.items()}
            assert dict(await conn.fetch("SELECT id, state FROM market_sale WHERE id = ANY($1::bigint[])",
                                         list(self.sales))) == {i: x.state for i, x in self.sales.items()}
        assert await self._balances() == {h.id: h.paid for h in self.holders}
        report = await check_ledger()
        assert report.ok, [f for f in report.findings if not f.ok]


@pytest.fixture(scope="module")
async def kit(db: object, passwords: Any, settings: Any) -> Kit:
    return await make_kit(passwords, settings)


@pytest.fixture(autouse=True)
async def clean_slate(db: object) -> None:
    await opt_out_everyone()


async def test_the_market_matches_its_reference_model(kit: Kit) -> None:
    MarketMachine.loop, MarketMachine.kit = asyncio.get_running_loop(), kit
    await asyncio.to_thread(run_state_machine_as_test, MarketMachine, settings=MACHINE)
    await assert_ledger_ok()


# --- 3. tampering -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def sold(kit: Kit) -> dict[str, int]:
    """A settled sale of three residents' lot (with a public-benefit share), and an open lot of a fourth."""
    await opt_out_everyone()
    programme = await new_programme(benefit_ppm=150_000, **BENEFIT)
    for grams in ([1000, 700], [1300], [2000]):
        await contributor(kit.template, kit.partner, kit.tokens, grams)
    lot, _ = await create_lot(kit.operator, programme.code, mg_of(5000))
    sale, _ = await record_sale(kit.operator, lot["id"], buyer="某某科技有限公司", exchange_ref=f"T-{uuid.uuid4().hex}",
                                sale_date=date.today(), price_per_tonne_fen=9_000_000)
    await settle_sale(sale["id"])
    await contributor(kit.template, kit.partner, kit.tokens, [500])
    other, _ = await create_lot(kit.operator, programme.code, mg_of(500))
    return {"lot": lot["id"], "sale": sale["id"], "other": other["id"]}


# What is done (with the tables' guards off: triggers disabled, the live-item index dropped), and what must show.
TAMPERING: dict[str, tuple[list[str], set[str]]] = {
    "a-lot-items-grams": ([
        "ALTER TABLE market_lot_item DISABLE TRIGGER USER",
        "UPDATE market_lot_item SET reduction_mg = reduction_mg + 1 WHERE id = "
        "(SELECT min(id) FROM market_lot_item WHERE lot = {lot})",
    ], {"lot-items-match-the-book", "lot-items-sum-to-lot-totals", "lot-manifest-hash-recomputes"}),
    "a-payout-deleted": ([
        "ALTER TABLE market_payout DISABLE TRIGGER USER",
        "DELETE FROM market_payout WHERE id = (SELECT min(id) FROM market_payout WHERE sale = {sale})",
    ], {"settled-sale-pays-exactly", "settlement-split-recomputes"}),
    "a-fen-moved-between-payouts": ([  # the sum stays right: only the recomputed split and the ledger disagree
        "ALTER TABLE market_payout DISABLE TRIGGER USER",
        """UPDATE market_payout SET fen = fen + CASE WHEN id = (SELECT min(id) FROM market_payout
                                                                 WHERE sale = {sale} AND fen > 0) THEN -1 ELSE 1 END
           WHERE id IN (SELECT id FROM market_payout WHERE sale = {sale} AND fen > 0 ORDER BY id LIMIT 2)""",
    ], {"settlement-split-recomputes", "payouts-in-the-ledger"}),
    "a-sales-gross": ([  # the table's CHECK keeps gross = benefit + residents, so both move
        "ALTER TABLE market_sale DISABLE TRIGGER USER",
        "UPDATE market_sale SET gross_fen = gross_fen + 1, residents_fen = residents_fen + 1 WHERE id = {sale}",
    ], {"settled-sale-pays-exactly", "sales-match-money-transfers", "settlement-split-recomputes"}),
    "an-entry-in-two-live-lots": ([
        "DROP INDEX market_lot_item_live",
        """INSERT INTO market_lot_item (lot, entry, holder, reduction_mg, released)
           SELECT {other}, entry, holder, reduction_mg, false FROM market_lot_item
           WHERE id = (SELECT min(id) FROM market_lot_item WHERE lot = {lot})""",
    ], {"entry-in-at-most-one-live-lot", "lot-items-sum-to-lot-totals", "lot-items-match-the-book",
        "lot-manifest-hash-recomputes"}),
}


@pytest.mark.parametrize("tampering", list(TAMPERING))
async def test_the_checker_names_what_was_tampered_with(sold: dict[str, int], tampering: str) -> None:
    statements, findings = TAMPERING[tampering]
    await assert_ledger_ok()
    async with engine().transaction() as tx:
        for sql in statements:
            await tx.connection.execute(sql.format(**sold))
        report = await check_ledger()  # on the same connection: it sees the tampering
        await tx.rollback()  # and nobody else ever does
    assert {f.name for f in report.findings if not f.ok} == findings, [f for f in report.findings if not f.ok]
    await assert_ledger_ok()
