"""Levels are reached once; residents' current levels at the upgrade count as reached already, so nobody is
told of a level up they made before (thresholds of rules.toml at the time, in grams)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T14:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "levels reached once; current levels backfilled"

SQL = [
    "ALTER TABLE level_reached ADD CONSTRAINT level_reached_once UNIQUE (holder, level)",
    """INSERT INTO level_reached (holder, level, reached_at)
       SELECT b.holder_id, l.level, now() FROM book_head b
       JOIN (VALUES (2, 1000), (3, 10000), (4, 50000), (5, 100000), (6, 500000), (7, 1000000)) AS l(level, grams)
         ON b.total_mg / 1000 >= l.grams
       ON CONFLICT DO NOTHING""",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="gamification", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
