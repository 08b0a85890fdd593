"""Delivering what notify() planned, against the real PostgreSQL and Valkey and the fake FCM and APNs servers of
push_support: the exact push each provider receives (the resident's language, the deep link, the unread count as
badge, our message id), the live event published; dedupe of a repeated event and of steps run twice or at once;
provider errors retried with backoff or Retry-After and given up as dead letters operators list; dead tokens
pruned with the pushes still waiting for them, except when most of a platform's tokens die at once; and a real
worker killed -9 while a push is in flight loses nothing: the lease expires and the next step sends it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from gamification.leaderboards.follow import LOCK as LEADERBOARD_LOCK
from notifications.channels.apns import apns_id
from notifications.channels.log import LogChannel
from notifications.delivery.send import Sender
from notifications.notify import notify_many
from tests.notification_support import (
    UNREGISTERED,
    Providers,
    deliveries,
    device_ids,
    fcm_error,
    live_events,
    next_events,
    phone,
    providers,
    push_of,
    settle_leftovers,
    tell,
)
from tests.push_support import BUNDLE_ID, PROJECT_ID, Reply
from tests.support import Resident, WorkerProcess, assert_problem, register
from wallet.db import connection

CHALLENGE = {"challenge_id": 7, "challenge": "绿色周", "challenge_en": "Green week",
             "progress": "12.5 千克减排", "progress_en": "12.5 kg CO2e avoided"}


@pytest.fixture
async def fakes(db: object) -> AsyncIterator[Providers]:
    await settle_leftovers()
    async with providers() as p:
        yield p


# --- what reaches the providers and the live stream -------------------------------------------------------


async def test_each_phone_gets_the_exact_push_in_its_residents_language_and_the_live_event_is_published(
        client: httpx.Client, fakes: Providers) -> None:
    ann, bo = register(client, language="en"), register(client)  # bo reads zh-CN
    ann_phone, ann_token = phone(ann, "fcm")
    bo_phone, bo_token = phone(bo, "apns")
    earlier = await tell(ann.holder_id, "welcome")  # ann has two unread messages when the push goes out
    pubsub = await live_events(fakes.redis, ann.holder_id, bo.holder_id)
    event = uuid.uuid4()
    async with connection() as conn:
        assert await notify_many(conn, [uuid.UUID(ann.holder_id), uuid.UUID(bo.holder_id)], "challenge_met",
                                 CHALLENGE, event_id=event) == 2
        rows = await conn.fetch("SELECT id, holder_id, created_at FROM inbox_message WHERE event_id = $1", event)
    msg = {str(r["holder_id"]): r for r in rows}
    ann_msg, bo_msg = msg[ann.holder_id]["id"], msg[bo.holder_id]["id"]

    await fakes.sender().step()

    assert fakes.problems == []
    [_, fcm] = fakes.google.to(ann_token)  # the welcome first, then the challenge
    assert fcm == {
        "token": ann_token,
        "notification": {"title": "Challenge met: Green week",
                         "body": "“Green week” reached its goal with 12.5 kg CO2e avoided in all. "
                                 "Thank you for taking part."},
        "data": {"kind": "challenge_met", "trigger": "challenge_finished", "inbox_id": str(ann_msg),
                 "deep_link": "carbonwallet://challenges/7", "message_id": f"inbox-{ann_msg}"},
        "android": {"ttl": "86400s", "collapse_key": "challenge_finished", "notification": {"notification_count": 2}},
    }
    [apns] = fakes.apple.to(bo_token)
    assert {k: v for k, v in apns.headers.items() if k in ("apns-topic", "apns-id", "apns-collapse-id")} == {
        "apns-topic": BUNDLE_ID, "apns-id": apns_id(f"inbox-{bo_msg}"), "apns-collapse-id": "challenge_finished"}
    assert apns.body == {
        "kind": "challenge_met", "trigger": "challenge_finished", "inbox_id": str(bo_msg),
        "aps": {"alert": {"title": "挑战成功：绿色周",
                          "body": "「绿色周」达成了目标！大家一共完成了12.5 千克减排，感谢你的参与。"},
                "badge": 1, "sound": "default"},
        "deep_link": "carbonwallet://challenges/7",
    }
    ann_push, bo_push = await push_of(ann_msg, ann_phone), await push_of(bo_msg, bo_phone)
    assert (ann_push["state"], ann_push["attempts"]) == ("sent", 1)
    assert ann_push["provider_id"] == f"projects/{PROJECT_ID}/messages/0:2%fake"
    assert (bo_push["state"], bo_push["provider_id"]) == ("sent", apns_id(f"inbox-{bo_msg}"))
    assert (await push_of(earlier, ann_phone))["state"] == "sent"

    events = await next_events(pubsub, 3)
    await pubsub.aclose()
    by_message = {e["id"]: (channel, e) for channel, e in events}
    assert by_message[bo_msg] == (f"holder:{bo.holder_id}", {
        "id": bo_msg, "kind": "challenge_met", "trigger": "challenge_finished", "title": "挑战成功：绿色周",
        "body": "「绿色周」达成了目标！大家一共完成了12.5 千克减排，感谢你的参与。", "link": "carbonwallet://challenges/7",
        "created_at": msg[bo.holder_id]["created_at"].isoformat(), "unread": 1})
    channel, ann_event = by_message[ann_msg]
    assert (channel, ann_event["title"], ann_event["unread"]) == (f"holder:{ann.holder_id}",
                                                                  "Challenge met: Green week", 2)
    assert (await deliveries(ann_msg))["live"]["state"] == "sent"


async def test_a_platform_without_its_provider_configured_goes_to_the_log_channel(
        client: httpx.Client, fakes: Providers) -> None:
    resident = register(client)
    device, _ = phone(resident, "apns")
    message = await tell(resident.holder_id, "welcome")

    await Sender({"log": LogChannel()}, fakes.redis).step()

    assert (await push_of(message, device))["provider_id"] == f"inbox-{message}"
    assert fakes.apple.requests == []


# --- dedupe -------------------------------------------------------------------------------------------


async def test_the_same_event_told_twice_or_at_once_makes_one_message_and_one_delivery_per_phone(
        client: httpx.Client, fakes: Providers) -> None:
    resident = register(client)
    (a, token_a), (b, token_b) = phone(resident, "fcm"), phone(resident, "apns")
    event = uuid.uuid4()

    async def once() -> int:
        async with connection() as conn:
            return await notify_many(conn, [uuid.UUID(resident.holder_id)], "badge_earned",
                                     {"badge": "第一次骑行", "badge_en": "First ride"}, event_id=event)

    assert sorted(await asyncio.gather(once(), once(), once())) == [0, 0, 1]
    assert await once() == 0
    message = await tell(resident.holder_id, "badge_earned", event=event)  # the same event again: the same message
    assert set(await deliveries(message)) == {"live", f"push:{a}", f"push:{b}"}

    await fakes.sender().step()
    assert (await fakes.sender().step()).claimed == 0
    assert (len(fakes.google.to(token_a)), len(fakes.apple.to(token_b))) == (1, 1)


async def test_steps_run_at_once_and_again_send_each_delivery_exactly_once(
        client: httpx.Client, fakes: Providers) -> None:
    residents = [register(client) for _ in range(3)]
    phones = {r.holder_id: [phone(r, "fcm"), phone(r, "apns")] for r in residents}
    messages = [await tell(r.holder_id, kind) for r in residents for kind in ("welcome", "password_changed")]
    sender = fakes.sender(batch=4, concurrency=2)  # several steps' worth of work: they must split it

    for _ in range(3):
        await asyncio.gather(sender.step(), sender.step(), fakes.sender().step())
    await sender.step()

    for r in residents:
        (_, fcm), (_, apns) = phones[r.holder_id]
        assert (len(fakes.google.to(fcm)), len(fakes.apple.to(apns))) == (2, 2)
    for message in messages:
        assert {(d["state"], d["attempts"]) for d in (await deliveries(message)).values()} == {("sent", 1)}
    assert fakes.problems == []


async def test_a_shard_sends_only_its_residents_so_no_resident_is_sent_to_by_two_senders_at_once(
        client: httpx.Client, fakes: Providers) -> None:
    """The worker runs one sender per shard of residents at a time (a Redis lock each); a step of one shard must
    leave every other resident's deliveries to their own shard."""
    residents = [register(client) for _ in range(8)]
    tokens = {r.holder_id: phone(r)[1] for r in residents}
    for r in residents:
        await tell(r.holder_id, "welcome")
    async with connection() as conn:
        shard_of = {str(r["id"]): r["shard"] for r in await conn.fetch(
            "SELECT id, mod(abs(hashtext(id::text)), 3) AS shard FROM holder WHERE id = ANY($1::uuid[])",
            [uuid.UUID(r.holder_id) for r in residents])}
    for shard in range(3):
        await fakes.sender().step(shard=shard, shards=3)
        for holder, token in tokens.items():
            assert len(fakes.google.to(token)) == (1 if shard_of[holder] <= shard else 0), (holder, shard)
    assert fakes.problems == []


# --- provider failure and retry -------------------------------------------------------------------------


async def test_provider_errors_are_retried_later_by_backoff_or_retry_after_whichever_is_later_then_dead_letters(
        client: httpx.Client, operator: Resident, fakes: Providers) -> None:
    resident = register(client)
    device, token = phone(resident, "fcm")
    message = await tell(resident.holder_id, "welcome")
    sender = fakes.sender(attempts_max=3, backoff_s=20)
    fakes.google.by_token[token] = fcm_error(503, "UNAVAILABLE", retry_after="90")

    t1 = datetime.now(UTC)
    await sender.step(now=t1)
    first = await push_of(message, device)
    assert (first["state"], first["attempts"], first["claimed_until"]) == ("pending", 1, None)
    assert first["due_at"] == t1 + timedelta(seconds=90)  # Retry-After 90 s beats the first backoff, 20 s
    assert first["reason"] == "UNAVAILABLE: UNAVAILABLE (fake)"
    assert (await sender.step(now=first["due_at"] - timedelta(seconds=1))).claimed == 0

    fakes.google.by_token[token] = fcm_error(429, "RESOURCE_EXHAUSTED", retry_after="5")
    t2 = first["due_at"]
    await sender.step(now=t2)
    second = await push_of(message, device)
    assert (second["state"], second["attempts"]) == ("pending", 2)
    assert second["due_at"] == t2 + timedelta(seconds=40)  # the backoff, 20 s doubled, beats Retry-After 5 s

    fakes.google.by_token[token] = fcm_error(500, "INTERNAL")
    await sender.step(now=second["due_at"])
    dead = await push_of(message, device)
    assert (dead["state"], dead["attempts"]) == ("dead", 3)
    assert dead["reason"] == "gave up after 3 attempts: INTERNAL: INTERNAL (fake)"
    assert len(fakes.google.to(token)) == 3
    assert (await deliveries(message))["live"]["state"] == "sent"  # the live stream was not held back by it

    r = operator.get("/v1/admin/notifications/dead-letters", params={"limit": 1000})
    assert r.status_code == 200, r.text
    [letter] = [x for x in r.json() if x["delivery_id"] == dead["id"]]
    assert letter == {"delivery_id": dead["id"], "message_id": message, "holder_id": resident.holder_id,
                      "kind": "welcome", "channel": "push", "attempts": 3, "reason": dead["reason"],
                      "failed_at": letter["failed_at"]}
    assert_problem(resident.get("/v1/admin/notifications/dead-letters"), 403)


async def test_a_refusal_that_will_not_heal_is_dead_at_once(client: httpx.Client, fakes: Providers) -> None:
    resident = register(client)
    device, token = phone(resident, "apns")
    fakes.apple.by_token[token] = Reply(400, {"reason": "TopicDisallowed"})
    message = await tell(resident.holder_id, "welcome")

    await fakes.sender().step()

    dead = await push_of(message, device)
    assert (dead["state"], dead["attempts"], dead["reason"]) == ("dead", 1, "apns refused: TopicDisallowed")
    assert await device_ids(resident.holder_id) == {device}  # our mistake, not the phone's: the token stays


# --- dead tokens ----------------------------------------------------------------------------------------


async def test_a_dead_token_prunes_its_phone_and_skips_the_pushes_still_waiting_for_it(
        client: httpx.Client, fakes: Providers) -> None:
    resident = register(client)
    (gone_fcm, fcm), (gone_ios, ios), (kept, ok) = phone(resident, "fcm"), phone(resident, "apns"), phone(resident,
                                                                                                          "apns")
    fakes.google.by_token[fcm] = UNREGISTERED
    fakes.apple.by_token[ios] = Reply(410, {"reason": "Unregistered", "timestamp": 1_700_000_000_000})
    first = await tell(resident.holder_id, "welcome")
    later = await tell(resident.holder_id, "password_changed")
    async with connection() as conn:  # the second message's pushes wait (as a deferred or retried one would)
        await conn.execute("UPDATE delivery SET due_at = now() + interval '1 hour' WHERE message = $1", later)

    await fakes.sender().step()

    assert await device_ids(resident.holder_id) == {kept}
    sent = await deliveries(first)
    assert (sent[f"push:{gone_fcm}"]["state"], sent[f"push:{gone_fcm}"]["reason"]) == (
        "skipped", "invalid-token: UNREGISTERED: Requested entity was not found.")
    assert (sent[f"push:{gone_ios}"]["state"], sent[f"push:{gone_ios}"]["reason"]) == (
        "skipped", "invalid-token: Unregistered")
    assert sent[f"push:{kept}"]["state"] == "sent" and len(fakes.apple.to(ok)) == 1
    waiting = await deliveries(later)
    assert {k: (d["state"], d["reason"]) for k, d in waiting.items()} == {
        f"push:{gone_fcm}": ("skipped", "device-removed"), f"push:{gone_ios}": ("skipped", "device-removed"),
        f"push:{kept}": ("pending", None), "live": ("pending", None)}


async def test_most_tokens_of_a_platform_dying_at_once_are_kept_and_given_up_as_suspected_misconfiguration(
        client: httpx.Client, operator: Resident, fakes: Providers) -> None:
    residents = [register(client) for _ in range(2)]
    phones = [phone(r, "fcm") for r in residents for _ in range(2)]
    fakes.google.always = UNREGISTERED  # e.g. the wrong Firebase project configured
    messages = [await tell(r.holder_id, "welcome") for r in residents]

    await fakes.sender(prune_guard=3).step()

    for r, two in zip(residents, (phones[:2], phones[2:]), strict=True):
        assert await device_ids(r.holder_id) == {d for d, _ in two}
    pushes = [d for m in messages for k, d in (await deliveries(m)).items() if k != "live"]
    reason = "not pruned, suspected misconfiguration: invalid-token: UNREGISTERED: Requested entity was not found."
    assert {(d["state"], d["reason"]) for d in pushes} == {("dead", reason)}
    letters = {x["delivery_id"] for x in operator.get("/v1/admin/notifications/dead-letters",
                                                      params={"limit": 1000}).json()}
    assert {d["id"] for d in pushes} <= letters


async def test_a_push_waiting_for_a_phone_that_moved_to_another_account_is_not_shown_on_it(
        client: httpx.Client, fakes: Providers) -> None:
    before, after = register(client), register(client)
    device, token = phone(before)
    message = await tell(before.holder_id, "password_changed")  # waiting for that phone
    r = after.post("/v1/me/devices", json={"platform": "fcm", "token": token})  # the phone is signed in to after
    assert r.status_code == 200 and r.json()["id"] == device, r.text

    await fakes.sender().step()

    assert [m["data"]["inbox_id"] for m in fakes.google.to(token)] == []
    assert (await push_of(message, device))["state"] == "skipped"


async def test_a_message_that_cannot_be_rendered_is_given_up_without_holding_back_the_others(
        client: httpx.Client, fakes: Providers) -> None:
    owner, other = register(client), register(client)
    phone(owner)
    other_phone, other_token = phone(other)
    broken = await tell(owner.holder_id, "badge_earned", {})  # its title needs {badge} / {badge_en}
    fine = await tell(other.holder_id, "welcome")

    await fakes.sender(concurrency=1).step()  # one resident at a time: nothing left in flight if it raises

    sent = await push_of(fine, other_phone)
    assert (sent["state"], len(fakes.google.to(other_token))) == ("sent", 1)
    assert all(d["state"] in ("dead", "skipped") and d["reason"] for d in (await deliveries(broken)).values())


# --- nothing lost when the worker dies mid-send ---------------------------------------------------------


async def test_a_worker_killed_while_its_push_is_in_flight_loses_nothing_the_next_step_sends_it_after_the_lease(
        client: httpx.Client, work_dir: Path, tmp_path: Path, fakes: Providers) -> None:
    """A real arq worker against a fake FCM that holds the push unanswered; SIGKILL; the delivery keeps its
    lease (nobody sends it twice meanwhile), then a step after the lease sends it."""
    resident = register(client)
    device, token = phone(resident, "fcm")
    message = await tell(resident.holder_id, "badge_earned", {"badge": "第一次骑行", "badge_en": "First ride"})
    fakes.google.hold = f'"inbox-{message}"'  # quoted: not a prefix of another id
    account = tmp_path / "fcm.json"
    account.write_text(json.dumps({**fakes.google.service_account(), "token_uri": fakes.google.token_uri}))
    worker = WorkerProcess(work_dir, CW_FCM_SERVICE_ACCOUNT_FILE=str(account),
                           CW_FCM_BASE_URL=fakes.google.base_url).start()
    try:
        try:
            await asyncio.wait_for(fakes.google.held.wait(), 60)
        except TimeoutError:
            raise AssertionError(worker.log_path.read_text()[-3000:]) from None
        worker.kill()
    finally:
        worker.stop()
    # The worker may have died inside the leaderboard follower (every second), whose Redis lock would then keep
    # later tests' event handlers waiting up to 300 s; nothing else holds it in this session, so free it.
    await fakes.redis.delete(LEADERBOARD_LOCK)
    fakes.google.release.set()  # the provider answers the dead connection: nobody hears it

    in_flight = await push_of(message, device)
    assert (in_flight["state"], in_flight["attempts"], in_flight["reason"]) == ("pending", 1, None)
    assert in_flight["claimed_until"] > datetime.now(UTC)  # the dead worker's lease
    await fakes.sender().step()
    assert (await push_of(message, device))["state"] == "pending"  # not sent again while the lease holds

    await fakes.sender().step(now=in_flight["claimed_until"] + timedelta(seconds=1))

    after = await push_of(message, device)
    assert (after["state"], after["attempts"], after["claimed_until"]) == ("sent", 2, None)
    sends = [s for s in fakes.google.to(token) if s["data"]["message_id"] == f"inbox-{message}"]
    assert len(sends) == 2  # the held one (maybe shown) and the resend: same id, so the app shows one
    assert {s["data"]["message_id"] for s in sends} == {f"inbox-{message}"}
    assert (await deliveries(message))["live"]["state"] == "sent"
