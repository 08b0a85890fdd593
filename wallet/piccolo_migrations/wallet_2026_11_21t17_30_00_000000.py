"""The carbon market's guarantees, in the database: a book entry sits in at most one live lot (a partial UNIQUE
index), a lot and a sale move only forward through their states, a lot has at most one live sale and a settled one
forever, a programme's rules never change, payouts and lot contents are never edited or deleted. The money ledger
(unit `fen`) gets its system accounts: the exchange the proceeds come from and the conversion accounts that turn
fen into energy at a programme's published rate."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T17:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "carbon market constraints and money-ledger system accounts"

SQL = [
    # -- the money ledger
    "ALTER TABLE ledger_account DROP CONSTRAINT ledger_account_purpose_known",
    """ALTER TABLE ledger_account ADD CONSTRAINT ledger_account_purpose_known CHECK (purpose IN
         ('available', 'balls', 'held', 'issuance', 'expiry', 'mall', 'project', 'exchange', 'benefit',
          'conversion'))""",
    """INSERT INTO ledger_account (unit, purpose, code, holder, balance, created_at) VALUES
         ('fen', 'exchange', 'fen:exchange', NULL, NULL, now()),
         ('fen', 'conversion', 'fen:conversion', NULL, NULL, now()),
         ('energy', 'conversion', 'energy:conversion', NULL, NULL, now())""",
    # -- programmes
    """ALTER TABLE market_programme ADD CONSTRAINT market_programme_rules CHECK (
         payout IN ('fen', 'energy') AND (payout = 'energy') = (energy_per_fen IS NOT NULL)
         AND (energy_per_fen IS NULL OR energy_per_fen > 0)
         AND benefit_ppm BETWEEN 0 AND 1000000 AND (benefit_ppm = 0 OR benefit_account IS NOT NULL)
         AND period_from <= period_to AND settle_days >= 0 AND status IN ('open', 'closed')
         AND jsonb_typeof(behaviours) = 'array' AND jsonb_array_length(behaviours) > 0
         AND jsonb_typeof(methodology_releases) = 'array' AND jsonb_array_length(methodology_releases) > 0
         AND jsonb_typeof(trust_tiers) = 'array' AND jsonb_array_length(trust_tiers) > 0)""",
    """CREATE FUNCTION market_programme_rules_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF (to_jsonb(NEW) - 'status') IS DISTINCT FROM (to_jsonb(OLD) - 'status') THEN
           RAISE EXCEPTION 'a programme''s rules never change; close it and open another'
             USING ERRCODE = 'restrict_violation';
         END IF;
         RETURN NEW;
       END $$""",
    """CREATE TRIGGER market_programme_rules_fixed BEFORE UPDATE ON market_programme
       FOR EACH ROW EXECUTE FUNCTION market_programme_rules_fixed()""",
    """CREATE TRIGGER market_programme_no_delete BEFORE DELETE ON market_programme
       FOR EACH ROW EXECUTE FUNCTION refuse_change()""",
    # -- lots
    """ALTER TABLE market_lot ADD CONSTRAINT market_lot_shape CHECK (
         state IN ('open', 'pending', 'settled', 'cancelled') AND target_mg > 0 AND total_mg >= target_mg
         AND entries > 0 AND holders > 0 AND holders <= entries AND day_from <= day_to
         AND octet_length(manifest_hash) = 32 AND reversed_mg >= 0 AND (state = 'cancelled') = (cancelled_at IS NOT NULL))""",
    "CREATE UNIQUE INDEX market_lot_key_once ON market_lot (created_by, idempotency_key) WHERE idempotency_key IS NOT NULL",
    "CREATE INDEX market_lot_by_state ON market_lot (state, id DESC)",
    """CREATE FUNCTION market_lot_moves_forward() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF NOT ((OLD.state = NEW.state) OR (OLD.state = 'open' AND NEW.state IN ('pending', 'cancelled'))
                 OR (OLD.state = 'pending' AND NEW.state IN ('open', 'settled'))) THEN
           RAISE EXCEPTION 'a lot cannot go from % to %', OLD.state, NEW.state USING ERRCODE = 'restrict_violation';
         END IF;
         IF (to_jsonb(NEW) - 'state' - 'cancelled_at' - 'cancel_reason' - 'reversed_mg')
            IS DISTINCT FROM (to_jsonb(OLD) - 'state' - 'cancelled_at' - 'cancel_reason' - 'reversed_mg')
            OR NEW.reversed_mg < OLD.reversed_mg THEN
           RAISE EXCEPTION 'what a lot holds never changes' USING ERRCODE = 'restrict_violation';
         END IF;
         RETURN NEW;
       END $$""",
    "CREATE TRIGGER market_lot_moves_forward BEFORE UPDATE ON market_lot FOR EACH ROW EXECUTE FUNCTION market_lot_moves_forward()",
    "CREATE TRIGGER market_lot_no_delete BEFORE DELETE ON market_lot FOR EACH ROW EXECUTE FUNCTION refuse_change()",
    # A partner reversing a pooled entry marks its lot (an open lot with reversals cannot be sold; a sold one says so).
    """CREATE FUNCTION market_lot_notes_reversal() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         UPDATE market_lot l SET reversed_mg = l.reversed_mg + i.reduction_mg
         FROM market_lot_item i WHERE i.entry = NEW.reverses AND NOT i.released AND l.id = i.lot;
         RETURN NULL;
       END $$""",
    """CREATE TRIGGER book_entry_reversal_marks_lot AFTER INSERT ON book_entry
       FOR EACH ROW WHEN (NEW.kind = 'reversal') EXECUTE FUNCTION market_lot_notes_reversal()""",
    # -- lot items: an entry in at most one live lot, ever. A lot's row is written last, when its totals and manifest
    # hash are known, so its items and contributors refer to it at commit.
    """ALTER TABLE market_lot_item ALTER CONSTRAINT market_lot_item_lot_fkey DEFERRABLE INITIALLY DEFERRED""",
    """ALTER TABLE market_lot_holder ALTER CONSTRAINT market_lot_holder_lot_fkey DEFERRABLE INITIALLY DEFERRED""",
    "ALTER TABLE market_lot_item ADD CONSTRAINT market_lot_item_positive CHECK (reduction_mg > 0)",
    "CREATE UNIQUE INDEX market_lot_item_live ON market_lot_item (entry) WHERE NOT released",
    "CREATE UNIQUE INDEX market_lot_item_once_per_lot ON market_lot_item (lot, entry)",
    "CREATE INDEX market_lot_item_of_holder ON market_lot_item (holder, lot, entry)",
    """CREATE FUNCTION market_lot_item_only_released() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF OLD.released OR NOT NEW.released OR (to_jsonb(NEW) - 'released') IS DISTINCT FROM (to_jsonb(OLD) - 'released')
         THEN
           RAISE EXCEPTION 'a lot item can only be released, once' USING ERRCODE = 'restrict_violation';
         END IF;
         RETURN NEW;
       END $$""",
    """CREATE TRIGGER market_lot_item_only_released BEFORE UPDATE ON market_lot_item
       FOR EACH ROW EXECUTE FUNCTION market_lot_item_only_released()""",
    "CREATE TRIGGER market_lot_item_no_delete BEFORE DELETE ON market_lot_item FOR EACH ROW EXECUTE FUNCTION refuse_change()",
    "ALTER TABLE market_lot_holder ADD CONSTRAINT market_lot_holder_once UNIQUE (lot, holder)",
    "CREATE INDEX market_lot_holder_of_holder ON market_lot_holder (holder, lot DESC)",
    "CREATE TRIGGER market_lot_holder_no_update BEFORE UPDATE ON market_lot_holder FOR EACH ROW EXECUTE FUNCTION refuse_change()",
    "CREATE TRIGGER market_lot_holder_no_delete BEFORE DELETE ON market_lot_holder FOR EACH ROW EXECUTE FUNCTION refuse_change()",
    # -- sales: one live sale per lot; a settled sale is forever
    """ALTER TABLE market_sale ADD CONSTRAINT market_sale_shape CHECK (
         state IN ('pending', 'settled', 'cancelled') AND price_per_tonne_fen > 0 AND gross_fen >= 0
         AND (state = 'settled') = (settled_at IS NOT NULL) AND (state = 'cancelled') = (cancelled_at IS NOT NULL)
         AND (state = 'settled') = (benefit_fen IS NOT NULL AND residents_fen IS NOT NULL AND paid IS NOT NULL)
         AND (benefit_fen IS NULL OR benefit_fen + residents_fen = gross_fen))""",
    "CREATE UNIQUE INDEX market_sale_live_per_lot ON market_sale (lot) WHERE state <> 'cancelled'",
    "CREATE UNIQUE INDEX market_sale_ref_once ON market_sale (exchange_ref) WHERE state <> 'cancelled'",
    """CREATE FUNCTION market_sale_resolves_once() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF OLD.state <> 'pending' OR NEW.state NOT IN ('pending', 'settled', 'cancelled') THEN
           RAISE EXCEPTION 'a sale resolves exactly once (% -> %)', OLD.state, NEW.state
             USING ERRCODE = 'restrict_violation';
         END IF;
         IF (to_jsonb(NEW) - 'state' - 'settled_at' - 'cancelled_at' - 'cancel_reason' - 'benefit_fen' - 'residents_fen'
             - 'paid')
            IS DISTINCT FROM
            (to_jsonb(OLD) - 'state' - 'settled_at' - 'cancelled_at' - 'cancel_reason' - 'benefit_fen' - 'residents_fen'
             - 'paid')
         THEN
           RAISE EXCEPTION 'what a sale recorded never changes' USING ERRCODE = 'restrict_violation';
         END IF;
         RETURN NEW;
       END $$""",
    "CREATE TRIGGER market_sale_resolves_once BEFORE UPDATE ON market_sale FOR EACH ROW EXECUTE FUNCTION market_sale_resolves_once()",
    "CREATE TRIGGER market_sale_no_delete BEFORE DELETE ON market_sale FOR EACH ROW EXECUTE FUNCTION refuse_change()",
    # -- payouts
    "ALTER TABLE market_payout ADD CONSTRAINT market_payout_once UNIQUE (sale, holder)",
    "ALTER TABLE market_payout ADD CONSTRAINT market_payout_shape CHECK (reduction_mg > 0 AND fen >= 0 AND energy >= 0)",
    "CREATE INDEX market_payout_of_holder ON market_payout (holder, sale DESC)",
    "CREATE TRIGGER market_payout_no_update BEFORE UPDATE ON market_payout FOR EACH ROW EXECUTE FUNCTION refuse_change()",
    "CREATE TRIGGER market_payout_no_delete BEFORE DELETE ON market_payout FOR EACH ROW EXECUTE FUNCTION refuse_change()",
    # -- selection of eligible entries walks credits in (local_day, id) order
    "CREATE INDEX book_entry_credit_day ON book_entry (local_day, id) WHERE kind = 'credit'",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="wallet", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
