from __future__ import annotations

from pathlib import Path

from piccolo.conf.apps import AppConfig

from notifications.delivery.tables import Delivery, Device, NotificationPreference, NotificationSettings
from notifications.inbox.tables import InboxMessage

APP_CONFIG = AppConfig(
    app_name="notifications",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[InboxMessage, Device, NotificationSettings, NotificationPreference, Delivery],
    migration_dependencies=["wallet.piccolo_app"],
    commands=[],
)
