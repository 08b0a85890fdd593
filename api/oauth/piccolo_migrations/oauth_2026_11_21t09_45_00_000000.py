"""OAuth indexes Piccolo's column builder cannot express."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T09:45:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "oauth indexes"

SQL = [
    "CREATE INDEX oauth_code_expiry ON oauth_code (expires_at)",
    "CREATE INDEX oauth_grant_live ON oauth_grant (partner, holder) WHERE revoked_at IS NULL",
    "CREATE INDEX oauth_refresh_expiry ON oauth_refresh_token (expires_at)",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="oauth", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
