"""The energy ledger behaves like a small pure-Python reference model (issue 5's quality bar; LEDGER L3-L9, L11).

A Hypothesis state machine drives the real services on the real database for two or three residents:
operators award energy (and replay the award by key); credited reports grow energy balls (ripe, still
growing, or already past their window); residents collect one ball (double taps included) or all ripe ones;
the expiry sweep runs; redemptions are reserved on a scarce and an unlimited reward, fulfilled, voided and
replayed by key; residents donate to a project that completes when its goal is met; operators reverse
awards and donations (refused once reversed, for want of energy, or once the project has completed). The
model predicts every balance, every ball's end, stock, certificates and every refusal (insufficient-energy,
sold-out, ball-expired, ...); after each step the database must agree and `check_ledger()` must be clean.
Largest-remainder allocation (L9) has its properties in test_ledger_allocation.py.

Hypothesis rules are synchronous, so the machine runs on a thread and hands each service call to the
pytest event loop, where the `db` fixture's pool lives.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from tests.ledger_support import GROWER, grow, grower_partner, new_holder, registration_template, source_for
from wallet.db import connection
from wallet.donations.service import complete_if_met, create_project, donate
from wallet.energy.awards import award
from wallet.energy.balls import collect, expire_due
from wallet.energy.policy import configure, policy
from wallet.errors import DomainError
from wallet.holders.service import Registration
from wallet.intake.reports import Source
from wallet.ledger.check import check_ledger
from wallet.ledger.corrections import reverse_transfer
from wallet.ledger.service import holder_accounts
from wallet.mall.catalogue import create_reward
from wallet.mall.redeem import fulfil, reserve, void
from wallet.methodology.catalogue import current_version, energy_for, reduction_mg

T = TypeVar("T")
# Modest: every step ends with `check_ledger()`, which scans the whole session's ledger (~35 ms at 9,000 transfers).
MACHINE = settings(max_examples=20, stateful_step_count=30, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])
WHO = st.integers(0, 2)  # a resident, modulo how many this run has
LAPSE_S = 0.05  # a "lapsed" ball's whole window: past before the grow step returns


@dataclass(frozen=True)
class World:
    loop: asyncio.AbstractEventLoop
    template: Registration
    partner: dict[str, Any]
    operator: uuid.UUID


@dataclass
class Ball:
    holder: int
    amount: int
    kind: str  # ripe | unripe (ripens in an hour) | lapsed (its window has passed)
    state: str = "growing"


@dataclass
class Redemption:
    holder: int
    reward: int
    price: int
    key: str
    state: str = "pending"


@dataclass
class Given:
    """An award or a donation: the transfers an operator may reverse."""

    kind: str
    holder: int
    amount: int
    reversed: bool = False


@dataclass
class Reward:
    price: int
    stock: int | None


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run_coroutine_threadsafe(coro, LedgerMachine.world.loop).result(timeout=120)


def refusal(coro: Coroutine[Any, Any, T]) -> tuple[T | None, str | None]:
    """(result, None), or (None, the DomainError's code)."""
    try:
        return run(coro), None
    except DomainError as exc:
        return None, exc.code


class LedgerMachine(RuleBasedStateMachine):
    world: ClassVar[World]
    balls = Bundle("balls")
    redemptions = Bundle("redemptions")
    reversible = Bundle("reversible")

    def __init__(self) -> None:
        super().__init__()
        self.holders: list[uuid.UUID] = []
        self.sources: list[Source] = []
        self.available: list[int] = []
        self.held: list[int] = []
        self.ball: dict[int, Ball] = {}
        self.reward: dict[int, Reward] = {}
        self.redemption: dict[int, Redemption] = {}
        self.project = 0
        self.goal = 0
        self.given: dict[int, Given] = {}
        self.donated: dict[int, int] = {}  # per resident, net of reversals
        self.completed = False

    def who(self, index: int) -> int:
        return index % len(self.holders)

    @initialize(funds=st.lists(st.integers(0, 600), min_size=2, max_size=3), scarce_price=st.integers(1, 80),
                scarce_stock=st.integers(1, 3), dear_price=st.integers(50, 400), goal=st.integers(300, 3000))
    def open_the_world(self, funds: list[int], scarce_price: int, scarce_stock: int, dear_price: int,
                       goal: int) -> None:
        async def setup() -> None:
            for amount in funds:
                holder = await new_holder(self.world.template, "model")
                self.holders.append(holder)
                self.sources.append(await source_for(holder, self.world.partner))
                if amount:
                    await award(holder, amount, reason="opening funds", operator_id=self.world.operator)
            for price, stock in ((scarce_price, scarce_stock), (dear_price, None)):
                made = await create_reward({
                    "code": f"model-{uuid.uuid4().hex[:12]}", "title_zh": "模型奖励", "title_en": "Model reward",
                    "merchant_zh": "模型商户", "merchant_en": "Model merchant", "category": "other",
                    "price": price, "stock": stock,
                })
                self.reward[made["id"]] = Reward(price, stock)
            project = await create_project({"code": f"model-{uuid.uuid4().hex[:12]}", "title_zh": "模型项目",
                                            "title_en": "Model project", "goal": goal})
            self.project, self.goal = project["id"], goal

        run(setup())
        self.available = list(funds)
        self.held = [0] * len(funds)

    # -- energy in ---------------------------------------------------------------------------------------

    @rule(target=reversible, who=WHO, amount=st.integers(1, 300))
    def operator_awards(self, who: int, amount: int) -> int:
        h, key = self.who(who), uuid.uuid4().hex
        out = run(award(self.holders[h], amount, reason="model test", operator_id=self.world.operator, key=key))
        self.available[h] += amount
        assert out == {"awarded": amount, "available": self.available[h], "replayed": False}
        replay = run(award(self.holders[h], amount, reason="model test", operator_id=self.world.operator, key=key))
        assert replay == {"awarded": 0, "available": self.available[h], "replayed": True}
        transfer_id = run(self._transfer_id(f"award:{self.holders[h]}:{key}"))
        self.given[transfer_id] = Given("award", h, amount)
        return transfer_id

    async def _transfer_id(self, key: str) -> int:
        async with connection() as conn:
            return await conn.fetchval("SELECT id FROM ledger_transfer WHERE key = $1", key)

    @rule(transfer_id=reversible)
    def operator_reverses_an_award_or_a_donation(self, transfer_id: int) -> None:
        g = self.given[transfer_id]
        out, code = refusal(reverse_transfer(transfer_id, reason="model correction", operator_id=self.world.operator))
        if g.kind == "donation" and self.completed:
            assert code == "project-completed"
        elif g.reversed:
            assert code == "already-reversed"
        elif g.kind == "award" and self.available[g.holder] < g.amount:
            assert code == "insufficient-energy"
        else:
            assert code is None and out is not None and (out["reverses"], out["amount"]) == (transfer_id, g.amount)
            g.reversed = True
            if g.kind == "award":
                self.available[g.holder] -= g.amount
            else:
                self.available[g.holder] += g.amount
                self.donated[g.holder] -= g.amount

    @rule(target=balls, who=WHO, quantity=st.integers(1, 40),
          kind=st.sampled_from(("ripe", "ripe", "unripe", "lapsed")))
    def a_credited_report_grows_a_ball(self, who: int, quantity: int, kind: str) -> int:
        h = self.who(who)
        ripen_s, window_s = {"ripe": (0, 72 * 3600), "unripe": (3600, 72 * 3600), "lapsed": (0, LAPSE_S)}[kind]

        async def grown() -> tuple[int, int]:
            [(ball_id, amount)] = await grow(self.sources[h], [quantity], ripen_s=ripen_s, window_s=window_s)
            if kind == "lapsed":  # wait until the database's clock is past the window
                async with connection() as conn:
                    left = await conn.fetchval("""SELECT greatest(0, extract(epoch FROM expires_at - now()))::float8
                                                  FROM energy_ball WHERE id = $1""", ball_id)
                await asyncio.sleep(left + 0.01)
            return ball_id, amount

        ball_id, amount = run(grown())
        version = current_version(GROWER)
        assert amount == energy_for(version, reduction_mg(version, quantity)) > 0
        self.ball[ball_id] = Ball(h, amount, kind)
        return ball_id

    # -- collecting and expiry ---------------------------------------------------------------------------

    @rule(who=st.sampled_from((None, None, None, 0, 1, 2)), ball_id=balls)
    def collect_one_ball(self, who: int | None, ball_id: int) -> None:
        """Mostly the owner; sometimes whoever `who` is (another resident's ball is not found)."""
        ball = self.ball[ball_id]
        h = ball.holder if who is None else self.who(who)
        out, code = refusal(collect(self.holders[h], ball_id))
        if ball.holder != h:
            assert code == "ball-not-found"
        elif ball.state == "collected":  # a double tap: nothing moves again
            assert out == {"collected": 0, "balls": [], "already_collected": [ball_id],
                           "available": self.available[h]}
        elif ball.state == "expired" or ball.kind == "lapsed":
            assert code == "ball-expired"
        elif ball.kind == "unripe":
            assert code == "ball-not-ripe"
        else:
            ball.state = "collected"
            self.available[h] += ball.amount
            assert out == {"collected": ball.amount, "balls": [ball_id], "already_collected": [],
                           "available": self.available[h]}

    @rule(who=WHO)
    def collect_every_ripe_ball(self, who: int) -> None:
        h = self.who(who)
        ripe = sorted(i for i, b in self.ball.items() if b.holder == h and b.state == "growing" and b.kind == "ripe")
        out = run(collect(self.holders[h]))
        for i in ripe:
            self.ball[i].state = "collected"
        self.available[h] += sum(self.ball[i].amount for i in ripe)
        assert sorted(out["balls"]) == ripe
        assert out["collected"] == sum(self.ball[i].amount for i in ripe)
        assert out["available"] == self.available[h]

    @rule()
    def the_expiry_sweep_runs(self) -> None:
        due = [b for b in self.ball.values() if b.state == "growing" and b.kind == "lapsed"]
        expired = run(expire_due())
        assert expired >= len(due)  # other tests of the session may have left due balls too; none of ours stays
        for ball in due:
            ball.state = "expired"
        run(expire_due())  # idempotent: a second run changes none of ours (the invariant checks each ball)

    # -- the mall ----------------------------------------------------------------------------------------

    @rule(target=redemptions, who=WHO, scarce=st.booleans())
    def reserve_a_reward(self, who: int, scarce: bool) -> Any:
        h = self.who(who)
        reward_id = list(self.reward)[0 if scarce else 1]
        reward = self.reward[reward_id]
        key = f"model-{uuid.uuid4().hex}"
        out, code = refusal(reserve(self.holders[h], reward_id, idempotency_key=key))
        if reward.stock == 0:
            assert code == "sold-out"
            return multiple()
        if self.available[h] < reward.price:
            assert code == "insufficient-energy"
            return multiple()
        assert code is None and out is not None
        row, created = out
        assert created and row["state"] == "pending" and row["price"] == reward.price
        self.available[h] -= reward.price
        self.held[h] += reward.price
        if reward.stock is not None:
            reward.stock -= 1
        self.redemption[row["id"]] = Redemption(h, reward_id, reward.price, key)
        return row["id"]

    @rule(redemption_id=redemptions, same_reward=st.booleans())
    def replay_a_redemption_key(self, redemption_id: int, same_reward: bool) -> None:
        r = self.redemption[redemption_id]
        other = next(i for i in self.reward if i != r.reward)
        out, code = refusal(reserve(self.holders[r.holder], r.reward if same_reward else other,
                                    idempotency_key=r.key))
        if same_reward:
            assert out is not None and out[1] is False
            assert (out[0]["id"], out[0]["state"]) == (redemption_id, r.state)
        else:
            assert code == "idempotency-key-reused"

    @rule(redemption_id=redemptions)
    def fulfil_a_redemption(self, redemption_id: int) -> None:
        r = self.redemption[redemption_id]
        out = run(fulfil(redemption_id, None))
        if r.state == "pending":
            r.state = "fulfilled"
            self.held[r.holder] -= r.price
        assert out["state"] == r.state
        assert (out["voucher_code"] or "").startswith("CW-") == (r.state == "fulfilled")

    @rule(redemption_id=redemptions)
    def void_a_redemption(self, redemption_id: int) -> None:
        r = self.redemption[redemption_id]
        out = run(void(redemption_id, "model-void"))
        if r.state == "pending":
            r.state = "voided"
            self.held[r.holder] -= r.price
            self.available[r.holder] += r.price
            if self.reward[r.reward].stock is not None:
                self.reward[r.reward].stock += 1  # type: ignore[operator]
        assert out["state"] == r.state

    # -- donations ---------------------------------------------------------------------------------------

    @rule(target=reversible, who=WHO, amount=st.integers(1, 300))
    def donate_to_the_project(self, who: int, amount: int) -> Any:
        h = self.who(who)
        out, code = refusal(donate(self.holders[h], self.project, amount, idempotency_key=uuid.uuid4().hex))
        if self.completed:
            assert code == "project-completed"
            return multiple()
        if self.available[h] < amount:
            assert code == "insufficient-energy"
            return multiple()
        assert code is None and out is not None and out[1] is True and out[0]["amount"] == amount
        self.available[h] -= amount
        self.donated[h] = self.donated.get(h, 0) + amount
        self.given[out[0]["id"]] = Given("donation", h, amount)
        certificates = run(complete_if_met(self.project))
        if sum(self.donated.values()) >= self.goal:
            self.completed = True
            assert certificates == sum(1 for given in self.donated.values() if given > 0)
        else:
            assert certificates == 0
        return out[0]["id"]

    # -- after every step --------------------------------------------------------------------------------

    @invariant()
    def the_database_agrees_with_the_model(self) -> None:
        if not self.holders:
            return
        run(self._agree())

    def teardown(self) -> None:
        """Leave nothing due for later tests' sweeps: void what is still pending, expire what has lapsed."""
        async def tidy() -> None:
            for redemption_id, r in self.redemption.items():
                if r.state == "pending":
                    await void(redemption_id, "model-teardown")
            await expire_due()

        if self.holders:
            run(tidy())

    async def _agree(self) -> None:
        async with connection() as conn:
            for h, holder in enumerate(self.holders):
                balances = (await holder_accounts(conn, holder)).balances
                growing = sum(b.amount for b in self.ball.values() if b.holder == h and b.state == "growing")
                assert balances == {"available": self.available[h], "balls": growing, "held": self.held[h]}, h
                assert min(balances.values()) >= 0
            balls = {r["id"]: (r["state"], r["amount"]) for r in await conn.fetch(
                "SELECT id, state, amount FROM energy_ball WHERE id = ANY($1::bigint[])", list(self.ball))}
            assert balls == {i: (b.state, b.amount) for i, b in self.ball.items()}
            stock = dict(await conn.fetch("SELECT id, stock FROM reward WHERE id = ANY($1::bigint[])",
                                          list(self.reward)))
            assert stock == {i: r.stock for i, r in self.reward.items()}
            states = dict(await conn.fetch("SELECT id, state FROM redemption WHERE id = ANY($1::bigint[])",
                                           list(self.redemption)))
            assert states == {i: r.state for i, r in self.redemption.items()}
            status = await conn.fetchval("SELECT status FROM donation_project WHERE id = $1", self.project)
            assert status == ("completed" if self.completed else "open")
            if self.completed:
                shares = dict(await conn.fetch(
                    "SELECT holder, amount FROM donation_certificate WHERE project = $1", self.project))
                assert shares == {self.holders[h]: given for h, given in self.donated.items() if given > 0}
        report = await check_ledger()
        assert report.ok, [f for f in report.findings if not f.ok]


@pytest.fixture(scope="module")
async def world(db: object, passwords: Any, settings: Any) -> World:
    template = await registration_template(passwords)
    return World(asyncio.get_running_loop(), template, await grower_partner(settings),
                 await new_holder(template, "operator"))


async def test_the_ledger_matches_its_reference_model(world: World) -> None:
    LedgerMachine.world = world
    previous = policy()
    try:
        await asyncio.to_thread(run_state_machine_as_test, LedgerMachine, settings=MACHINE)
    finally:
        configure(previous)
