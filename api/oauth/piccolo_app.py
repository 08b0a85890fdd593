from __future__ import annotations

from pathlib import Path

from piccolo.conf.apps import AppConfig

from api.oauth.tables import AuthorizationCode, PartnerGrant, PartnerRefreshToken

APP_CONFIG = AppConfig(
    app_name="oauth",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[AuthorizationCode, PartnerGrant, PartnerRefreshToken],
    migration_dependencies=["wallet.piccolo_app"],
    commands=[],
)
