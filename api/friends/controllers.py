"""My friends: invite codes, requests by phone or e-mail (which never reveal who is registered), accepting,
declining, withdrawing, removing, and blocking."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from api.auth.middleware import Principal
from api.problems import problem_responses
from api.residents.schemas import Input
from api.security import BEARER
from api.settings import RateLimit
from api.strict import strict_json
from gamification.friends.service import (
    accept_request,
    add_by_code,
    block,
    blocks_of,
    cancel_request,
    decline_request,
    friends_of,
    invite_code,
    remove_friend,
    request_friend,
    requests_of,
    rotate_invite_code,
    unblock,
)
from wallet.errors import DomainError

__all__ = ["BlocksController", "FriendsController"]

Req = Request[Principal, Any, State]
FRIEND_REQUEST_LIMIT = RateLimit(20, 3600)  # requests by address per resident per hour: nobody can probe or spam
INVITE_CODE_LIMIT = RateLimit(30, 3600)  # adds by code per resident per hour (codes cannot be guessed anyway)
REQUEST_SENT_DETAIL = ("If this address belongs to a resident who can receive friend requests, they will see yours; "
                       "you become friends when they accept.")


class FriendOut(msgspec.Struct, kw_only=True):
    holder_id: uuid.UUID
    nickname: str
    avatar_url: str | None
    since: datetime


class FriendAdded(msgspec.Struct, kw_only=True):
    """`added` is false when we were friends already."""

    friend: FriendOut
    added: bool


class InviteCodeOut(msgspec.Struct, kw_only=True):
    code: Annotated[str, msgspec.Meta(examples=["7KX2M9QHPA"])]


class ByCode(Input, kw_only=True):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=32, examples=["7KX2M-9QHPA"],
                                      description="A friend's invite code; case, spaces and dashes do not matter.")]


class FriendRequestIn(Input, kw_only=True):
    """Exactly one of `email` or `phone`."""

    email: Annotated[str, msgspec.Meta(max_length=254, examples=["lin@example.com"])] | None = None
    phone: Annotated[str, msgspec.Meta(max_length=32, examples=["13800138000"])] | None = None


class RequestSent(msgspec.Struct, kw_only=True):
    """The same answer whatever the address: whether it belongs to anyone is not told."""

    status: Literal["sent"]
    detail: str


class IncomingRequestOut(msgspec.Struct, kw_only=True):
    id: int
    holder_id: uuid.UUID
    nickname: str
    avatar_url: str | None
    sent_at: datetime


class OutgoingRequestOut(msgspec.Struct, kw_only=True):
    id: int
    to: Annotated[str, msgspec.Meta(examples=["138****8000", "l***@example.com"])]
    sent_at: datetime


class RequestsOut(msgspec.Struct, kw_only=True):
    incoming: list[IncomingRequestOut]
    outgoing: list[OutgoingRequestOut]


class BlockIn(Input, kw_only=True):
    holder_id: uuid.UUID


class BlockOut(msgspec.Struct, kw_only=True):
    holder_id: uuid.UUID
    nickname: str
    avatar_url: str | None
    blocked_at: datetime


def _request_id(value: int) -> int:
    if not 1 <= value < 2**63:
        raise DomainError("not_found", "request-not-found", "No open friend request of yours has this id.")
    return value


def _friend(row: dict[str, Any]) -> FriendOut:
    return FriendOut(holder_id=row["holder_id"], nickname=row["nickname"], avatar_url=row["avatar_url"],
                     since=row["since"])


class FriendsController(Controller):
    path = "/v1/me/friends"
    tags = ["friends"]
    security = BEARER

    @get("", operation_id="listMyFriends", summary="My friends", responses=problem_responses(401, 503))
    async def friends(self, request: Req) -> list[FriendOut]:
        """Newest friendship first, each with nickname, avatar and since when."""
        return [_friend(r) for r in await friends_of(request.user.holder_id)]

    @delete("/{holder_id:uuid}", operation_id="removeMyFriend", status_code=HTTP_204_NO_CONTENT,
            summary="Remove a friend", responses=problem_responses(400, 401, 404, 503))
    async def remove(self, request: Req, holder_id: FromPath[uuid.UUID]) -> None:
        """We are no longer friends, on both sides; they are not told. `404 friend-not-found` otherwise."""
        await remove_friend(request.user.holder_id, holder_id)

    @get("/invite-code", operation_id="getMyInviteCode", summary="My invite code",
         responses=problem_responses(401, 503))
    async def code(self, request: Req) -> InviteCodeOut:
        """Ten letters and digits to share (as text or a QR code). Whoever enters it becomes my friend at once:
        sharing it is consent. Made on first read; rotate it if it went further than I wanted."""
        return InviteCodeOut(code=await invite_code(request.user.holder_id))

    @post("/invite-code/rotate", operation_id="rotateMyInviteCode", status_code=HTTP_200_OK,
          summary="Get a new invite code", responses=problem_responses(401, 503))
    async def rotate(self, request: Req) -> InviteCodeOut:
        """The old code stops working at once; friends made with it stay friends."""
        return InviteCodeOut(code=await rotate_invite_code(request.user.holder_id))

    @post("/by-code", operation_id="addFriendByCode", status_code=HTTP_200_OK, summary="Add a friend by invite code",
          responses=problem_responses(400, 401, 404, 409, 413, 422, 429, 503))
    async def by_code(self, state: State, request: Req, data: JSONBody[ByCode]) -> FriendAdded:
        """We become friends at once; the answer names the friend. `404 invite-code-not-found` for a code
        nobody has; `422 own-invite-code`; at most 30 adds an hour (`429` with Retry-After)."""
        data = await strict_json(request, ByCode)
        await state.rate_limiter.hit("friend-code", str(request.user.holder_id), INVITE_CODE_LIMIT)
        row = await add_by_code(request.user.holder_id, data.code)
        return FriendAdded(friend=_friend(row), added=row["added"])

    @post("/requests", operation_id="sendFriendRequest", status_code=HTTP_202_ACCEPTED,
          summary="Ask someone by phone or e-mail", responses=problem_responses(400, 401, 413, 422, 429, 503))
    async def send(self, state: State, request: Req, data: JSONBody[FriendRequestIn]) -> RequestSent:
        """Always the same answer, so nobody can learn who is registered: the recipient (if there is one who
        may receive it) sees the request and can accept it. If they had asked me already, we are friends now.
        At most 20 an hour (`429` with Retry-After); `422` only for an address that cannot be one."""
        data = await strict_json(request, FriendRequestIn)
        await state.rate_limiter.hit("friend-request", str(request.user.holder_id), FRIEND_REQUEST_LIMIT)
        await request_friend(request.user.holder_id, email=data.email, phone=data.phone)
        return RequestSent(status="sent", detail=REQUEST_SENT_DETAIL)

    @get("/requests", operation_id="listMyFriendRequests", summary="Friend requests to and from me",
         responses=problem_responses(401, 503))
    async def requests(self, request: Req) -> RequestsOut:
        """`incoming`: waiting for my answer, with the sender's nickname. `outgoing`: mine still waiting, with
        only the address I typed, masked (they stay here until accepted or withdrawn)."""
        found = await requests_of(request.user.holder_id)
        return RequestsOut(incoming=[IncomingRequestOut(**r) for r in found["incoming"]],
                           outgoing=[OutgoingRequestOut(**r) for r in found["outgoing"]])

    @post("/requests/{request_id:int}/accept", operation_id="acceptFriendRequest", status_code=HTTP_200_OK,
          summary="Accept a friend request", responses=problem_responses(400, 401, 404, 409, 503))
    async def accept(self, request: Req, request_id: FromPath[int]) -> FriendOut:
        """We are friends now and the sender is told. Accepting twice answers the same."""
        return _friend(await accept_request(request.user.holder_id, _request_id(request_id)))

    @post("/requests/{request_id:int}/decline", operation_id="declineFriendRequest",
          status_code=HTTP_204_NO_CONTENT, summary="Decline a friend request",
          responses=problem_responses(400, 401, 404, 503))
    async def decline(self, request: Req, request_id: FromPath[int]) -> None:
        """The request leaves my list. The sender is not told."""
        await decline_request(request.user.holder_id, _request_id(request_id))

    @delete("/requests/{request_id:int}", operation_id="withdrawFriendRequest", status_code=HTTP_204_NO_CONTENT,
            summary="Withdraw my friend request", responses=problem_responses(400, 401, 404, 503))
    async def withdraw(self, request: Req, request_id: FromPath[int]) -> None:
        """Take back a request I sent; withdrawing twice is not an error."""
        await cancel_request(request.user.holder_id, _request_id(request_id))


class BlocksController(Controller):
    path = "/v1/me/blocks"
    tags = ["friends"]
    security = BEARER

    @get("", operation_id="listMyBlocks", summary="Residents I blocked", responses=problem_responses(401, 503))
    async def blocks(self, request: Req) -> list[BlockOut]:
        return [BlockOut(**r) for r in await blocks_of(request.user.holder_id)]

    @post("", operation_id="blockResident", status_code=HTTP_200_OK, summary="Block a resident",
          responses=problem_responses(400, 401, 404, 413, 422, 503))
    async def create(self, request: Req, data: JSONBody[BlockIn]) -> BlockOut:
        """Ends our friendship and every request between us. While the block stands their requests to me
        change nothing and my invite code does not work for them; they are not told. Blocking again changes
        nothing."""
        data = await strict_json(request, BlockIn)
        return BlockOut(**await block(request.user.holder_id, data.holder_id))

    @delete("/{holder_id:uuid}", operation_id="unblockResident", status_code=HTTP_204_NO_CONTENT,
            summary="Unblock a resident", responses=problem_responses(400, 401, 404, 503))
    async def remove(self, request: Req, holder_id: FromPath[uuid.UUID]) -> None:
        """They may ask me again; the friendship and requests the block ended do not come back."""
        await unblock(request.user.holder_id, holder_id)
