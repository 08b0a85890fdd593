"""The carbon book's guarantees, in the database: entries are append-only (no UPDATE, DELETE or TRUNCATE),
one chain position per holder and seq, an activity credited at most once, an entry reversed at most once,
and an activity's verdict that moves only from `received`, or once more from `held` after review."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T10:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "book constraints, append-only triggers, verdict transitions"

SQL = [
    "ALTER TABLE book_head ADD CONSTRAINT book_head_holder_fk FOREIGN KEY (holder_id) REFERENCES holder (id)",
    "ALTER TABLE book_head ADD CONSTRAINT book_head_seq_nonnegative CHECK (seq >= 0)",
    "ALTER TABLE book_entry ADD CONSTRAINT book_entry_position UNIQUE (holder, seq)",
    "ALTER TABLE book_entry ADD CONSTRAINT book_entry_seq_positive CHECK (seq >= 1)",
    """ALTER TABLE book_entry ADD CONSTRAINT book_entry_kind_shape CHECK (
         (kind = 'credit' AND reduction_mg >= 0 AND energy >= 0 AND reverses IS NULL)
         OR (kind = 'reversal' AND reduction_mg <= 0 AND energy <= 0 AND reverses IS NOT NULL))""",
    "ALTER TABLE book_entry ADD CONSTRAINT book_entry_hashes CHECK (length(prev_hash) = 32 AND length(entry_hash) = 32)",
    "ALTER TABLE book_entry ADD CONSTRAINT book_entry_tier_known CHECK (trust_tier IN ('verified', 'device', 'self_reported'))",
    "CREATE UNIQUE INDEX book_entry_credit_once ON book_entry (activity) WHERE kind = 'credit'",
    "CREATE UNIQUE INDEX book_entry_reversed_once ON book_entry (reverses) WHERE reverses IS NOT NULL",
    "CREATE INDEX book_entry_holder_day ON book_entry (holder, local_day)",
    "CREATE INDEX book_entry_holder_behaviour_day ON book_entry (holder, behaviour, local_day)",
    """CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION '% is append-only: correct it with a reversing entry', TG_TABLE_NAME
           USING ERRCODE = 'restrict_violation';
       END $$""",
    "CREATE TRIGGER book_entry_no_update BEFORE UPDATE ON book_entry FOR EACH ROW EXECUTE FUNCTION refuse_change()",
    "CREATE TRIGGER book_entry_no_delete BEFORE DELETE ON book_entry FOR EACH ROW EXECUTE FUNCTION refuse_change()",
    """CREATE TRIGGER book_entry_no_truncate BEFORE TRUNCATE ON book_entry
       FOR EACH STATEMENT EXECUTE FUNCTION refuse_change()""",
    """ALTER TABLE activity ADD CONSTRAINT activity_verdict_known CHECK (verdict IN
         ('received', 'credited', 'partially_credited', 'duplicate', 'rejected', 'held'))""",
    "CREATE INDEX activity_held ON activity (received_at) WHERE verdict = 'held'",
    "CREATE INDEX activity_holder_received ON activity (holder, received_at DESC, id DESC)",
    """CREATE FUNCTION activity_verdict_moves_once() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF NEW.verdict IS DISTINCT FROM OLD.verdict AND OLD.verdict NOT IN ('received', 'held') THEN
           RAISE EXCEPTION 'an activity''s verdict is final once given (% -> %)', OLD.verdict, NEW.verdict
             USING ERRCODE = 'restrict_violation';
         END IF;
         RETURN NEW;
       END $$""",
    """CREATE TRIGGER activity_verdict_final BEFORE UPDATE ON activity
       FOR EACH ROW EXECUTE FUNCTION activity_verdict_moves_once()""",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="wallet", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
