"""Received activities and consent records are history: the database refuses to delete them, whoever asks.
(Judgement will update an activity's status; nothing may remove the row a book entry points to.)"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T09:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "activities and consents cannot be deleted"

SQL = [
    """CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION '% rows are history and cannot be deleted', TG_TABLE_NAME
           USING ERRCODE = 'restrict_violation';
       END $$""",
    "CREATE TRIGGER activity_no_delete BEFORE DELETE ON activity FOR EACH ROW EXECUTE FUNCTION refuse_delete()",
    "CREATE TRIGGER consent_no_delete BEFORE DELETE ON consent FOR EACH ROW EXECUTE FUNCTION refuse_delete()",
    """CREATE FUNCTION activity_keep_what_was_reported() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF (NEW.holder, NEW.sub_account, NEW.partner, NEW.external_id, NEW.behaviour, NEW.quantity,
             NEW.occurred_at, NEW.ended_at, NEW.details, NEW.request_digest, NEW.received_via, NEW.received_at)
            IS DISTINCT FROM
            (OLD.holder, OLD.sub_account, OLD.partner, OLD.external_id, OLD.behaviour, OLD.quantity,
             OLD.occurred_at, OLD.ended_at, OLD.details, OLD.request_digest, OLD.received_via, OLD.received_at)
         THEN
           RAISE EXCEPTION 'what a source reported cannot be changed; record a new activity instead'
             USING ERRCODE = 'restrict_violation';
         END IF;
         RETURN NEW;
       END $$""",
    """CREATE TRIGGER activity_reported_is_immutable BEFORE UPDATE ON activity
       FOR EACH ROW EXECUTE FUNCTION activity_keep_what_was_reported()""",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="wallet", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
