"""Each book entry records the id of the transaction that wrote it (`txid`, not part of the hashed bytes), so
readers that follow the book (the leaderboards) can take exactly the entries committed since their last
snapshot: rows of transactions visible in the new snapshot and not in the old one. Ids order by start, not
commit, so a plain id cursor would skip a slow transaction's rows; snapshots do not."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-21T13:05:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "book entries record their writing transaction"

SQL = [
    "ALTER TABLE book_entry ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id()",
    "CREATE INDEX book_entry_txid ON book_entry (txid)",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="wallet", description=DESCRIPTION)

    async def run():
        db = engine_finder()
        for statement in SQL:
            await db.run_ddl(statement)

    manager.add_raw(run)
    return manager
