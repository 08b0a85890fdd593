"""Members and participants per scope: keys, and what the aggregates counted so far."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T15:45:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "community members: keys and backfill"

SQL = [
    "ALTER TABLE community_member ADD CONSTRAINT community_member_once UNIQUE (scope, holder)",
    "ALTER TABLE community_scope ADD CONSTRAINT community_scope_once UNIQUE (scope)",
    "INSERT INTO community_member (scope, holder) SELECT DISTINCT scope, holder FROM community_participant",
    "INSERT INTO community_scope (scope, participants) SELECT scope, count(*) FROM community_member GROUP BY scope",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="gamification", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
