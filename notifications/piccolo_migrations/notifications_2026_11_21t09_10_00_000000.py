"""One inbox message per (holder, event, kind): the idempotency key of the event handlers."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T09:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "inbox constraints"

SQL = [
    "ALTER TABLE inbox_message ADD CONSTRAINT inbox_message_once UNIQUE (holder_id, event_id, kind)",
    "CREATE INDEX inbox_message_holder_recent ON inbox_message (holder_id, id DESC)",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="notifications", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
