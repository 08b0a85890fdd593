"""Resident endpoints. Thin: parse, authorise, call a service, shape the response."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from api.auth.middleware import Principal
from api.auth.sessions import (
    Rotation,
    erase_sessions,
    list_sessions,
    revoke_all_sessions,
    revoke_session,
    rotate_refresh_token,
    start_session,
)
from api.market.controllers import market_statement
from api.problems import problem_responses
from api.residents.schemas import (
    ChangePassword,
    DeleteAccount,
    InboxMessageOut,
    InboxPage,
    Login,
    ProfileOut,
    ProfilePatch,
    Refresh,
    Register,
    SessionOut,
    TokenPair,
)
from api.security import BEARER, client_ip, login_subject
from api.strict import strict_json
from gamification.challenges.service import my_challenges
from gamification.friends.service import blocks_of, friends_of, requests_of
from gamification.progress.service import badges_of
from gamification.teams.service import my_team
from notifications.devices import devices_of
from notifications.inbox.service import list_messages, mark_read, unread_count
from notifications.preferences import settings_of
from wallet.accounts.service import list_consents, list_sub_accounts
from wallet.db import engine
from wallet.donations.service import certificates_of, donations_of
from wallet.energy.balls import balls_of
from wallet.energy.statement import iter_transfers
from wallet.energy.statement import summary as energy_summary
from wallet.errors import DomainError
from wallet.holders.service import (
    authenticate,
    change_password,
    delete_holder,
    get_holder,
    insert_holder,
    prepare_registration,
    update_profile,
)
from wallet.intake.service import holder_activities
from wallet.mall.redeem import redemptions_page

__all__ = ["AuthController", "MeController"]

Req = Request[Principal, Any, State]


def _token_pair(state: State, rotation: Rotation) -> TokenPair:
    access, _exp = state.access_tokens.issue(rotation.holder_id, rotation.session_id)
    return TokenPair(
        access_token=access,
        expires_in=state.access_tokens.ttl_s,
        refresh_token=rotation.refresh_token,
        refresh_expires_at=rotation.refresh_expires_at,
        session_id=rotation.session_id,
        holder_id=rotation.holder_id,
    )


async def all_balls(holder_id: uuid.UUID) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while page := await balls_of(holder_id, before=out[-1]["id"] if out else None, limit=500):
        out.extend(page)
    return out


async def all_redemptions(holder_id: uuid.UUID) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while page := await redemptions_page(holder_id, before=out[-1]["id"] if out else None, limit=500):
        out.extend({k: v for k, v in r.items() if k not in ("request_hash", "merchant_url", "partner")} for r in page)
    return out


def _profile(row: dict[str, Any]) -> ProfileOut:
    return msgspec.convert(row, ProfileOut, from_attributes=False, strict=False)


class AuthController(Controller):
    path = "/v1/auth"
    tags = ["auth"]
    opt = {"exclude_from_auth": True}

    @post("/register", operation_id="register", status_code=HTTP_201_CREATED, summary="Register a holder",
          responses=problem_responses(400, 409, 413, 422, 429, 503))
    async def register(self, request: Req, state: State, data: JSONBody[Register]) -> TokenPair:
        """Create a holder with an e-mail address or a phone number and a password, and sign this device in.
        The holder and the session commit together. Limited per client IP and per e-mail or phone number."""
        settings = state.settings
        await state.rate_limiter.hit("register-ip", client_ip(request, settings), settings.register_limit_per_ip)
        await state.rate_limiter.hit(
            "register-account", login_subject(data.email or data.phone or ""), settings.login_limit_per_account
        )
        registration = await prepare_registration(
            state.passwords, password=data.password, email=data.email, phone=data.phone,
            nickname=data.nickname, language=data.language, time_zone=data.time_zone,
        )
        async with engine().transaction():
            holder = await insert_holder(registration)
            rotation = await start_session(
                holder["id"], device_name=data.device_name, user_agent=request.headers.get("user-agent", ""),
                ip=client_ip(request, settings), refresh_ttl_s=settings.refresh_token_ttl_s,
            )
        return _token_pair(state, rotation)

    @post("/login", operation_id="login", status_code=HTTP_200_OK, summary="Log in",
          responses=problem_responses(400, 401, 413, 429, 503))
    async def login(self, request: Req, state: State, data: JSONBody[Login]) -> TokenPair:
        """Exchange an e-mail or phone number and password for an access token (15 minutes) and a refresh
        token. Limited per account and per client IP; a wrong login or password gets one answer."""
        settings = state.settings
        ip = client_ip(request, settings)
        account = login_subject(data.login)
        await state.rate_limiter.hit("login-ip", ip, settings.login_limit_per_ip)
        await state.rate_limiter.hit("login-account", account, settings.login_limit_per_account)
        holder_id = await authenticate(state.passwords, data.login, data.password)
        await state.rate_limiter.reset("login-account", account)
        rotation = await start_session(
            holder_id, device_name=data.device_name, user_agent=request.headers.get("user-agent", ""),
            ip=ip, refresh_ttl_s=settings.refresh_token_ttl_s,
        )
        return _token_pair(state, rotation)

    @post("/refresh", operation_id="refreshTokens", status_code=HTTP_200_OK, summary="Rotate tokens",
          responses=problem_responses(400, 401, 413, 503))
    async def refresh(self, state: State, data: JSONBody[Refresh]) -> TokenPair:
        """Trade a refresh token for a new access token and a new refresh token. Each refresh token works
        once: presenting it again signs the whole session out (it was probably copied)."""
        rotation = await rotate_refresh_token(data.refresh_token, refresh_ttl_s=state.settings.refresh_token_ttl_s)
        return _token_pair(state, rotation)

    @post(
        "/logout", operation_id="logout", status_code=HTTP_204_NO_CONTENT, summary="Log out this device",
        opt={"exclude_from_auth": False}, security=BEARER, responses=problem_responses(401, 503),
    )
    async def logout(self, request: Req) -> None:
        """Revoke this device's session: its access and refresh tokens stop working at once."""
        await revoke_session(request.user.holder_id, request.user.session_id, reason="logout")


class MeController(Controller):
    path = "/v1/me"
    tags = ["me"]
    security = BEARER

    @get("", operation_id="getMyProfile", summary="My profile", responses=problem_responses(401, 503))
    async def get_profile(self, request: Req) -> ProfileOut:
        """The signed-in holder's profile."""
        return _profile(await get_holder(request.user.holder_id))

    @patch("", operation_id="updateMyProfile", summary="Edit my profile",
           responses=problem_responses(400, 401, 413, 422, 503))
    async def update_profile(self, request: Req, data: JSONBody[ProfilePatch]) -> ProfileOut:
        """Change any of nickname, avatar URL, home city / district / community, time zone (IANA),
        language (zh-CN or en) and whether I appear on public leaderboards."""
        data = await strict_json(request, ProfilePatch)
        changes = {f: v for f in data.__struct_fields__ if (v := getattr(data, f)) is not msgspec.UNSET}
        return _profile(await update_profile(request.user.holder_id, changes))

    @delete("", operation_id="deleteMyAccount", status_code=HTTP_204_NO_CONTENT, summary="Delete my account",
            responses=problem_responses(400, 401, 403, 413, 503))
    async def delete_account(self, request: Req, state: State, data: JSONBody[DeleteAccount]) -> None:
        """Erase my personal data now and sign out every device. My carbon book keeps its entries under a
        pseudonymous id, so community totals stay true; nothing links them to me any more."""
        async with engine().transaction():
            await delete_holder(state.passwords, request.user.holder_id, data.password)
            await erase_sessions(request.user.holder_id)

    @post("/password", operation_id="changeMyPassword", status_code=HTTP_204_NO_CONTENT, summary="Change password",
          responses=problem_responses(400, 401, 403, 409, 413, 422, 503))
    async def change_password(self, request: Req, state: State, data: JSONBody[ChangePassword]) -> None:
        """Change my password; every other device is signed out, this one stays signed in."""
        async with engine().transaction():
            await change_password(state.passwords, request.user.holder_id, data.current_password, data.new_password)
            await revoke_all_sessions(request.user.holder_id, reason="password-changed", keep=request.user.session_id)

    @get("/sessions", operation_id="listMySessions", summary="My signed-in devices",
         responses=problem_responses(401, 503))
    async def sessions(self, request: Req) -> list[SessionOut]:
        """Devices currently signed in to my account, newest first."""
        rows = await list_sessions(request.user.holder_id)
        return [
            SessionOut(
                id=r["id"], device_name=r["device_name"], user_agent=r["user_agent"], created_at=r["created_at"],
                last_refreshed_at=r["last_refreshed_at"], current=r["id"] == request.user.session_id,
            )
            for r in rows
        ]

    @delete("/sessions/{session_id:uuid}", operation_id="revokeMySession", status_code=HTTP_204_NO_CONTENT,
            summary="Sign a device out", responses=problem_responses(400, 401, 404, 503))
    async def revoke(self, request: Req, session_id: FromPath[uuid.UUID]) -> None:
        """Sign one of my devices out; its tokens stop working at once."""
        if not await revoke_session(request.user.holder_id, session_id, reason="revoked-by-holder"):
            raise DomainError("not_found", "session-not-found", "No signed-in device of yours has this id.")

    @get("/inbox", operation_id="listMyInbox", summary="My inbox", responses=problem_responses(400, 401, 422, 503))
    async def inbox(
        self, request: Req, cursor: FromQuery[str | None] = None, limit: FromQuery[int] = 20
    ) -> InboxPage:
        """Messages for me, newest first, in my language, with how many are unread. Pass `next_cursor` back as
        `cursor` for more."""
        if not 1 <= limit <= 100:
            raise DomainError("invalid", "invalid-limit", "limit must be between 1 and 100.")
        before_id = None
        if cursor is not None:
            if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18:
                raise DomainError("invalid", "invalid-cursor", "cursor must be a next_cursor from a previous page.")
            before_id = int(cursor)
        holder = await get_holder(request.user.holder_id)
        items = await list_messages(request.user.holder_id, holder["language"], before_id=before_id, limit=limit)
        next_cursor = str(items[-1]["id"]) if len(items) == limit else None
        return InboxPage(items=[InboxMessageOut(**m) for m in items], next_cursor=next_cursor,
                         unread=await unread_count(request.user.holder_id))

    @post("/inbox/{message_id:int}/read", operation_id="markInboxMessageRead", status_code=HTTP_204_NO_CONTENT,
          summary="Mark a message read", responses=problem_responses(400, 401, 404, 503))
    async def read(self, request: Req, message_id: FromPath[int]) -> None:
        """Mark one of my inbox messages read."""
        if not 1 <= message_id < 2**63 or not await mark_read(request.user.holder_id, message_id):
            raise DomainError("not_found", "message-not-found", "No message of yours has this id.")

    @get("/export", operation_id="exportMyData", summary="Export my personal data",
         responses=problem_responses(401, 503))
    async def export(self, request: Req) -> Response[dict[str, Any]]:
        """Everything we hold about me, as one JSON document (PIPL / GDPR data portability)."""
        holder_id = request.user.holder_id
        holder = await get_holder(holder_id)
        sessions = await list_sessions(holder_id, include_revoked=True)
        inbox: list[dict[str, Any]] = []
        while True:
            page = await list_messages(
                holder_id, holder["language"], before_id=inbox[-1]["id"] if inbox else None, limit=100
            )
            inbox.extend(page)
            if len(page) < 100:
                break
        document = {
            "format": "carbon-wallet/personal-data/v1",
            "profile": msgspec.to_builtins(_profile(holder)),
            "sessions": msgspec.to_builtins(sessions),
            "inbox": msgspec.to_builtins(inbox),
            "sub_accounts": msgspec.to_builtins(await list_sub_accounts(holder_id)),
            "consents": msgspec.to_builtins(await list_consents(holder_id)),
            "activities": msgspec.to_builtins(await holder_activities(holder_id)),
            "energy": msgspec.to_builtins(await energy_summary(holder_id)),
            "energy_transfers": msgspec.to_builtins([{k: v for k, v in t.items() if k != "ref"}
                                                     async for t in iter_transfers(holder_id)]),
            "energy_balls": msgspec.to_builtins(await all_balls(holder_id)),
            "redemptions": msgspec.to_builtins(await all_redemptions(holder_id)),
            "donations": msgspec.to_builtins(await donations_of(holder_id)),
            "donation_certificates": msgspec.to_builtins(await certificates_of(holder_id)),
            "friends": msgspec.to_builtins(await friends_of(holder_id)),
            "friend_requests": msgspec.to_builtins(await requests_of(holder_id)),
            "blocks": msgspec.to_builtins(await blocks_of(holder_id)),
            "team": msgspec.to_builtins(await my_team(holder_id)),
            "challenges": msgspec.to_builtins(await my_challenges(holder_id)),
            "badges": msgspec.to_builtins(await badges_of(holder_id)),
            "devices": msgspec.to_builtins([{k: v for k, v in d.items() if k != "session"}
                                            for d in await devices_of(holder_id)]),
            "notification_settings": msgspec.to_builtins(await settings_of(holder_id)),
            "carbon_market": msgspec.to_builtins(await market_statement(holder_id)),
        }
        return Response(
            document, headers={"Content-Disposition": f'attachment; filename="carbon-wallet-{holder_id}.json"'}
        )
