"""Constraints for devices, settings, preferences and deliveries; existing inbox messages get their trigger and
deep link (the kinds of 0.5.0, from inbox/templates.toml at the time)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T14:35:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "notification constraints; inbox triggers and links"

_KINDS = {
    "welcome": ("account", "carbonwallet://home"),
    "password_changed": ("account", "carbonwallet://settings/security"),
    "partner_linked": ("account", "carbonwallet://accounts"),
    "partner_unlinked": ("account", "carbonwallet://accounts"),
    "energy_helped": ("friend_helped", "carbonwallet://energy"),
    "energy_awarded": ("energy_awarded", "carbonwallet://energy"),
    "redemption_fulfilled": ("redemption", "carbonwallet://mall/redemptions"),
    "redemption_voided": ("redemption", "carbonwallet://mall/redemptions"),
    "donation_certified": ("donation", "carbonwallet://donations"),
    "friend_requested": ("social", "carbonwallet://friends/requests"),
    "friend_accepted": ("social", "carbonwallet://friends"),
    "friend_added": ("social", "carbonwallet://friends"),
    "friend_added_you": ("social", "carbonwallet://friends"),
    "badge_earned": ("badge_earned", "carbonwallet://progress"),
}

SQL = [
    "ALTER TABLE device ADD CONSTRAINT device_platform_known CHECK (platform IN ('fcm', 'apns'))",
    "ALTER TABLE device ADD CONSTRAINT device_token_once UNIQUE (platform, token)",
    "ALTER TABLE device ADD CONSTRAINT device_token_given CHECK (length(token) BETWEEN 8 AND 4096)",
    "ALTER TABLE device ADD CONSTRAINT device_holder_fk FOREIGN KEY (holder) REFERENCES holder (id) ON DELETE CASCADE",
    "CREATE INDEX device_session ON device (session)",
    """ALTER TABLE notification_settings ADD CONSTRAINT notification_settings_holder_fk FOREIGN KEY (holder)
         REFERENCES holder (id) ON DELETE CASCADE""",
    """ALTER TABLE notification_settings ADD CONSTRAINT notification_settings_quiet CHECK (
         (quiet_start IS NULL AND quiet_end IS NULL)
         OR (quiet_start BETWEEN 0 AND 1439 AND quiet_end BETWEEN 0 AND 1439 AND quiet_start <> quiet_end))""",
    "ALTER TABLE notification_settings ADD CONSTRAINT notification_settings_cap CHECK (daily_cap BETWEEN 0 AND 100)",
    """ALTER TABLE notification_preference ADD CONSTRAINT notification_preference_holder_fk FOREIGN KEY (holder)
         REFERENCES holder (id) ON DELETE CASCADE""",
    "ALTER TABLE notification_preference ADD CONSTRAINT notification_preference_once UNIQUE (holder, trigger, channel)",
    "ALTER TABLE notification_preference ADD CONSTRAINT notification_preference_channel CHECK (channel IN ('push', 'live'))",
    "ALTER TABLE delivery ADD CONSTRAINT delivery_channel_known CHECK (channel IN ('push', 'live'))",
    "ALTER TABLE delivery ADD CONSTRAINT delivery_state_known CHECK (state IN ('pending', 'sent', 'skipped', 'dead'))",
    "ALTER TABLE delivery ADD CONSTRAINT delivery_push_has_device CHECK ((channel = 'push') = (device IS NOT NULL))",
    "CREATE UNIQUE INDEX delivery_once ON delivery (message, channel, coalesce(device, 0))",
    "CREATE INDEX delivery_due ON delivery (due_at) WHERE state = 'pending'",
    "CREATE INDEX delivery_pushed_today ON delivery (holder, done_at) WHERE channel = 'push' AND state = 'sent'",
    "CREATE INDEX delivery_dead ON delivery (done_at DESC) WHERE state = 'dead'",
    "CREATE INDEX inbox_message_unread ON inbox_message (holder_id) WHERE read_at IS NULL",
    *[f"UPDATE inbox_message SET trigger = '{t}', link = '{link}' WHERE kind = '{kind}'"
      for kind, (t, link) in _KINDS.items()],
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="notifications", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
