"""An activity is stored exactly as reported, even when it is wrong: one that ends before it starts gets a
`rejected invalid-interval` verdict instead of being refused by the database (which failed its whole batch)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T10:45:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "activities keep impossible intervals for their verdict"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="wallet", description=DESCRIPTION)

    async def run():
        await engine_finder().run_ddl("ALTER TABLE activity DROP CONSTRAINT activity_interval")

    manager.add_raw(run)
    return manager
