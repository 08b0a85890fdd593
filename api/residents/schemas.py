"""Request and response shapes for residents, written by hand; inputs reject unknown fields."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

__all__ = [
    "ChangePassword",
    "DeleteAccount",
    "InboxMessageOut",
    "InboxPage",
    "Login",
    "ProfileOut",
    "ProfilePatch",
    "Refresh",
    "Register",
    "SessionOut",
    "TokenPair",
]

Password = Annotated[
    str, msgspec.Meta(min_length=1, max_length=128, description="New passwords need 8 to 128 characters.")
]
DeviceName = Annotated[str, msgspec.Meta(max_length=100, description="Shown in the list of signed-in devices.")]
Language = Literal["zh-CN", "en"]


class Input(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class Register(Input, kw_only=True):
    """Exactly one of `email` or `phone`."""

    email: Annotated[str, msgspec.Meta(max_length=254, examples=["lin@example.com"])] | None = None
    phone: Annotated[str, msgspec.Meta(max_length=32, examples=["13800138000"])] | None = None
    password: Password
    nickname: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    language: Language = "zh-CN"
    time_zone: Annotated[str, msgspec.Meta(max_length=64)] = "Asia/Shanghai"
    device_name: DeviceName = ""


class Login(Input, kw_only=True):
    login: Annotated[str, msgspec.Meta(min_length=1, max_length=254, description="E-mail or phone number.")]
    password: Password
    device_name: DeviceName = ""


class Refresh(Input, kw_only=True):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class ChangePassword(Input, kw_only=True):
    current_password: Password
    new_password: Password


class DeleteAccount(Input, kw_only=True):
    password: Password
    confirm: Annotated[Literal["DELETE"], msgspec.Meta(description='Type "DELETE" to confirm.')]


class ProfilePatch(Input, kw_only=True):
    """Fields left out are unchanged; `null` clears an optional field."""

    nickname: Annotated[str, msgspec.Meta(min_length=1, max_length=40)] | msgspec.UnsetType = msgspec.UNSET
    avatar_url: Annotated[str, msgspec.Meta(max_length=500)] | msgspec.UnsetType | None = msgspec.UNSET
    city: Annotated[str, msgspec.Meta(max_length=64)] | msgspec.UnsetType | None = msgspec.UNSET
    district: Annotated[str, msgspec.Meta(max_length=64)] | msgspec.UnsetType | None = msgspec.UNSET
    community: Annotated[str, msgspec.Meta(max_length=64)] | msgspec.UnsetType | None = msgspec.UNSET
    time_zone: Annotated[str, msgspec.Meta(max_length=64)] | msgspec.UnsetType = msgspec.UNSET
    language: Language | msgspec.UnsetType = msgspec.UNSET
    show_on_public_leaderboards: bool | msgspec.UnsetType = msgspec.UNSET


class ProfileOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    email: str | None
    phone: str | None
    nickname: str
    avatar_url: str | None
    city: str | None
    district: str | None
    community: str | None
    time_zone: str
    language: str
    show_on_public_leaderboards: bool
    created_at: datetime
    updated_at: datetime


class TokenPair(msgspec.Struct, kw_only=True):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - RFC 6750 token type
    expires_in: int
    refresh_token: str
    refresh_expires_at: datetime
    session_id: uuid.UUID
    holder_id: uuid.UUID


class SessionOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    device_name: str
    user_agent: str
    created_at: datetime
    last_refreshed_at: datetime
    current: bool


class InboxMessageOut(msgspec.Struct, kw_only=True):
    """`trigger`: what it is about, as in my notification settings; `link`: where the app opens it."""

    id: int
    kind: str
    trigger: str
    title: str
    body: str
    link: str
    created_at: datetime
    read_at: datetime | None


class InboxPage(msgspec.Struct, kw_only=True):
    items: list[InboxMessageOut]
    next_cursor: str | None
    unread: int
