"""Friend requests keep the address they were sent to (masked, and a hash to spot repeats), so requests to
addresses nobody uses are stored like any other and the sender's list cannot tell them apart."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T13:25:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "friend requests remember their address"

SQL = [
    """UPDATE friend_request r SET to_address_masked = CASE
         WHEN h.email IS NOT NULL THEN left(h.email, 1) || '***@' || split_part(h.email, '@', 2)
         WHEN h.phone LIKE '+86%' THEN substr(h.phone, 4, 3) || '****' || right(h.phone, 4)
         ELSE left(h.phone, 4) || '****' || right(h.phone, 4) END,
         to_address_hash = sha256(convert_to(CASE WHEN h.email IS NOT NULL THEN 'email:' || h.email
                                                  ELSE 'phone:' || h.phone END, 'UTF8'))
       FROM holder h WHERE h.id = r.to_holder""",
    """CREATE UNIQUE INDEX friend_request_pending_address ON friend_request (from_holder, to_address_hash)
         WHERE status = 'pending'""",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="gamification", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
