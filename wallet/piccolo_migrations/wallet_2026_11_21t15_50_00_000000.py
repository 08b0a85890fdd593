"""A second staff role: a city programme's staff read that city's ledger (the role's scope is the city)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T15:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "programme_staff role"

SQL = [
    "ALTER TABLE holder_role DROP CONSTRAINT holder_role_known",
    "ALTER TABLE holder_role ADD CONSTRAINT holder_role_known CHECK (role IN ('operator', 'programme_staff'))",
    """ALTER TABLE holder_role ADD CONSTRAINT holder_role_staff_city
         CHECK (role <> 'programme_staff' OR length(btrim(scope)) > 0)""",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="wallet", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
