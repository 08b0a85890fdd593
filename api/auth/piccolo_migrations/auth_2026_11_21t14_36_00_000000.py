"""A signed-out session takes its phones' push tokens with it: revoking a session (logout, password change,
refresh-token reuse, account deletion) deletes the devices it registered, in the same transaction."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T14:36:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "revoked sessions remove their devices"

SQL = [
    """CREATE FUNCTION auth_session_revoked_devices() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         DELETE FROM device WHERE session = NEW.id;
         RETURN NULL;
       END $$""",
    """CREATE TRIGGER auth_session_revoked_devices AFTER UPDATE OF revoked_at ON auth_session
       FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
       EXECUTE FUNCTION auth_session_revoked_devices()""",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="auth", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
