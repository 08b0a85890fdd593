"""Challenges: known scopes and goal kinds, a window that ends after it starts, one participation per
resident and challenge."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T13:15:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "challenge constraints"

SQL = [
    "ALTER TABLE challenge ADD CONSTRAINT challenge_scope_known CHECK (scope IN ('global', 'city', 'community', 'team'))",
    "ALTER TABLE challenge ADD CONSTRAINT challenge_goal_known CHECK (goal_kind IN ('grams', 'energy', 'actions'))",
    "ALTER TABLE challenge ADD CONSTRAINT challenge_goal_positive CHECK (goal > 0 AND (unlock_every IS NULL OR unlock_every > 0))",
    "ALTER TABLE challenge ADD CONSTRAINT challenge_window CHECK (starts_at < ends_at)",
    "ALTER TABLE challenge ADD CONSTRAINT challenge_result_known CHECK (result IS NULL OR result IN ('met', 'missed'))",
    "ALTER TABLE challenge_participant ADD CONSTRAINT challenge_participant_once UNIQUE (challenge, holder)",
    "CREATE INDEX challenge_participant_of_holder ON challenge_participant (holder)",
    "CREATE INDEX challenge_open ON challenge (ends_at) WHERE result IS NULL",
    "CREATE INDEX book_entry_holder_occurred ON book_entry (holder, occurred_at)",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="gamification", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
