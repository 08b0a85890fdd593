"""Books written before green energy existed get their energy balls now: every credit with energy grows one
ball (ripe at once, collectable for 72 hours from the upgrade), issued from `energy:issuance` like any other;
a credit that was already reversed gets its ball cancelled straight away. Afterwards every credit has grown
its ball, as the ledger check expects. Idempotent: credits that have a ball are left alone."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T11:55:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "energy balls for credits booked before 0.4.0"

BACKFILL = """
WITH credits AS (
    SELECT e.id, e.holder, e.energy, EXISTS (SELECT 1 FROM book_entry r WHERE r.reverses = e.id) AS reversed
    FROM book_entry e
    WHERE e.kind = 'credit' AND e.energy > 0 AND NOT EXISTS (SELECT 1 FROM energy_ball b WHERE b.entry = e.id)
),
balls AS (
    INSERT INTO energy_ball (holder, entry, amount, grown_at, ripens_at, expires_at, state, resolved_at)
    SELECT holder, id, energy, now(), now(), now() + interval '72 hours',
           CASE WHEN reversed THEN 'cancelled' ELSE 'growing' END, CASE WHEN reversed THEN now() END
    FROM credits ORDER BY id
    RETURNING id, holder, entry, amount, state
),
accounts AS (
    SELECT b.*, a.id AS balls_account, (SELECT id FROM ledger_account WHERE code = 'energy:issuance') AS issuance
    FROM balls b JOIN ledger_account a ON a.holder = b.holder AND a.unit = 'energy' AND a.purpose = 'balls'
),
grown AS (
    INSERT INTO ledger_transfer (key, unit, debit_account, credit_account, amount, kind, ref, created_at)
    SELECT 'ball:' || id || ':grown', 'energy', issuance, balls_account, amount, 'ball.grown',
           jsonb_build_object('ball', id, 'entry', entry, 'backfill', true), now()
    FROM accounts ORDER BY id
    RETURNING 1
),
cancelled AS (
    INSERT INTO ledger_transfer (key, unit, debit_account, credit_account, amount, kind, ref, created_at)
    SELECT 'ball:' || id || ':cancelled', 'energy', balls_account, issuance, amount, 'ball.cancelled',
           jsonb_build_object('ball', id, 'entry', entry, 'backfill', true), now()
    FROM accounts WHERE state = 'cancelled' ORDER BY id
    RETURNING 1
)
UPDATE ledger_account a SET balance = a.balance + g.total
FROM (SELECT holder, sum(amount) AS total FROM balls WHERE state = 'growing' GROUP BY holder) g
WHERE a.holder = g.holder AND a.unit = 'energy' AND a.purpose = 'balls'
"""


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="wallet", description=DESCRIPTION)

    async def run():
        await engine_finder().run_ddl(BACKFILL)

    manager.add_raw(run)
    return manager
