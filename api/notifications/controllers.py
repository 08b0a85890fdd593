"""Notifications for the signed-in resident: the phones that receive push, what to be told and when (per trigger
and channel, quiet hours, a daily cap), and the inbox's unread count and read-all. Operators list dead letters."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT

from api.auth.middleware import Principal
from api.partners.admin import operator_only
from api.problems import problem_responses
from api.residents.schemas import Input
from api.security import BEARER
from api.strict import strict_json
from notifications.delivery.admin import dead_letters
from notifications.devices import devices_of, register_device, unregister_device
from notifications.inbox.service import mark_all_read, unread_count
from notifications.preferences import settings_of, update_settings
from wallet.errors import DomainError

__all__ = ["DeadLetterController", "NotificationsController"]

Req = Request[Principal, Any, State]


class DeviceIn(Input, kw_only=True):
    """`platform` fcm (Android, the FCM registration token) or apns (iOS, the APNs device token in hex)."""

    platform: Literal["fcm", "apns"]
    token: Annotated[str, msgspec.Meta(min_length=8, max_length=4096)]
    app_version: Annotated[str, msgspec.Meta(max_length=40)] = ""


class DeviceOut(msgspec.Struct, kw_only=True):
    """`this_session`: registered by the session making this request (signing it out removes the device)."""

    id: int
    platform: str
    token_tail: str  # the token's last 6 characters: enough to tell my phones apart
    app_version: str
    created_at: datetime
    last_seen_at: datetime
    this_session: bool


class QuietHours(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Local times in my time zone (HH:MM); a window may wrap midnight, e.g. 22:00 to 07:30."""

    start: Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", examples=["22:00"])]
    end: Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", examples=["07:30"])]


class TriggerChoice(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    push: bool | None = None
    live: bool | None = None


class SettingsIn(Input, kw_only=True):
    """Only what is given changes. `quiet_hours: null` removes them."""

    quiet_hours: QuietHours | msgspec.UnsetType | None = msgspec.UNSET
    daily_cap: int | None = None  # 0 to 100 pushes a local day (422 invalid-daily-cap otherwise)
    triggers: dict[str, TriggerChoice] | None = None


class TriggerOut(msgspec.Struct, kw_only=True):
    """`quiet`: held back during my quiet hours; `capped`: counts toward my daily push cap; `locked`: push
    cannot be turned off (account security)."""

    trigger: str
    name: dict[str, str]
    push: bool
    live: bool
    locked: bool
    quiet: bool
    capped: bool


class SettingsOut(msgspec.Struct, kw_only=True):
    quiet_hours: QuietHours | None
    daily_cap: int
    triggers: list[TriggerOut]


class ReadAllIn(Input, kw_only=True):
    up_to_id: int | None = None  # the newest message the app showed; newer ones stay unread


class ReadAllOut(msgspec.Struct, kw_only=True):
    marked: int
    unread: int


class Unread(msgspec.Struct, kw_only=True):
    unread: int


def _device(row: dict[str, Any], session_id: uuid.UUID) -> DeviceOut:
    return DeviceOut(id=row["id"], platform=row["platform"], token_tail=row["token"][-6:],
                     app_version=row["app_version"], created_at=row["created_at"], last_seen_at=row["last_seen_at"],
                     this_session=row["session"] == session_id)


def _settings(s: dict[str, Any]) -> SettingsOut:
    quiet = s["quiet_hours"]
    return SettingsOut(quiet_hours=QuietHours(**quiet) if quiet else None, daily_cap=s["daily_cap"],
                       triggers=[TriggerOut(**t) for t in s["triggers"]])


class NotificationsController(Controller):
    path = "/v1/me"
    tags = ["me"]
    security = BEARER

    @get("/devices", operation_id="listMyDevices", summary="My phones that receive push",
         responses=problem_responses(401, 503))
    async def devices(self, request: Req) -> list[DeviceOut]:
        return [_device(d, request.user.session_id) for d in await devices_of(request.user.holder_id)]

    @post("/devices", operation_id="registerMyDevice", status_code=HTTP_200_OK, summary="Receive push on this phone",
          responses=problem_responses(400, 401, 409, 422, 503))
    async def register(self, request: Req, data: JSONBody[DeviceIn]) -> DeviceOut:
        """Register this phone's push token for this session; calling it again (each app start, or when the
        provider rotates the token) is safe. Signing this session out removes it."""
        data = await strict_json(request, DeviceIn)
        row = await register_device(request.user.holder_id, request.user.session_id, data.platform, data.token,
                                    data.app_version)
        return _device(row, request.user.session_id)

    @delete("/devices/{device_id:int}", operation_id="unregisterMyDevice", status_code=HTTP_204_NO_CONTENT,
            summary="Stop push to a phone", responses=problem_responses(400, 401, 404, 503))
    async def unregister(self, request: Req, device_id: FromPath[int]) -> None:
        if not 1 <= device_id < 2**63 or not await unregister_device(request.user.holder_id, device_id):
            raise DomainError("not_found", "device-not-found", "No phone of yours has this id.")

    @get("/notification-settings", operation_id="getMyNotificationSettings", summary="What I am told, and when",
         responses=problem_responses(401, 503))
    async def settings(self, request: Req) -> SettingsOut:
        """Every trigger with its push and live switches (defaults until I change them), my quiet hours and my
        daily push cap. The inbox always keeps every message."""
        return _settings(await settings_of(request.user.holder_id))

    @patch("/notification-settings", operation_id="updateMyNotificationSettings",
           summary="Change what I am told, and when", responses=problem_responses(400, 401, 422, 503))
    async def update(self, request: Req, data: JSONBody[SettingsIn]) -> SettingsOut:
        """E.g. `{"quiet_hours": {"start": "22:00", "end": "07:30"}, "daily_cap": 5,
        "triggers": {"energy_ripe": {"push": false}}}`. Pushes that fall in quiet hours wait until they end."""
        data = await strict_json(request, SettingsIn)
        changes: dict[str, Any] = {}
        if data.quiet_hours is not msgspec.UNSET:
            changes["quiet_hours"] = msgspec.structs.asdict(data.quiet_hours) if data.quiet_hours else None
        if data.daily_cap is not None:
            changes["daily_cap"] = data.daily_cap
        if data.triggers:
            changes["triggers"] = {k: {c: v for c, v in msgspec.structs.asdict(t).items() if v is not None}
                                   for k, t in data.triggers.items()}
        return _settings(await update_settings(request.user.holder_id, changes))

    @get("/inbox/unread", operation_id="countMyUnread", summary="How many messages I have not read",
         responses=problem_responses(401, 503))
    async def unread(self, request: Req) -> Unread:
        return Unread(unread=await unread_count(request.user.holder_id))

    @post("/inbox/read-all", operation_id="markMyInboxRead", status_code=HTTP_200_OK,
          summary="Mark every message read", responses=problem_responses(400, 401, 422, 503))
    async def read_all(self, request: Req, data: JSONBody[ReadAllIn]) -> ReadAllOut:
        """Up to `up_to_id` when given (the newest message the app showed), so one that arrived meanwhile stays
        unread."""
        data = await strict_json(request, ReadAllIn)
        marked = await mark_all_read(request.user.holder_id, up_to_id=data.up_to_id)
        return ReadAllOut(marked=marked, unread=await unread_count(request.user.holder_id))


class DeadLetterOut(msgspec.Struct, kw_only=True):
    delivery_id: int
    message_id: int
    holder_id: uuid.UUID
    kind: str
    channel: str
    attempts: int
    reason: str | None
    failed_at: datetime


class DeadLetterController(Controller):
    path = "/v1/admin/notifications"
    tags = ["admin"]
    security = BEARER
    guards = [operator_only]

    @get("/dead-letters", operation_id="adminListDeadLetters", summary="Notifications given up on",
         responses=problem_responses(400, 401, 403, 503))
    async def dead(self, limit: FromQuery[int] = 100) -> list[DeadLetterOut]:
        """Deliveries that failed for good, newest first, with the provider's last reason."""
        if not 1 <= limit <= 1000:
            raise DomainError("invalid", "invalid-limit", "limit must be between 1 and 1000.")
        return [DeadLetterOut(**r) for r in await dead_letters(limit)]
