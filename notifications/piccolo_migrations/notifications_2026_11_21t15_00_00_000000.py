"""The sender claims due deliveries in (due_at, id) order: a burst's deliveries share one due_at, so an index on
due_at alone left every claim sorting the whole backlog (45 ms per claim at 100,000 pending, measured)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T15:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "deliveries claimed in index order"

SQL = [
    "CREATE INDEX delivery_due_order ON delivery (due_at, id) WHERE state = 'pending'",
    "DROP INDEX delivery_due",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="notifications", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
