from __future__ import annotations

from pathlib import Path

from piccolo.conf.apps import AppConfig

from wallet.holders.tables import Holder
from wallet.outbox.tables import HandledEvent, OutboxEvent

APP_CONFIG = AppConfig(
    app_name="wallet",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[Holder, OutboxEvent, HandledEvent],
    migration_dependencies=[],
    commands=[],
)
