"""The partner's own scope for the client credentials grant: operators may allow `ledger:read`, and the
database refuses it wherever a resident's consent is recorded (codes, grants, sub-accounts, consents), so no bug in
the authorization code flow can hand a resident-linked token the partner's own scope.

It widens the partner table's scope check (the wallet app's): the oauth app migrates after the wallet app."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T16:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "ledger:read, a client credentials scope"

SQL = [
    "ALTER TABLE partner DROP CONSTRAINT partner_scopes_known",
    """ALTER TABLE partner ADD CONSTRAINT partner_scopes_known
         CHECK (allowed_scopes <@ ARRAY['activities:write', 'book:read', 'profile:read', 'ledger:read']::varchar[])""",
    "ALTER TABLE oauth_code ADD CONSTRAINT oauth_code_resident_scopes CHECK (NOT scopes && ARRAY['ledger:read']::varchar[])",
    """ALTER TABLE oauth_grant ADD CONSTRAINT oauth_grant_resident_scopes
         CHECK (NOT scopes && ARRAY['ledger:read']::varchar[])""",
    """ALTER TABLE sub_account ADD CONSTRAINT sub_account_resident_scopes
         CHECK (NOT scopes && ARRAY['ledger:read']::varchar[])""",
    "ALTER TABLE consent ADD CONSTRAINT consent_resident_scopes CHECK (NOT scopes && ARRAY['ledger:read']::varchar[])",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="oauth", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
