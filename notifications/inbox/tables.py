from __future__ import annotations

from piccolo.columns import JSONB, UUID, BigSerial, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table


class InboxMessage(Table, tablename="inbox_message"):
    """Stores a template key and its parameters, not rendered text, so a message reads in whatever
    language the holder chooses later. UNIQUE (holder_id, event_id, kind) in the migration."""

    id = BigSerial(primary_key=True)
    holder_id = UUID(index=True)
    event_id = UUID()
    kind = Varchar(length=64)
    params = JSONB(default="{}")
    created_at = Timestamptz(default=TimestamptzNow())
    read_at = Timestamptz(null=True, default=None)
    trigger = Varchar(length=32, default="account")  # what the resident turns on or off (triggers.toml)
    link = Varchar(length=300, default="")  # where the app opens it, e.g. carbonwallet://challenges/7
