"""Friends and teams, in the database: one pending request per pair and direction, one block per pair, one
active team per resident, department codes unique within their team, known kinds and statuses."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T13:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "friend requests, blocks, teams and exclusions"

SQL = [
    """ALTER TABLE friend_request ADD CONSTRAINT friend_request_status_known
         CHECK (status IN ('pending', 'accepted', 'declined', 'cancelled'))""",
    "ALTER TABLE friend_request ADD CONSTRAINT friend_request_two_people CHECK (from_holder <> to_holder)",
    """CREATE UNIQUE INDEX friend_request_pending_once ON friend_request (from_holder, to_holder)
         WHERE status = 'pending'""",
    "CREATE INDEX friend_request_to ON friend_request (to_holder, id DESC) WHERE status = 'pending'",
    "CREATE INDEX friend_request_from ON friend_request (from_holder, id DESC)",
    "ALTER TABLE friend_block ADD CONSTRAINT friend_block_once UNIQUE (blocker, blocked)",
    "ALTER TABLE friend_block ADD CONSTRAINT friend_block_two_people CHECK (blocker <> blocked)",
    "CREATE INDEX friend_block_blocked ON friend_block (blocked)",
    "ALTER TABLE team ADD CONSTRAINT team_kind_known CHECK (kind IN ('company', 'organisation'))",
    "ALTER TABLE team ADD CONSTRAINT team_status_known CHECK (status IN ('active', 'archived'))",
    "ALTER TABLE team_department ADD CONSTRAINT team_department_code_once UNIQUE (team, code)",
    "ALTER TABLE team_member ADD CONSTRAINT team_member_role_known CHECK (role IN ('member', 'admin'))",
    "CREATE UNIQUE INDEX team_member_one_team ON team_member (holder) WHERE left_at IS NULL",
    "CREATE INDEX team_member_of_team ON team_member (team, department) WHERE left_at IS NULL",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="gamification", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
