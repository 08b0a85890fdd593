"""The energy ledger's guarantees, in the database (LEDGER L1-L8): transfers are append-only, positive, between
two different accounts of their own unit (composite foreign keys), each pending resolved at most once; holder
accounts cache a balance that can never go below zero, system accounts cache nothing (their balance is a sum
over transfers, so no award locks a hot row); every holder has their three energy accounts from birth.
Energy balls end exactly once, redemptions resolve exactly once, and neither can be deleted."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T11:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "ledger, energy balls, mall and donation constraints"

SQL = [
    # -- accounts
    "ALTER TABLE ledger_account ADD CONSTRAINT ledger_account_balance_floor CHECK (balance >= 0)",
    "ALTER TABLE ledger_account ADD CONSTRAINT ledger_account_cache_shape CHECK ((holder IS NULL) = (balance IS NULL))",
    "ALTER TABLE ledger_account ADD CONSTRAINT ledger_account_unit_known CHECK (unit IN ('energy', 'fen'))",
    """ALTER TABLE ledger_account ADD CONSTRAINT ledger_account_purpose_known CHECK (purpose IN
         ('available', 'balls', 'held', 'issuance', 'expiry', 'mall', 'project'))""",
    "ALTER TABLE ledger_account ADD CONSTRAINT ledger_account_id_unit UNIQUE (id, unit)",
    "CREATE UNIQUE INDEX ledger_account_of_holder ON ledger_account (holder, unit, purpose) WHERE holder IS NOT NULL",
    """CREATE FUNCTION ledger_account_only_balance_moves() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF NEW.id <> OLD.id OR NEW.unit <> OLD.unit OR NEW.purpose <> OLD.purpose OR NEW.code <> OLD.code
            OR NEW.holder IS DISTINCT FROM OLD.holder THEN
           RAISE EXCEPTION 'a ledger account''s identity never changes' USING ERRCODE = 'restrict_violation';
         END IF;
         RETURN NEW;
       END $$""",
    """CREATE TRIGGER ledger_account_identity BEFORE UPDATE ON ledger_account
       FOR EACH ROW EXECUTE FUNCTION ledger_account_only_balance_moves()""",
    "CREATE TRIGGER ledger_account_no_delete BEFORE DELETE ON ledger_account FOR EACH ROW EXECUTE FUNCTION refuse_change()",
    """INSERT INTO ledger_account (unit, purpose, code, holder, balance, created_at) VALUES
         ('energy', 'issuance', 'energy:issuance', NULL, NULL, now()),
         ('energy', 'expiry', 'energy:expiry', NULL, NULL, now()),
         ('energy', 'mall', 'energy:mall', NULL, NULL, now())""",
    """CREATE FUNCTION holder_energy_accounts() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         INSERT INTO ledger_account (unit, purpose, code, holder, balance, created_at)
         SELECT 'energy', p, 'energy:' || NEW.id || ':' || p, NEW.id, 0, now()
         FROM unnest(ARRAY['available', 'balls', 'held']) AS p;
         RETURN NEW;
       END $$""",
    """CREATE TRIGGER holder_energy_accounts AFTER INSERT ON holder
       FOR EACH ROW EXECUTE FUNCTION holder_energy_accounts()""",
    """INSERT INTO ledger_account (unit, purpose, code, holder, balance, created_at)
       SELECT 'energy', p, 'energy:' || h.id || ':' || p, h.id, 0, now()
       FROM holder h CROSS JOIN unnest(ARRAY['available', 'balls', 'held']) AS p ORDER BY h.id, p""",
    # -- transfers
    "ALTER TABLE ledger_transfer ADD CONSTRAINT ledger_transfer_positive CHECK (amount > 0)",
    "ALTER TABLE ledger_transfer ADD CONSTRAINT ledger_transfer_two_accounts CHECK (debit_account <> credit_account)",
    """ALTER TABLE ledger_transfer ADD CONSTRAINT ledger_transfer_debit_unit
         FOREIGN KEY (debit_account, unit) REFERENCES ledger_account (id, unit)""",
    """ALTER TABLE ledger_transfer ADD CONSTRAINT ledger_transfer_credit_unit
         FOREIGN KEY (credit_account, unit) REFERENCES ledger_account (id, unit)""",
    """ALTER TABLE ledger_transfer ADD CONSTRAINT ledger_transfer_resolves_fk
         FOREIGN KEY (resolves) REFERENCES ledger_transfer (id)""",
    "CREATE UNIQUE INDEX ledger_transfer_resolved_once ON ledger_transfer (resolves) WHERE resolves IS NOT NULL",
    "CREATE INDEX ledger_transfer_debit ON ledger_transfer (debit_account, id) INCLUDE (amount)",
    "CREATE INDEX ledger_transfer_credit ON ledger_transfer (credit_account, id) INCLUDE (amount)",
    "CREATE TRIGGER ledger_transfer_no_update BEFORE UPDATE ON ledger_transfer FOR EACH ROW EXECUTE FUNCTION refuse_change()",
    "CREATE TRIGGER ledger_transfer_no_delete BEFORE DELETE ON ledger_transfer FOR EACH ROW EXECUTE FUNCTION refuse_change()",
    """CREATE TRIGGER ledger_transfer_no_truncate BEFORE TRUNCATE ON ledger_transfer
       FOR EACH STATEMENT EXECUTE FUNCTION refuse_change()""",
    """CREATE VIEW ledger_posting AS
         SELECT id AS transfer, debit_account AS account, unit, -amount AS amount, kind, created_at FROM ledger_transfer
         UNION ALL
         SELECT id, credit_account, unit, amount, kind, created_at FROM ledger_transfer""",
    # -- energy balls
    "ALTER TABLE energy_ball ADD CONSTRAINT energy_ball_positive CHECK (amount > 0)",
    "ALTER TABLE energy_ball ADD CONSTRAINT energy_ball_window CHECK (grown_at <= ripens_at AND ripens_at < expires_at)",
    """ALTER TABLE energy_ball ADD CONSTRAINT energy_ball_state_known CHECK (
         state IN ('growing', 'collected', 'expired', 'cancelled')
         AND (state = 'growing') = (resolved_at IS NULL) AND (state = 'collected') = (collected_by IS NOT NULL))""",
    "CREATE INDEX energy_ball_growing ON energy_ball (holder, ripens_at, id) WHERE state = 'growing'",
    "CREATE INDEX energy_ball_expiring ON energy_ball (expires_at) WHERE state = 'growing'",
    "CREATE INDEX energy_ball_of_holder ON energy_ball (holder, id DESC)",
    """CREATE INDEX energy_ball_helped ON energy_ball (collected_by, holder, resolved_at)
         WHERE state = 'collected' AND collected_by <> holder""",
    """CREATE FUNCTION energy_ball_ends_once() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF OLD.state <> 'growing' OR NEW.amount <> OLD.amount OR NEW.holder <> OLD.holder OR NEW.entry <> OLD.entry
            OR NEW.ripens_at <> OLD.ripens_at OR NEW.expires_at <> OLD.expires_at THEN
           RAISE EXCEPTION 'an energy ball ends exactly once and its energy never changes'
             USING ERRCODE = 'restrict_violation';
         END IF;
         RETURN NEW;
       END $$""",
    "CREATE TRIGGER energy_ball_ends_once BEFORE UPDATE ON energy_ball FOR EACH ROW EXECUTE FUNCTION energy_ball_ends_once()",
    "CREATE TRIGGER energy_ball_no_delete BEFORE DELETE ON energy_ball FOR EACH ROW EXECUTE FUNCTION refuse_change()",
    """CREATE TRIGGER energy_ball_no_truncate BEFORE TRUNCATE ON energy_ball
       FOR EACH STATEMENT EXECUTE FUNCTION refuse_change()""",
    # -- mall
    "ALTER TABLE reward ADD CONSTRAINT reward_price_positive CHECK (price > 0)",
    "ALTER TABLE reward ADD CONSTRAINT reward_stock_nonnegative CHECK (stock >= 0)",
    "ALTER TABLE reward ADD CONSTRAINT reward_limits_positive CHECK (per_day_limit >= 1 AND lifetime_limit >= 1)",
    "ALTER TABLE reward ADD CONSTRAINT reward_window CHECK (valid_from IS NULL OR valid_until IS NULL OR valid_from < valid_until)",
    "ALTER TABLE reward ADD CONSTRAINT reward_status_known CHECK (status IN ('active', 'paused', 'retired'))",
    """ALTER TABLE reward ADD CONSTRAINT reward_fulfilment_known CHECK (fulfilment IN ('code', 'pool', 'merchant')
         AND (fulfilment <> 'merchant' OR merchant_url IS NOT NULL))""",
    "ALTER TABLE reward_voucher ADD CONSTRAINT reward_voucher_once UNIQUE (reward, code)",
    "CREATE INDEX reward_voucher_free ON reward_voucher (reward, id) WHERE redemption IS NULL",
    "ALTER TABLE redemption ADD CONSTRAINT redemption_key_once UNIQUE (holder, idempotency_key)",
    """ALTER TABLE redemption ADD CONSTRAINT redemption_state_known CHECK (
         state IN ('pending', 'fulfilled', 'voided') AND (state = 'pending') = (resolve_transfer IS NULL)
         AND (state = 'fulfilled') = (voucher_code IS NOT NULL) AND (state = 'voided') = (void_reason IS NOT NULL))""",
    "ALTER TABLE redemption ADD CONSTRAINT redemption_reserved_by FOREIGN KEY (reserve_transfer) REFERENCES ledger_transfer (id)",
    "ALTER TABLE redemption ADD CONSTRAINT redemption_resolved_by FOREIGN KEY (resolve_transfer) REFERENCES ledger_transfer (id)",
    "CREATE UNIQUE INDEX redemption_reserve_once ON redemption (reserve_transfer)",
    "CREATE UNIQUE INDEX redemption_resolve_once ON redemption (resolve_transfer) WHERE resolve_transfer IS NOT NULL",
    "CREATE INDEX redemption_of_holder ON redemption (holder, id DESC)",
    "CREATE INDEX redemption_limits ON redemption (holder, reward, local_day) WHERE state <> 'voided'",
    "CREATE INDEX redemption_pending ON redemption (created_at) WHERE state = 'pending'",
    """CREATE FUNCTION redemption_resolves_once() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF OLD.state <> 'pending' AND NEW.state IS DISTINCT FROM OLD.state THEN
           RAISE EXCEPTION 'a redemption resolves exactly once (% -> %)', OLD.state, NEW.state
             USING ERRCODE = 'restrict_violation';
         END IF;
         IF NEW.price <> OLD.price OR NEW.holder <> OLD.holder OR NEW.reward <> OLD.reward
            OR NEW.reserve_transfer <> OLD.reserve_transfer THEN
           RAISE EXCEPTION 'what a redemption reserved never changes' USING ERRCODE = 'restrict_violation';
         END IF;
         RETURN NEW;
       END $$""",
    "CREATE TRIGGER redemption_resolves_once BEFORE UPDATE ON redemption FOR EACH ROW EXECUTE FUNCTION redemption_resolves_once()",
    "CREATE TRIGGER redemption_no_delete BEFORE DELETE ON redemption FOR EACH ROW EXECUTE FUNCTION refuse_change()",
    """CREATE TRIGGER redemption_no_truncate BEFORE TRUNCATE ON redemption
       FOR EACH STATEMENT EXECUTE FUNCTION refuse_change()""",
    # -- donations
    "ALTER TABLE donation_project ADD CONSTRAINT donation_project_goal_positive CHECK (goal > 0)",
    "ALTER TABLE donation_project ADD CONSTRAINT donation_project_status_known CHECK (status IN ('open', 'completed', 'closed'))",
    "ALTER TABLE donation_certificate ADD CONSTRAINT donation_certificate_once UNIQUE (project, holder)",
    "CREATE INDEX donation_certificate_of_holder ON donation_certificate (holder, id DESC)",
    "CREATE TRIGGER donation_certificate_no_update BEFORE UPDATE ON donation_certificate FOR EACH ROW EXECUTE FUNCTION refuse_change()",
    "CREATE TRIGGER donation_certificate_no_delete BEFORE DELETE ON donation_certificate FOR EACH ROW EXECUTE FUNCTION refuse_change()",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="wallet", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
