from __future__ import annotations

from pathlib import Path

from piccolo.conf.apps import AppConfig

from api.auth.tables import AuthSession, RefreshToken

APP_CONFIG = AppConfig(
    app_name="auth",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[AuthSession, RefreshToken],
    migration_dependencies=["wallet.piccolo_app", "notifications.piccolo_app"],
    commands=[],
)
