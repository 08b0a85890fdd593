from __future__ import annotations

from piccolo.columns import UUID, BigInt, BigSerial, Boolean, ForeignKey, Integer, SmallInt, Text, Timestamptz, Varchar
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from notifications.inbox.tables import InboxMessage


class Device(Table, tablename="device"):
    """A phone's push token, registered by a signed-in app (`session`): signing that session out removes it,
    and a token the provider reports dead is pruned. UNIQUE (platform, token): a phone that changes hands
    moves to the account now signed in on it."""

    id = BigSerial(primary_key=True)
    holder = UUID(index=True)
    session = UUID(null=True, default=None)
    platform = Varchar(length=8)  # fcm | apns
    token = Varchar(length=4096)
    app_version = Varchar(length=40, default="")
    created_at = Timestamptz(default=TimestamptzNow())
    last_seen_at = Timestamptz(default=TimestamptzNow())


class NotificationSettings(Table, tablename="notification_settings"):
    """Quiet hours (minutes after local midnight; a window may wrap past midnight) and the daily push cap."""

    holder = UUID(primary_key=True)
    quiet_start = SmallInt(null=True, default=None)
    quiet_end = SmallInt(null=True, default=None)
    daily_cap = Integer(default=10)
    updated_at = Timestamptz(default=TimestamptzNow())


class NotificationPreference(Table, tablename="notification_preference"):
    """A resident's choice for one trigger on one channel, where it differs from the default."""

    id = BigSerial(primary_key=True)
    holder = UUID()
    trigger = Varchar(length=32)
    channel = Varchar(length=8)  # push | live
    enabled = Boolean()


class Delivery(Table, tablename="delivery"):
    """One inbox message on one channel (and device): UNIQUE (message, channel, device), so a retried job
    never plans or sends it twice. `pending` until sent, `skipped` (turned off, capped, token dead) or
    `dead` (the last retry failed: `reason` says why)."""

    id = BigSerial(primary_key=True)
    message = ForeignKey(references=InboxMessage, on_delete=OnDelete.cascade)
    holder = UUID()
    channel = Varchar(length=8)  # push | live
    device = BigInt(null=True, default=None)
    state = Varchar(length=8, default="pending")
    attempts = Integer(default=0)
    due_at = Timestamptz(default=TimestamptzNow())
    claimed_until = Timestamptz(null=True, default=None)
    done_at = Timestamptz(null=True, default=None)
    reason = Text(null=True, default=None)
    provider_id = Varchar(length=200, null=True, default=None)
