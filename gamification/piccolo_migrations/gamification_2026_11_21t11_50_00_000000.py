"""A friendship is stored once per pair (smaller id first), so "are these two friends" is one index probe."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T11:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "one row per friendship"

SQL = [
    "ALTER TABLE friendship ADD CONSTRAINT friendship_ordered CHECK (holder_a < holder_b)",
    "ALTER TABLE friendship ADD CONSTRAINT friendship_once UNIQUE (holder_a, holder_b)",
    "CREATE INDEX friendship_of_b ON friendship (holder_b)",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="gamification", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
