"""Friendships: invite codes, requests by phone or e-mail, accepting, declining, cancelling, removing, blocking.

What holds, and why:
- A friendship is stored once per pair (`holder_a < holder_b`), so "are these two friends" is one probe.
- Every change to a pair (a request, an accept, an add by code, a removal, a block) runs under one
  transaction-scoped advisory lock on the pair: A asking B while B asks A ends in one friendship, never in
  two crossed requests.
- A request by phone or e-mail tells its sender nothing about the address: `request_friend` returns nothing,
  whether the address is unknown, the recipient blocks the sender, they are friends already, or it is the
  sender. Sharing an invite code is consent, so adding by code makes friends at once.
- A declined request stays "waiting" for its sender (they are not told), and so does a request to someone
  who then blocks its sender; the recipient no longer sees either. A block ends the friendship and every
  request both ways; while it stands neither side can request the other, and the blocked one's add by the
  blocker's code is refused like an unknown code.
- Events are recorded in the transaction of the change: `friend.requested` (to the recipient),
  `friend.accepted` (to the requester), `friend.added` and `friend.removed` (one per side).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

import asyncpg

from gamification.codes import new_code, read_code
from wallet.db import connection, engine
from wallet.errors import DomainError
from wallet.holders.identity import normalize_email, normalize_phone
from wallet.outbox.service import Event, EventHandler, record_events

__all__ = [
    "FRIENDS_MAX",
    "HANDLERS",
    "LIST_MAX",
    "accept_request",
    "add_by_code",
    "are_friends",
    "befriend",
    "block",
    "blocks_of",
    "cancel_request",
    "decline_request",
    "friends_of",
    "invite_code",
    "mask_address",
    "remove_friend",
    "request_friend",
    "requests_of",
    "rotate_invite_code",
    "unblock",
]

FRIENDS_MAX = 1000  # friends per resident: bounds the friends list and the friends leaderboard
LIST_MAX = 200  # requests shown per direction, newest first
BLOCKS_MAX = 1000
_OPEN = ("pending", "declined")  # what a sender still sees as waiting
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FRIEND_COLUMNS = "h.id AS holder_id, h.nickname, h.avatar_url"


def _pair(a: uuid.UUID, b: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID]:
    return (a, b) if a < b else (b, a)


async def are_friends(conn: asyncpg.Connection, a: uuid.UUID, b: uuid.UUID) -> bool:
    return a != b and await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM friendship WHERE holder_a = $1 AND holder_b = $2)", *_pair(a, b)
    )


async def befriend(a: uuid.UUID, b: uuid.UUID) -> None:
    """Make two residents friends directly (demo data, tests); the product paths are codes and requests."""
    if a == b:
        raise ValueError("a resident cannot befriend themselves")
    async with engine().transaction() as tx:
        await _lock_pair(tx.connection, a, b)
        await _form_friendship(tx.connection, a, b, via="direct", initiator=a)


# --- the pair's building blocks (call inside a transaction holding the pair lock) ----------------------


async def _lock_pair(conn: asyncpg.Connection, a: uuid.UUID, b: uuid.UUID) -> None:
    low, high = _pair(a, b)
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"friends:{low}:{high}")


async def _blockers(conn: asyncpg.Connection, a: uuid.UUID, b: uuid.UUID) -> set[uuid.UUID]:
    rows = await conn.fetch(
        """SELECT blocker FROM friend_block
           WHERE (blocker = $1 AND blocked = $2) OR (blocker = $2 AND blocked = $1)""", a, b)
    return {r["blocker"] for r in rows}


async def _at_limit(conn: asyncpg.Connection, *holders: uuid.UUID) -> bool:
    for holder in holders:
        count = await conn.fetchval(
            "SELECT (SELECT count(*) FROM friendship WHERE holder_a = $1) "
            "+ (SELECT count(*) FROM friendship WHERE holder_b = $1)", holder)
        if count >= FRIENDS_MAX:
            return True
    return False


async def _form_friendship(conn: asyncpg.Connection, a: uuid.UUID, b: uuid.UUID, *, via: str,
                           initiator: uuid.UUID, request_id: int | None = None) -> bool:
    """True when they became friends now. Closes every open request between them: it is answered."""
    if await are_friends(conn, a, b):
        return False
    if await _at_limit(conn, a, b):
        raise DomainError("conflict", "friend-limit-reached",
                          f"One of you already has {FRIENDS_MAX} friends, the most a resident can have.")
    formed = await conn.fetchval(
        """INSERT INTO friendship (holder_a, holder_b, since) VALUES ($1, $2, now())
           ON CONFLICT DO NOTHING RETURNING since""", *_pair(a, b))
    if formed is None:
        return False
    await conn.execute(
        """UPDATE friend_request SET status = 'accepted', resolved_at = now()
           WHERE status = ANY($3::text[]) AND ((from_holder = $1 AND to_holder = $2)
                                               OR (from_holder = $2 AND to_holder = $1))""", a, b, list(_OPEN))
    extra = {} if request_id is None else {"request_id": request_id}
    await record_events([
        ("friend.added", {"friend_id": str(b), "via": via, "initiated": initiator == a, **extra}, a),
        ("friend.added", {"friend_id": str(a), "via": via, "initiated": initiator == b, **extra}, b),
    ])
    return True


async def _end_friendship(conn: asyncpg.Connection, a: uuid.UUID, b: uuid.UUID, *, reason: str) -> bool:
    ended = await conn.fetchval(
        "DELETE FROM friendship WHERE holder_a = $1 AND holder_b = $2 RETURNING since", *_pair(a, b))
    if ended is None:
        return False
    await record_events([
        ("friend.removed", {"friend_id": str(b), "reason": reason}, a),
        ("friend.removed", {"friend_id": str(a), "reason": reason}, b),
    ])
    return True


async def _friend(conn: asyncpg.Connection, me: uuid.UUID, other: uuid.UUID) -> dict[str, Any]:
    row = await conn.fetchrow(
        f"""SELECT {_FRIEND_COLUMNS}, f.since FROM friendship f JOIN holder h ON h.id = $1
            WHERE f.holder_a = $2 AND f.holder_b = $3""",  # noqa: S608 - constant columns
        other, *_pair(me, other))
    assert row is not None
    return dict(row)


# --- invite codes ---------------------------------------------------------------------------------------


async def invite_code(holder_id: uuid.UUID) -> str:
    """My invite code, made on first read. A new code that collides with another (odds 2^-50) is redrawn."""
    async with connection() as conn:
        for _ in range(5):
            code = await conn.fetchval("SELECT code FROM friend_code WHERE holder = $1", holder_id)
            if code is not None:
                return code
            await conn.execute(
                "INSERT INTO friend_code (holder, code, created_at) VALUES ($1, $2, now()) ON CONFLICT DO NOTHING",
                holder_id, new_code())
    raise DomainError("unavailable", "code-unavailable", "No invite code could be made just now; try again.")


async def rotate_invite_code(holder_id: uuid.UUID) -> str:
    """A new code at once; the old one stops working (friends made with it stay friends)."""
    async with connection() as conn:
        for _ in range(5):
            try:
                return await conn.fetchval(
                    """INSERT INTO friend_code (holder, code, created_at) VALUES ($1, $2, now())
                       ON CONFLICT (holder) DO UPDATE SET code = EXCLUDED.code, created_at = now() RETURNING code""",
                    holder_id, new_code())
            except asyncpg.UniqueViolationError:
                continue
    raise DomainError("unavailable", "code-unavailable", "No invite code could be made just now; try again.")


def _unknown_code() -> DomainError:
    return DomainError("not_found", "invite-code-not-found", "No resident has this invite code; check it and retry.")


async def add_by_code(holder_id: uuid.UUID, raw_code: str) -> dict[str, Any]:
    """Become friends with the code's owner at once. Their `holder_id`, nickname, avatar and `since`, and
    `added` (false when we were friends already). A resident the owner blocks gets the unknown-code 404."""
    code = read_code(raw_code)
    if code is None:
        raise DomainError("invalid", "invalid-invite-code",
                          "An invite code is 10 letters and digits, e.g. 7KX2M9QHPA.", field="code")
    async with engine().transaction() as tx:
        conn = tx.connection
        owner = await conn.fetchval(
            """SELECT c.holder FROM friend_code c JOIN holder h ON h.id = c.holder AND h.status = 'active'
               WHERE c.code = $1""", code)
        if owner is None:
            raise _unknown_code()
        if owner == holder_id:
            raise DomainError("invalid", "own-invite-code", "This is your own invite code: share it with friends.")
        await _lock_pair(conn, holder_id, owner)
        blockers = await _blockers(conn, holder_id, owner)
        if owner in blockers:
            raise _unknown_code()
        if holder_id in blockers:
            raise DomainError("conflict", "blocked-by-you", "You blocked this resident; unblock them first.")
        added = await _form_friendship(conn, holder_id, owner, via="invite_code", initiator=holder_id)
        return {**await _friend(conn, holder_id, owner), "added": added}


# --- requests by phone or e-mail ---------------------------------------------------------------------------


def _address(email: str | None, phone: str | None) -> tuple[str, str]:
    if (email is None) == (phone is None):
        raise DomainError("invalid", "one-address", "Give either an e-mail address or a phone number.")
    raw = email if email is not None else phone
    assert raw is not None
    if _CONTROL.search(raw):
        if email is not None:
            raise DomainError("invalid", "invalid-email", "An e-mail address cannot contain control characters.")
        raise DomainError("invalid", "invalid-phone", "A phone number cannot contain control characters.")
    return ("email", normalize_email(raw)) if email is not None else ("phone", normalize_phone(raw))


def _address_hash(kind: str, value: str) -> bytes:
    return hashlib.sha256(f"{kind}:{value}".encode()).digest()


async def request_friend(holder_id: uuid.UUID, *, email: str | None = None, phone: str | None = None) -> None:
    """Ask whoever has this address. Answers nothing on purpose (see the module note); only an address
    that cannot be one (`invalid-email`, `invalid-phone`) is refused. Every request is stored with the address
    masked, also when nobody can receive it (no such resident, or one who blocked me): my list of sent
    requests looks the same either way. If they had asked me already, we are friends now and they are
    told their request was accepted."""
    kind, value = _address(email, phone)
    masked = mask_address(value if kind == "email" else None, value if kind == "phone" else None)
    digest = _address_hash(kind, value)
    async with connection() as conn:
        target = await conn.fetchval(
            f"SELECT id FROM holder WHERE {kind} = $1 AND status = 'active'", value)  # noqa: S608 - email|phone
    async with engine().transaction() as tx:
        conn = tx.connection
        deliver = target is not None
        if target is not None:
            if target == holder_id:
                return  # my own address: nothing to hide from me
            await _lock_pair(conn, holder_id, target)
            blockers = await _blockers(conn, holder_id, target)
            if holder_id in blockers or await are_friends(conn, holder_id, target):
                return  # I blocked them, or we are friends: I know they are here
            deliver = not blockers  # they blocked me: stored like an unknown address, never delivered
        if deliver:
            theirs = await conn.fetchval(
                "SELECT id FROM friend_request WHERE from_holder = $1 AND to_holder = $2 AND status = 'pending'",
                target, holder_id)
            if theirs is not None:
                if not await _at_limit(conn, holder_id, target):
                    await _accept(conn, theirs, requester=target, accepter=holder_id)
                return
            if await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM friend_request WHERE from_holder = $1 AND to_holder = $2 "
                    "AND status = ANY($3::text[]))", holder_id, target, list(_OPEN)):
                return
        request_id = None
        if deliver:  # one I sent while they had blocked me, and still waiting: it reaches them now
            request_id = await conn.fetchval(
                """UPDATE friend_request SET to_holder = $2, created_at = now() WHERE from_holder = $1
                   AND to_address_hash = $3 AND status = 'pending' AND to_holder IS NULL RETURNING id""",
                holder_id, target, digest)
        request_id = request_id or await conn.fetchval(
            """INSERT INTO friend_request (from_holder, to_holder, to_address_masked, to_address_hash, status,
                                           created_at)
               VALUES ($1, $2, $3, $4, 'pending', now())
               ON CONFLICT (from_holder, to_address_hash) WHERE status = 'pending' DO NOTHING RETURNING id""",
            holder_id, target if deliver else None, masked, digest)
        if request_id is not None and deliver:
            await record_events([("friend.requested", {"request_id": request_id,
                                                       "from_holder_id": str(holder_id)}, target)])


async def _accept(conn: asyncpg.Connection, request_id: int, *, requester: uuid.UUID, accepter: uuid.UUID) -> None:
    await conn.execute("UPDATE friend_request SET status = 'accepted', resolved_at = now() WHERE id = $1", request_id)
    await record_events([("friend.accepted", {"request_id": request_id, "friend_id": str(accepter)}, requester)])
    await _form_friendship(conn, requester, accepter, via="request", initiator=accepter, request_id=request_id)


def _no_request() -> DomainError:
    return DomainError("not_found", "request-not-found", "No open friend request of yours has this id.")


async def accept_request(holder_id: uuid.UUID, request_id: int) -> dict[str, Any]:
    """The new friend. Accepting again answers the same; a declined or withdrawn request is gone (404)."""
    async with engine().transaction() as tx:
        conn = tx.connection
        sender = await conn.fetchval(
            """SELECT r.from_holder FROM friend_request r JOIN holder h ON h.id = r.from_holder AND h.status = 'active'
               WHERE r.id = $1 AND r.to_holder = $2""", request_id, holder_id)
        if sender is None:
            raise _no_request()
        await _lock_pair(conn, holder_id, sender)
        status = await conn.fetchval("SELECT status FROM friend_request WHERE id = $1", request_id)
        if status == "pending" and not await _blockers(conn, holder_id, sender):
            await _accept(conn, request_id, requester=sender, accepter=holder_id)
        elif status != "accepted" or not await are_friends(conn, holder_id, sender):
            raise _no_request()
        return await _friend(conn, holder_id, sender)


async def decline_request(holder_id: uuid.UUID, request_id: int) -> None:
    """The request leaves my list; its sender goes on seeing it as waiting (nobody is told of a decline)."""
    async with connection() as conn:
        status = await conn.fetchval(
            """UPDATE friend_request r SET status = CASE WHEN r.status = 'pending' THEN 'declined' ELSE r.status END,
                   resolved_at = CASE WHEN r.status = 'pending' THEN now() ELSE r.resolved_at END
               WHERE id = $1 AND to_holder = $2 AND status IN ('pending', 'declined') RETURNING status""",
            request_id, holder_id)
    if status is None:
        raise _no_request()


async def cancel_request(holder_id: uuid.UUID, request_id: int) -> None:
    """Withdraw a request I sent (also one that is secretly declined); withdrawing twice is not an error."""
    async with connection() as conn:
        done = await conn.fetchval(
            """UPDATE friend_request SET status = 'cancelled', resolved_at = now()
               WHERE id = $1 AND from_holder = $2 AND status = ANY($3::text[]) RETURNING id""",
            request_id, holder_id, list(_OPEN))
        if done is None and not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM friend_request WHERE id = $1 AND from_holder = $2 "
                "AND status = 'cancelled')", request_id, holder_id):
            raise _no_request()


def mask_address(email: str | None, phone: str | None) -> str:
    """What the sender typed, masked: `l***@example.com`, `138****8000`, `+491****5678`."""
    if email:
        local, domain = email.split("@", 1)
        return f"{local[:1]}***@{domain}"
    if phone and phone.startswith("+86"):
        return f"{phone[3:6]}****{phone[-4:]}"
    if phone:
        return f"{phone[:4]}****{phone[-4:]}"
    return "***"


async def requests_of(holder_id: uuid.UUID) -> dict[str, list[dict[str, Any]]]:
    """Requests waiting for me (with the sender's nickname), and mine still waiting (only the masked address)."""
    async with connection() as conn:
        incoming = await conn.fetch(
            f"""SELECT r.id, r.created_at AS sent_at, {_FRIEND_COLUMNS} FROM friend_request r
                JOIN holder h ON h.id = r.from_holder AND h.status = 'active'
                WHERE r.to_holder = $1 AND r.status = 'pending' ORDER BY r.id DESC LIMIT $2""",  # noqa: S608
            holder_id, LIST_MAX)
        outgoing = await conn.fetch(
            """SELECT r.id, r.created_at AS sent_at, r.to_address_masked FROM friend_request r
               WHERE r.from_holder = $1 AND r.status = ANY($2::text[]) ORDER BY r.id DESC LIMIT $3""",
            holder_id, list(_OPEN), LIST_MAX)
    return {
        "incoming": [dict(r) for r in incoming],
        "outgoing": [{"id": r["id"], "sent_at": r["sent_at"], "to": r["to_address_masked"]} for r in outgoing],
    }


# --- friends and blocks ---------------------------------------------------------------------------------


async def friends_of(holder_id: uuid.UUID) -> list[dict[str, Any]]:
    """Newest friendship first (at most FRIENDS_MAX)."""
    async with connection() as conn:
        rows = await conn.fetch(
            f"""SELECT {_FRIEND_COLUMNS}, f.since FROM friendship f
                JOIN holder h ON h.id = CASE WHEN f.holder_a = $1 THEN f.holder_b ELSE f.holder_a END
                WHERE (f.holder_a = $1 OR f.holder_b = $1) AND h.status = 'active'
                ORDER BY f.since DESC, h.id LIMIT $2""",  # noqa: S608 - constant columns
            holder_id, FRIENDS_MAX)
    return [dict(r) for r in rows]


async def remove_friend(holder_id: uuid.UUID, friend_id: uuid.UUID) -> None:
    """Both sides lose the friendship; the other is not told (but no longer sees me among their friends)."""
    async with engine().transaction() as tx:
        await _lock_pair(tx.connection, holder_id, friend_id)
        if holder_id == friend_id or not await _end_friendship(tx.connection, holder_id, friend_id,
                                                                reason="removed"):
            raise DomainError("not_found", "friend-not-found", "This resident is not one of your friends.")


async def block(holder_id: uuid.UUID, blocked_id: uuid.UUID) -> dict[str, Any]:
    """Ends our friendship and every request between us; blocking again changes nothing."""
    if holder_id == blocked_id:
        raise DomainError("invalid", "cannot-block-yourself", "You cannot block yourself.")
    async with engine().transaction() as tx:
        conn = tx.connection
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM holder WHERE id = $1 AND status = 'active')",
                                   blocked_id):
            raise DomainError("not_found", "holder-not-found", "No resident has this id.")
        await _lock_pair(conn, holder_id, blocked_id)
        await conn.execute(
            """INSERT INTO friend_block (blocker, blocked, created_at) VALUES ($1, $2, now())
               ON CONFLICT DO NOTHING""", holder_id, blocked_id)
        await _end_friendship(conn, holder_id, blocked_id, reason="blocked")
        # Theirs to me is declined (they go on seeing it waiting); mine to them is withdrawn.
        await conn.execute(
            """UPDATE friend_request SET status = 'declined', resolved_at = now()
               WHERE from_holder = $2 AND to_holder = $1 AND status = 'pending'""", holder_id, blocked_id)
        await conn.execute(
            """UPDATE friend_request SET status = 'cancelled', resolved_at = now()
               WHERE from_holder = $1 AND to_holder = $2 AND status = ANY($3::text[])""",
            holder_id, blocked_id, list(_OPEN))
        row = await conn.fetchrow(
            f"""SELECT {_FRIEND_COLUMNS}, b.created_at AS blocked_at FROM friend_block b
                JOIN holder h ON h.id = b.blocked WHERE b.blocker = $1 AND b.blocked = $2""",  # noqa: S608
            holder_id, blocked_id)
    return dict(row)


async def unblock(holder_id: uuid.UUID, blocked_id: uuid.UUID) -> None:
    """They may ask me again; nothing from before comes back."""
    async with connection() as conn:
        if await conn.fetchval("DELETE FROM friend_block WHERE blocker = $1 AND blocked = $2 RETURNING blocked",
                               holder_id, blocked_id) is None:
            raise DomainError("not_found", "block-not-found", "You have not blocked this resident.")


async def blocks_of(holder_id: uuid.UUID) -> list[dict[str, Any]]:
    async with connection() as conn:
        rows = await conn.fetch(
            f"""SELECT {_FRIEND_COLUMNS}, b.created_at AS blocked_at FROM friend_block b
                JOIN holder h ON h.id = b.blocked AND h.status = 'active'
                WHERE b.blocker = $1 ORDER BY b.created_at DESC LIMIT $2""",  # noqa: S608 - constant columns
            holder_id, BLOCKS_MAX)
    return [dict(r) for r in rows]


# --- event handlers ------------------------------------------------------------------------------------


async def forget_deleted_holder(event: Event) -> None:
    """A deleted account keeps no friends, requests, code or blocks; each former friend gets `friend.removed`."""
    holder_id = event.holder_id
    assert holder_id is not None
    async with connection() as conn:
        rows = await conn.fetch(
            """DELETE FROM friendship WHERE holder_a = $1 OR holder_b = $1
               RETURNING CASE WHEN holder_a = $1 THEN holder_b ELSE holder_a END AS friend""", holder_id)
        await conn.execute(
            """UPDATE friend_request SET status = 'cancelled', resolved_at = now()
               WHERE status = ANY($2::text[]) AND (from_holder = $1 OR to_holder = $1)""", holder_id, list(_OPEN))
        await conn.execute("DELETE FROM friend_code WHERE holder = $1", holder_id)
        await conn.execute("DELETE FROM friend_block WHERE blocker = $1 OR blocked = $1", holder_id)
        await record_events([("friend.removed", {"friend_id": str(holder_id), "reason": "account_deleted"},
                              r["friend"]) for r in rows])


HANDLERS: dict[str, list[EventHandler]] = {"holder.deleted": [forget_deleted_holder]}
