"""Constraints Piccolo's column builder cannot express: composite uniques and partial indexes."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T09:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "outbox and holder constraints"

SQL = [
    "ALTER TABLE outbox_handled ADD CONSTRAINT outbox_handled_once UNIQUE (event_id, handler)",
    "CREATE INDEX outbox_event_pending ON outbox_event (id) WHERE handled_at IS NULL",
    "CREATE INDEX outbox_event_holder ON outbox_event (holder_id, id)",
    "ALTER TABLE holder ADD CONSTRAINT holder_status_known CHECK (status IN ('active', 'deleted'))",
    "ALTER TABLE holder ADD CONSTRAINT holder_language_known CHECK (language IN ('zh-CN', 'en'))",
    """ALTER TABLE holder ADD CONSTRAINT holder_login_identity CHECK (
         status = 'deleted' OR ((email IS NOT NULL OR phone IS NOT NULL) AND password_hash IS NOT NULL))""",
    """ALTER TABLE holder ADD CONSTRAINT holder_deleted_is_erased CHECK (
         status = 'active' OR (email IS NULL AND phone IS NULL AND password_hash IS NULL
                               AND avatar_url IS NULL AND deleted_at IS NOT NULL))""",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="wallet", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
