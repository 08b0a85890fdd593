"""Challenge progress is kept by a follower of the book instead of summed on every read: each participant's
amount (in the goal kind's smallest unit) and each challenge's progress and participants, counted through the
cursor's snapshot; entries after it are the follower's. Finished challenges keep what their result counted
(entries recorded until they finished)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T14:15:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "challenge progress backfilled; the challenge cursor"

SQL = [
    "ALTER TABLE challenge_cursor ADD CONSTRAINT challenge_cursor_one_row CHECK (id = 1)",
    "INSERT INTO challenge_cursor (id, snapshot, updated_at) VALUES (1, pg_current_snapshot()::text, now())",
    "CREATE INDEX challenge_participant_rank ON challenge_participant (challenge, amount DESC, holder)",
    """UPDATE challenge_participant p SET amount = s.amount FROM (
         SELECT p.challenge, p.holder, coalesce(sum(CASE c.goal_kind
                    WHEN 'grams' THEN e.reduction_mg WHEN 'energy' THEN e.energy
                    ELSE CASE e.kind WHEN 'credit' THEN 1 WHEN 'reversal' THEN -1 ELSE 0 END END), 0) AS amount
         FROM challenge_participant p JOIN challenge c ON c.id = p.challenge
         LEFT JOIN book_entry e ON e.holder = p.holder AND e.occurred_at >= c.starts_at
              AND e.occurred_at < c.ends_at AND (jsonb_array_length(c.behaviours) = 0 OR c.behaviours ? e.behaviour)
              AND (c.finished_at IS NULL OR e.recorded_at <= c.finished_at)
              AND pg_visible_in_snapshot(e.txid, (SELECT snapshot::pg_snapshot FROM challenge_cursor WHERE id = 1))
         GROUP BY p.challenge, p.holder) s
       WHERE p.challenge = s.challenge AND p.holder = s.holder""",
    """UPDATE challenge c SET participants = s.n, progress = s.whole FROM (
         SELECT c.id, count(p.holder) AS n, coalesce(sum(CASE c.goal_kind WHEN 'grams'
                    THEN floor(p.amount::numeric / 1000)::bigint ELSE p.amount END), 0) AS whole
         FROM challenge c LEFT JOIN challenge_participant p ON p.challenge = c.id GROUP BY c.id) s
       WHERE c.id = s.id""",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="gamification", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
