"""Friends helping collect energy, over HTTP: only friends see a resident's balls, and only the ripe ones; a
friend's help moves the energy to the owner (never the helper) and the owner's statement names the friend; a
ball is helped once; the owner can turn helping off; each friend helps at most `friend_help_daily_cap` balls a
day (then 429 with Retry-After); nobody helps themselves. Ends with the ledger check.

Friendships are made with `gamification.friends.service.befriend` (the request/accept flow comes later).
"""

from __future__ import annotations

import threading
import uuid

import httpx
import pytest

from gamification.friends.service import befriend
from tests.energy_support import (
    assert_ledger_ok,
    balls,
    energy,
    energy_policy,  # noqa: F401 - a fixture
    grow,
    grow_days,
    grow_here,
    name_of,
    transfers,
)
from tests.support import Resident, assert_problem, race, register
from wallet.energy.policy import EnergyPolicy, configure

CAP = EnergyPolicy().friend_help_daily_cap  # the API process runs with the default policy


def friend_balls(helper: Resident, owner: Resident) -> httpx.Response:
    return helper.get(f"/v1/friends/{owner.holder_id}/energy/balls")


def help_(helper: Resident, owner: Resident, ball_id: int) -> httpx.Response:
    return helper.post(f"/v1/friends/{owner.holder_id}/energy/balls/{ball_id}/help")


@pytest.fixture
def owner(client: httpx.Client) -> Resident:
    """A resident with two days of credited self-reports: eight ripe balls."""
    r = register(client)
    grow_days(r, 2)
    assert len(balls(r)) == 8
    return r


async def test_strangers_neither_see_nor_help_collect_a_residents_balls(client: httpx.Client, owner: Resident,
                                                                        db: object) -> None:
    stranger, friend = register(client), register(client)
    await befriend(uuid.UUID(owner.holder_id), uuid.UUID(friend.holder_id))
    ball = balls(owner)[0]
    assert_problem(friend_balls(stranger, owner), 403, "not-friends")
    assert_problem(help_(stranger, owner, ball["id"]), 403, "not-friends")
    # A friend of a friend is no friend.
    await befriend(uuid.UUID(friend.holder_id), uuid.UUID(stranger.holder_id))
    assert_problem(help_(stranger, owner, ball["id"]), 403, "not-friends")
    assert_problem(friend_balls(stranger, owner), 403, "not-friends")
    assert balls(owner)[0]["state"] == "growing" and energy(owner)["available"] == 0


@pytest.mark.usefixtures("energy_policy")
async def test_a_friend_helps_collect_a_ripe_ball_and_the_owner_gets_the_energy(client: httpx.Client,
                                                                                owner: Resident,
                                                                                db: object) -> None:
    helper = register(client, nickname="小林")
    configure(EnergyPolicy(ripen_s=3600))
    await grow_here(owner, "clothes_repair", days_ago=2)  # still growing: friends do not see it
    unripe, *ripe = balls(owner)
    assert not unripe["ripe"] and all(b["ripe"] for b in ripe)
    await befriend(uuid.UUID(owner.holder_id), uuid.UUID(helper.holder_id))
    seen = friend_balls(helper, owner)
    assert seen.status_code == 200, seen.text
    assert [b["id"] for b in seen.json()["items"]] == [b["id"] for b in ripe]
    assert_problem(help_(helper, owner, unripe["id"]), 409, "ball-not-ripe")

    ball = ripe[0]
    got = help_(helper, owner, ball["id"])
    assert got.status_code == 200, got.text
    assert got.json() == {"collected": ball["amount"], "ball": ball["id"], "owner": owner.holder_id}
    assert energy(owner)["available"] == ball["amount"]
    assert energy(helper)["available"] == 0 and transfers(helper) == []
    helped = next(b for b in balls(owner) if b["id"] == ball["id"])
    assert (helped["state"], helped["collected_by_friend"]) == ("collected", True)
    row = transfers(owner)[0]
    assert (row["kind"], row["effect"]["available"]) == ("ball.collected", ball["amount"])
    zh, en = name_of(ball["behaviour"])
    assert row["description"] == {"zh-CN": f"好友小林帮你收取了{zh}的能量",
                                  "en": f"Your friend 小林 collected the energy from {en} for you"}
    assert ball["id"] not in [b["id"] for b in friend_balls(helper, owner).json()["items"]]

    assert_problem(help_(helper, owner, ball["id"]), 409, "ball-already-collected")
    collected = owner.post(f"/v1/me/energy/balls/{ball['id']}/collect").json()  # the owner taps it too
    assert (collected["collected"], collected["already_collected"]) == (0, [ball["id"]])
    assert energy(owner)["available"] == ball["amount"]
    await assert_ledger_ok()


async def test_a_friend_cannot_help_with_a_ball_that_is_not_the_owners(client: httpx.Client, owner: Resident,
                                                                       db: object) -> None:
    helper = register(client)
    await befriend(uuid.UUID(owner.holder_id), uuid.UUID(helper.holder_id))
    grow(helper, "clean_plate")
    (own,) = balls(helper)
    assert_problem(help_(helper, owner, own["id"]), 404, "ball-not-found")
    assert_problem(help_(helper, owner, 2**62), 404, "ball-not-found")
    assert balls(helper)[0]["state"] == "growing"
    assert_problem(help_(helper, helper, own["id"]), 422, "help-yourself")
    assert_problem(helper.get(f"/v1/friends/{helper.holder_id}/energy/balls"), 403, "not-friends")


async def test_the_owner_can_turn_helping_off_and_on(client: httpx.Client, owner: Resident, db: object) -> None:
    helper = register(client)
    await befriend(uuid.UUID(owner.holder_id), uuid.UUID(helper.holder_id))
    assert owner.get("/v1/me/energy/settings").json() == {"friends_may_collect": True}
    off = owner.patch("/v1/me/energy/settings", json={"friends_may_collect": False})
    assert off.status_code == 200 and off.json() == {"friends_may_collect": False}
    assert owner.get("/v1/me/energy/settings").json() == {"friends_may_collect": False}
    ball = balls(owner)[0]
    assert_problem(help_(helper, owner, ball["id"]), 403, "help-not-allowed")
    assert balls(owner)[0]["state"] == "growing"
    for bad in ({}, {"friends_may_collect": "no"}, {"friends_may_collect": True, "surprise": 1}):
        assert_problem(owner.patch("/v1/me/energy/settings", json=bad), 400)
    assert owner.patch("/v1/me/energy/settings", json={"friends_may_collect": True}).status_code == 200
    assert help_(helper, owner, ball["id"]).status_code == 200
    assert energy(owner)["available"] == ball["amount"]


async def test_a_friend_helps_at_most_the_daily_cap_of_balls(client: httpx.Client, owner: Resident,
                                                             db: object) -> None:
    helper, other = register(client), register(client)
    for friend in (helper, other):
        await befriend(uuid.UUID(owner.holder_id), uuid.UUID(friend.holder_id))
    ripe = balls(owner)
    assert len(ripe) > CAP + 1
    owner.post(f"/v1/me/energy/balls/{ripe[0]['id']}/collect")  # the owner's own collecting does not count
    for ball in ripe[1:CAP + 1]:
        assert help_(helper, owner, ball["id"]).status_code == 200
    refused = help_(helper, owner, ripe[CAP + 1]["id"])
    assert str(CAP) in assert_problem(refused, 429, "help-cap-reached")["detail"]
    assert 0 < int(refused.headers["Retry-After"]) <= 86_401  # until the owner's midnight
    assert next(b for b in balls(owner) if b["id"] == ripe[CAP + 1]["id"])["state"] == "growing"
    # The cap is per friend: another friend may still help.
    assert help_(other, owner, ripe[CAP + 1]["id"]).status_code == 200
    expected = sum(b["amount"] for b in ripe[:CAP + 2])
    assert energy(owner)["available"] == expected
    assert energy(helper)["available"] == energy(other)["available"] == 0
    await assert_ledger_ok()


async def test_helps_racing_past_the_daily_cap_stop_exactly_at_it(client: httpx.Client, base_url: str,
                                                                  owner: Resident, db: object) -> None:
    helper = register(client)
    await befriend(uuid.UUID(owner.holder_id), uuid.UUID(helper.holder_id))
    ids = iter(b["id"] for b in balls(owner))  # eight ripe balls, one help each, all at once
    lock = threading.Lock()

    def act(http: httpx.Client) -> httpx.Response:
        with lock:
            ball_id = next(ids)
        return http.post(f"/v1/friends/{owner.holder_id}/energy/balls/{ball_id}/help", headers=helper.headers)

    answers = race(8, lambda: httpx.Client(base_url=base_url, timeout=30), act)
    assert sorted(a.status_code for a in answers) == [200] * CAP + [429] * (8 - CAP), [a.text for a in answers]
    helped = sum(a.json()["collected"] for a in answers if a.status_code == 200)
    assert energy(owner)["available"] == helped
    assert sum(b["collected_by_friend"] for b in balls(owner)) == CAP
    await assert_ledger_ok()
