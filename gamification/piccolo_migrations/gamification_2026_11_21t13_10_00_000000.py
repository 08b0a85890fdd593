"""Badges are awarded once per resident and badge; the badge follower starts from the book as it is now
(residents' past entries are evaluated when they next act or read their progress)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T13:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "badge awards once; the progress cursor"

SQL = [
    "ALTER TABLE badge_award ADD CONSTRAINT badge_award_once UNIQUE (holder, badge)",
    "CREATE INDEX badge_award_of_holder ON badge_award (holder, awarded_at DESC)",
    "ALTER TABLE progress_cursor ADD CONSTRAINT progress_cursor_one_row CHECK (id = 1)",
    "INSERT INTO progress_cursor (id, snapshot, updated_at) VALUES (1, pg_current_snapshot()::text, now())",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="gamification", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
