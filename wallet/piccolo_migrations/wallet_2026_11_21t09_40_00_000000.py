"""Partner, sub-account, consent and activity constraints Piccolo's column builder cannot express, and a
self-reported sub-account for every holder registered before sub-accounts existed."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T09:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "partners, sub-accounts, consents, activities: constraints"

SQL = [
    """ALTER TABLE partner ADD CONSTRAINT partner_kind_known CHECK (kind IN
         ('food_delivery', 'logistics', 'second_hand', 'bike_share', 'transit', 'maps', 'employer', 'other'))""",
    "ALTER TABLE partner ADD CONSTRAINT partner_client_type_known CHECK (client_type IN ('confidential', 'public'))",
    "ALTER TABLE partner ADD CONSTRAINT partner_status_known CHECK (status IN ('active', 'suspended'))",
    "ALTER TABLE partner ADD CONSTRAINT partner_trust_tier_known CHECK (trust_tier IN ('verified', 'device', 'self_reported'))",
    """ALTER TABLE partner ADD CONSTRAINT partner_scopes_known
         CHECK (allowed_scopes <@ ARRAY['activities:write', 'book:read', 'profile:read']::varchar[])""",
    "ALTER TABLE partner ADD CONSTRAINT partner_has_redirect_uri CHECK (cardinality(redirect_uris) >= 1)",
    "ALTER TABLE partner ADD CONSTRAINT partner_limits_positive CHECK (rate_limit_per_minute > 0 AND daily_quota > 0)",
    """ALTER TABLE partner_secret ADD CONSTRAINT partner_secret_shape CHECK (
         (purpose = 'client' AND secret_hash IS NOT NULL AND secret_sealed IS NULL)
         OR (purpose = 'webhook' AND secret_sealed IS NOT NULL AND secret_hash IS NULL))""",
    "CREATE INDEX partner_secret_live ON partner_secret (partner, purpose, created_at)",
    "ALTER TABLE sub_account ADD CONSTRAINT sub_account_kind_known CHECK (kind IN ('partner', 'self'))",
    "ALTER TABLE sub_account ADD CONSTRAINT sub_account_status_known CHECK (status IN ('active', 'unlinked'))",
    "ALTER TABLE sub_account ADD CONSTRAINT sub_account_self_has_no_partner CHECK ((kind = 'self') = (partner IS NULL))",
    """ALTER TABLE sub_account ADD CONSTRAINT sub_account_unlinked_when CHECK (
         (status = 'unlinked') = (unlinked_at IS NOT NULL))""",
    "ALTER TABLE sub_account ADD CONSTRAINT sub_account_one_per_partner UNIQUE (holder, partner)",
    "CREATE UNIQUE INDEX sub_account_one_self ON sub_account (holder) WHERE kind = 'self'",
    "CREATE INDEX sub_account_partner ON sub_account (partner) WHERE partner IS NOT NULL",
    "CREATE INDEX consent_holder_time ON consent (holder, granted_at DESC)",
    "CREATE UNIQUE INDEX consent_one_open ON consent (sub_account) WHERE revoked_at IS NULL",
    "ALTER TABLE activity ADD CONSTRAINT activity_once_per_source UNIQUE (sub_account, external_id)",
    "ALTER TABLE activity ADD CONSTRAINT activity_quantity_positive CHECK (quantity > 0)",
    "ALTER TABLE activity ADD CONSTRAINT activity_via_known CHECK (received_via IN ('token', 'signed_push', 'self'))",
    "ALTER TABLE activity ADD CONSTRAINT activity_interval CHECK (ended_at IS NULL OR ended_at >= occurred_at)",
    "CREATE INDEX activity_holder_time ON activity (holder, occurred_at)",
    "ALTER TABLE partner_push_receipt ADD CONSTRAINT push_receipt_once UNIQUE (partner, message_id)",
    "ALTER TABLE holder_role ADD CONSTRAINT holder_role_once UNIQUE (holder, role, scope)",
    "ALTER TABLE holder_role ADD CONSTRAINT holder_role_known CHECK (role IN ('operator'))",
    """INSERT INTO sub_account (id, holder, partner, kind, status, scopes, linked_at)
       SELECT gen_random_uuid(), id, NULL, 'self', 'active', ARRAY['activities:write', 'book:read']::varchar[], created_at
       FROM holder WHERE status = 'active'
       ON CONFLICT DO NOTHING""",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="wallet", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
