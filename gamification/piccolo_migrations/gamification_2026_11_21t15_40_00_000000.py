"""Community aggregates: one row per (scope, behaviour, day) and per (scope, day, resident); the cursor starts
at the book's beginning (an empty snapshot), so the first step after the upgrade counts the whole book once."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T15:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "community aggregates: keys and the cursor"

SQL = [
    "ALTER TABLE community_day ADD CONSTRAINT community_day_once UNIQUE (scope, behaviour, day)",
    "CREATE INDEX community_day_scope_day ON community_day (scope, day)",
    "CREATE INDEX community_day_partner ON community_day (day) WHERE scope LIKE 'partner:%'",
    "ALTER TABLE community_participant ADD CONSTRAINT community_participant_once UNIQUE (scope, day, holder)",
    "ALTER TABLE community_cursor ADD CONSTRAINT community_cursor_one_row CHECK (id = 1)",
    # '1:1:' is the snapshot before any transaction: every book entry is after it.
    "INSERT INTO community_cursor (id, snapshot, updated_at) VALUES (1, '1:1:', now())",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="gamification", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
