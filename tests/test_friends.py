"""Friends over HTTP: a request by phone or e-mail gets the same answer (status and whole body) whoever the
address belongs to, and is rate-limited; invite codes make friends at once, are forgiving to type, rotate, and
cannot be used by someone the owner blocked (the same 404 as an unknown code); accept, decline (the sender is
not told), withdraw, remove and block/unblock act on both sides; crossed requests, even at the same moment,
make one friendship; the inbox tells the right side; a deleted account leaves no friendships behind."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx

from gamification.codes import ALPHABET
from gamification.friends.service import are_friends
from tests.support import (
    PASSWORD,
    Resident,
    assert_problem,
    deliver_pending_events,
    race,
    register,
    unique_email,
    unique_phone,
)
from wallet.db import connection


def code_of(r: Resident) -> str:
    response = r.get("/v1/me/friends/invite-code")
    assert response.status_code == 200, response.text
    return response.json()["code"]


def ask(r: Resident, **address: str) -> httpx.Response:
    return r.post("/v1/me/friends/requests", json=address)


def friend_ids(r: Resident) -> list[str]:
    response = r.get("/v1/me/friends")
    assert response.status_code == 200, response.text
    return [f["holder_id"] for f in response.json()]


def requests_of(r: Resident) -> dict[str, list[dict[str, Any]]]:
    response = r.get("/v1/me/friends/requests")
    assert response.status_code == 200, response.text
    return response.json()


def befriend_by_code(a: Resident, b: Resident) -> None:
    assert a.post("/v1/me/friends/by-code", json={"code": code_of(b)}).status_code == 200


def inbox_kinds(r: Resident) -> list[str]:
    return [m["kind"] for m in r.get("/v1/me/inbox").json()["items"]]


def without_request_identity(problem: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in problem.items() if k not in ("instance", "request_id")}


def test_a_request_answers_the_same_whoever_the_address_belongs_to(client: httpx.Client) -> None:
    me = register(client, email=unique_email("asker"))
    someone = register(client)
    by_phone = register(client, phone=unique_phone())
    blocker = register(client)
    friend = register(client)
    assert blocker.post("/v1/me/blocks", json={"holder_id": me.holder_id}).status_code == 200
    befriend_by_code(me, friend)
    phone = by_phone.login
    addresses = [
        {"email": someone.login}, {"email": someone.login.upper()}, {"email": unique_email("nobody")},
        {"phone": f"+86 {phone[:3]} {phone[3:7]} {phone[7:]}"}, {"phone": unique_phone()},
        {"email": blocker.login}, {"email": friend.login}, {"email": me.login},
    ]
    answers = [ask(me, **address) for address in addresses]
    assert {r.status_code for r in answers} == {202}
    assert all(r.json() == answers[0].json() for r in answers), [r.json() for r in answers]
    assert answers[0].json()["status"] == "sent"
    # Behind the uniform answer: only the two residents who may receive a request got one, once each.
    assert [i["holder_id"] for i in requests_of(someone)["incoming"]] == [me.holder_id]
    assert [i["holder_id"] for i in requests_of(by_phone)["incoming"]] == [me.holder_id]
    for nobody in (blocker, friend, me):
        assert requests_of(nobody)["incoming"] == []
    # My sent list cannot tell who is registered: an unused address and one whose owner blocked me are listed
    # like the others (masked); only my friend's and my own address, which I know, are not.
    outgoing = sorted(o["to"] for o in requests_of(me)["outgoing"])
    nobody_email, nobody_phone = addresses[2]["email"], addresses[4]["phone"]
    assert outgoing == sorted([f"{someone.login[0]}***@example.com", f"{phone[:3]}****{phone[-4:]}",
                               f"{nobody_email[0]}***@example.com", f"{nobody_phone[:3]}****{nobody_phone[-4:]}",
                               f"{blocker.login[0]}***@example.com"]), outgoing


def test_only_addresses_that_cannot_be_one_are_refused(client: httpx.Client) -> None:
    me = register(client)
    assert_problem(ask(me, email="not an address"), 422, "invalid-email")
    assert_problem(ask(me, phone="12345"), 422, "invalid-phone")
    assert_problem(ask(me, email="a\u0000b@example.com"), 422, "invalid-email")
    assert_problem(ask(me), 422, "one-address")
    assert_problem(ask(me, email=unique_email(), phone=unique_phone()), 422, "one-address")
    assert_problem(me.post("/v1/me/friends/requests", json={"email": 5}), 400, "invalid-request")


def test_requests_are_rate_limited_per_resident(client: httpx.Client) -> None:
    me, other = register(client), register(client)
    for _ in range(20):
        assert ask(me, email=unique_email("probe")).status_code == 202
    refused = ask(me, email=unique_email("probe"))
    assert_problem(refused, 429, "rate-limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    assert ask(other, email=unique_email("probe")).status_code == 202


def test_an_invite_code_makes_friends_at_once_and_is_forgiving_to_type(client: httpx.Client) -> None:
    owner = register(client, nickname="林小绿")
    assert owner.patch("/v1/me", json={"avatar_url": "https://img.example.com/lin.png"}).status_code == 200
    guest = register(client)
    code = code_of(owner)
    assert code == code_of(owner), "made once, then the same"
    assert re.fullmatch(f"[{ALPHABET}]{{10}}", code)
    typed = f" {code[:5].lower()}-{code[5:].lower()} ".replace("1", "l").replace("0", "o")
    first = guest.post("/v1/me/friends/by-code", json={"code": typed})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["added"] is True
    assert body["friend"]["holder_id"] == owner.holder_id
    assert (body["friend"]["nickname"], body["friend"]["avatar_url"]) == ("林小绿", "https://img.example.com/lin.png")
    assert friend_ids(guest) == [owner.holder_id] and friend_ids(owner) == [guest.holder_id]
    again = guest.post("/v1/me/friends/by-code", json={"code": code})
    assert again.json()["added"] is False and again.json()["friend"] == body["friend"]
    assert_problem(owner.post("/v1/me/friends/by-code", json={"code": code}), 422, "own-invite-code")
    assert_problem(guest.post("/v1/me/friends/by-code", json={"code": "ABC"}), 422, "invalid-invite-code")


def test_a_rotated_code_replaces_the_old_one_and_unknown_codes_are_not_found(client: httpx.Client) -> None:
    owner, late, friend = register(client), register(client), register(client)
    old = code_of(owner)
    assert friend.post("/v1/me/friends/by-code", json={"code": old}).status_code == 200
    rotated = owner.post("/v1/me/friends/invite-code/rotate")
    assert rotated.status_code == 200
    new = rotated.json()["code"]
    assert new != old and code_of(owner) == new
    assert_problem(late.post("/v1/me/friends/by-code", json={"code": old}), 404, "invite-code-not-found")
    assert_problem(late.post("/v1/me/friends/by-code", json={"code": "ZZZZZZZZZZ"}), 404, "invite-code-not-found")
    assert late.post("/v1/me/friends/by-code", json={"code": new}).status_code == 200
    assert set(friend_ids(owner)) == {friend.holder_id, late.holder_id}, "friends made with the old code stay"


def test_adds_by_code_are_rate_limited(client: httpx.Client) -> None:
    me = register(client)
    for _ in range(30):
        assert_problem(me.post("/v1/me/friends/by-code", json={"code": "ZZZZZZZZZZ"}), 404)
    assert_problem(me.post("/v1/me/friends/by-code", json={"code": "ZZZZZZZZZZ"}), 429, "rate-limited")


def test_a_blocked_resident_cannot_tell_a_blocking_code_from_an_unknown_one(client: httpx.Client) -> None:
    owner, blocked = register(client), register(client)
    code = code_of(owner)
    assert owner.post("/v1/me/blocks", json={"holder_id": blocked.holder_id}).status_code == 200
    refused = assert_problem(blocked.post("/v1/me/friends/by-code", json={"code": code}), 404)
    unknown = assert_problem(blocked.post("/v1/me/friends/by-code", json={"code": "ZZZZZZZZZZ"}), 404)
    assert without_request_identity(refused) == without_request_identity(unknown)
    assert_problem(owner.post("/v1/me/friends/by-code", json={"code": code_of(blocked)}), 409, "blocked-by-you")
    assert friend_ids(owner) == [] and friend_ids(blocked) == []


async def test_an_accepted_request_makes_friends_and_tells_both(client: httpx.Client, db: object) -> None:
    sender, recipient = register(client, nickname="王骑行"), register(client, nickname="陈光盘")
    assert ask(sender, email=recipient.login).status_code == 202
    (incoming,) = requests_of(recipient)["incoming"]
    assert (incoming["holder_id"], incoming["nickname"]) == (sender.holder_id, "王骑行")
    (outgoing,) = requests_of(sender)["outgoing"]
    assert outgoing["id"] == incoming["id"] and "holder_id" not in outgoing and "nickname" not in outgoing
    accepted = recipient.post(f"/v1/me/friends/requests/{incoming['id']}/accept")
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["holder_id"] == sender.holder_id
    assert recipient.post(f"/v1/me/friends/requests/{incoming['id']}/accept").json() == accepted.json()
    assert friend_ids(sender) == [recipient.holder_id] and friend_ids(recipient) == [sender.holder_id]
    assert requests_of(sender) == {"incoming": [], "outgoing": []} == requests_of(recipient)
    await deliver_pending_events()
    assert "friend_requested" in inbox_kinds(recipient) and "friend_accepted" in inbox_kinds(sender)
    message = next(m for m in sender.get("/v1/me/inbox").json()["items"] if m["kind"] == "friend_accepted")
    assert "陈光盘" in message["title"]
    async with connection() as conn:
        assert await are_friends(conn, uuid.UUID(sender.holder_id), uuid.UUID(recipient.holder_id))


async def test_adding_by_code_tells_both_sides(client: httpx.Client, db: object) -> None:
    owner, guest = register(client, nickname="Owner"), register(client, nickname="Guest", language="en")
    befriend_by_code(guest, owner)
    await deliver_pending_events()
    assert "friend_added_you" in inbox_kinds(owner) and "friend_added" in inbox_kinds(guest)
    title = next(m["title"] for m in guest.get("/v1/me/inbox").json()["items"] if m["kind"] == "friend_added")
    assert title == "You and Owner are friends"


def test_a_declined_request_is_gone_for_the_recipient_and_still_waiting_for_the_sender(client: httpx.Client) -> None:
    sender, recipient = register(client), register(client)
    ask(sender, email=recipient.login)
    (incoming,) = requests_of(recipient)["incoming"]
    assert recipient.post(f"/v1/me/friends/requests/{incoming['id']}/decline").status_code == 204
    assert recipient.post(f"/v1/me/friends/requests/{incoming['id']}/decline").status_code == 204
    assert requests_of(recipient)["incoming"] == []
    assert [o["id"] for o in requests_of(sender)["outgoing"]] == [incoming["id"]], "the sender is not told"
    assert_problem(recipient.post(f"/v1/me/friends/requests/{incoming['id']}/accept"), 404, "request-not-found")
    assert ask(sender, email=recipient.login).status_code == 202
    assert requests_of(recipient)["incoming"] == [], "asking again while declined changes nothing"
    # Withdrawn, it may be asked again, and the recipient sees the new request.
    assert sender.delete(f"/v1/me/friends/requests/{incoming['id']}").status_code == 204
    assert requests_of(sender)["outgoing"] == []
    ask(sender, email=recipient.login)
    assert [i["holder_id"] for i in requests_of(recipient)["incoming"]] == [sender.holder_id]


def test_a_withdrawn_request_cannot_be_accepted_and_others_cannot_touch_it(client: httpx.Client) -> None:
    sender, recipient, stranger = register(client), register(client), register(client)
    ask(sender, email=recipient.login)
    request_id = requests_of(sender)["outgoing"][0]["id"]
    assert_problem(stranger.delete(f"/v1/me/friends/requests/{request_id}"), 404, "request-not-found")
    assert_problem(stranger.post(f"/v1/me/friends/requests/{request_id}/accept"), 404, "request-not-found")
    assert_problem(sender.post(f"/v1/me/friends/requests/{request_id}/accept"), 404, "request-not-found")
    assert_problem(recipient.delete(f"/v1/me/friends/requests/{request_id}"), 404, "request-not-found")
    assert sender.delete(f"/v1/me/friends/requests/{request_id}").status_code == 204
    assert sender.delete(f"/v1/me/friends/requests/{request_id}").status_code == 204
    assert requests_of(recipient)["incoming"] == []
    assert_problem(recipient.post(f"/v1/me/friends/requests/{request_id}/accept"), 404, "request-not-found")
    for bad in ("0", "9223372036854775808"):
        assert_problem(recipient.post(f"/v1/me/friends/requests/{bad}/accept"), 404, "request-not-found")


async def test_crossed_requests_make_one_friendship(client: httpx.Client, db: object) -> None:
    a, b = register(client), register(client)
    ask(a, email=b.login)
    assert ask(b, email=a.login).status_code == 202
    assert friend_ids(a) == [b.holder_id] and friend_ids(b) == [a.holder_id]
    assert requests_of(a) == {"incoming": [], "outgoing": []} == requests_of(b)
    await deliver_pending_events()
    assert "friend_accepted" in inbox_kinds(a), "my request was answered by theirs"


async def test_requests_crossing_at_the_same_moment_make_one_friendship(client: httpx.Client, base_url: str,
                                                                        db: object) -> None:
    for _ in range(3):
        a, b = register(client), register(client)
        pairs = [(a, b), (b, a)] * 3
        turn = iter(range(len(pairs)))

        def act(http: httpx.Client, pairs: list[tuple[Resident, Resident]] = pairs,
                turn: Any = turn) -> httpx.Response:
            me, them = pairs[next(turn)]
            return http.post("/v1/me/friends/requests", json={"email": them.login}, headers=me.headers)

        assert {r.status_code for r in race(len(pairs), lambda: httpx.Client(base_url=base_url), act)} == {202}
        assert friend_ids(a) == [b.holder_id] and friend_ids(b) == [a.holder_id]
        async with connection() as conn:
            rows = await conn.fetch(
                "SELECT status FROM friend_request WHERE from_holder = ANY($1::uuid[])",
                [uuid.UUID(a.holder_id), uuid.UUID(b.holder_id)])
        assert [r["status"] for r in rows] == ["accepted"], rows


def test_removing_a_friend_ends_the_friendship_on_both_sides(client: httpx.Client) -> None:
    a, b, c = register(client), register(client), register(client)
    befriend_by_code(a, b)
    befriend_by_code(a, c)
    assert a.delete(f"/v1/me/friends/{b.holder_id}").status_code == 204
    assert friend_ids(a) == [c.holder_id] and friend_ids(b) == []
    assert_problem(a.delete(f"/v1/me/friends/{b.holder_id}"), 404, "friend-not-found")
    assert_problem(b.delete(f"/v1/me/friends/{c.holder_id}"), 404, "friend-not-found")
    assert_problem(a.delete(f"/v1/me/friends/{a.holder_id}"), 404, "friend-not-found")


def test_a_block_ends_everything_between_two_residents_until_lifted(client: httpx.Client) -> None:
    me, pest, bystander = register(client), register(client), register(client)
    befriend_by_code(me, pest)
    ask(me, email=bystander.login)
    blocked = me.post("/v1/me/blocks", json={"holder_id": pest.holder_id})
    assert blocked.status_code == 200, blocked.text
    assert blocked.json()["holder_id"] == pest.holder_id
    assert me.post("/v1/me/blocks", json={"holder_id": pest.holder_id}).json() == blocked.json()
    assert friend_ids(me) == [] and friend_ids(pest) == []
    assert [b["holder_id"] for b in me.get("/v1/me/blocks").json()] == [pest.holder_id]
    assert pest.get("/v1/me/blocks").json() == []
    # While it stands, requests either way reach nobody, like requests to an address nobody has (the pest's
    # own list shows it waiting, as it would for such an address).
    assert ask(pest, email=me.login).status_code == 202
    assert requests_of(me)["incoming"] == [] and len(requests_of(pest)["outgoing"]) == 1
    assert ask(me, email=pest.login).status_code == 202
    assert requests_of(pest)["incoming"] == []
    assert len(requests_of(me)["outgoing"]) == 1, "only the bystander's"
    # Lifted: they may ask again (nothing from before comes back).
    assert me.delete(f"/v1/me/blocks/{pest.holder_id}").status_code == 204
    assert_problem(me.delete(f"/v1/me/blocks/{pest.holder_id}"), 404, "block-not-found")
    assert friend_ids(me) == [] and requests_of(me)["incoming"] == []
    ask(pest, email=me.login)
    assert [i["holder_id"] for i in requests_of(me)["incoming"]] == [pest.holder_id]


def test_a_block_ends_requests_in_both_directions_without_telling_the_blocked(client: httpx.Client) -> None:
    me, asker, asked = register(client), register(client), register(client)
    ask(asker, email=me.login)
    ask(me, email=asked.login)
    request_id = requests_of(me)["incoming"][0]["id"]
    for pest in (asker, asked):
        assert me.post("/v1/me/blocks", json={"holder_id": pest.holder_id}).status_code == 200
    assert requests_of(me) == {"incoming": [], "outgoing": []}
    assert requests_of(asked)["incoming"] == []
    assert [o["id"] for o in requests_of(asker)["outgoing"]] == [request_id], "still waiting, as if declined"
    assert_problem(me.post(f"/v1/me/friends/requests/{request_id}/accept"), 404, "request-not-found")


def test_blocking_myself_or_nobody_is_refused(client: httpx.Client) -> None:
    me = register(client)
    assert_problem(me.post("/v1/me/blocks", json={"holder_id": me.holder_id}), 422, "cannot-block-yourself")
    assert_problem(me.post("/v1/me/blocks", json={"holder_id": str(uuid.uuid4())}), 404, "holder-not-found")
    assert_problem(me.delete(f"/v1/me/blocks/{uuid.uuid4()}"), 404, "block-not-found")


async def test_a_deleted_account_leaves_no_friendships_or_requests(client: httpx.Client, db: object) -> None:
    leaving, friend, asked = register(client), register(client), register(client)
    befriend_by_code(friend, leaving)
    ask(leaving, email=asked.login)
    gone = leaving.delete("/v1/me", json={"password": PASSWORD, "confirm": "DELETE"})
    assert gone.status_code == 204, gone.text
    assert friend_ids(friend) == [] and requests_of(asked)["incoming"] == []
    await deliver_pending_events()
    async with connection() as conn:
        left = await conn.fetchval(
            "SELECT count(*) FROM friendship WHERE holder_a = $1 OR holder_b = $1", uuid.UUID(leaving.holder_id))
    assert left == 0
