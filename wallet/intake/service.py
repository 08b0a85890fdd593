"""Reading reported activities: per source counts and the data-export view."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from wallet.db import connection

__all__ = ["activity_counts", "holder_activities"]


async def activity_counts(sub_account_id: uuid.UUID) -> dict[str, Any]:
    async with connection() as conn:
        row = await conn.fetchrow(
            """SELECT count(*) AS activities, min(occurred_at) AS first_at, max(occurred_at) AS last_at,
                      count(*) FILTER (WHERE verdict IN ('credited', 'partially_credited')) AS credited,
                      (SELECT coalesce(sum(reduction_mg), 0)::bigint FROM book_entry WHERE sub_account = $1)
                          AS reduction_mg
               FROM activity WHERE sub_account = $1""",
            sub_account_id,
        )
    return dict(row)


async def holder_activities(holder_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every activity reported for a holder, oldest first, with its source: the data-export view."""
    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT a.id, a.sub_account AS sub_account_id, p.name AS partner_name, s.status AS source_status,
                      a.external_id AS event_id, a.behaviour, a.quantity, a.occurred_at, a.ended_at, a.details,
                      a.received_via, a.received_at, a.verdict, a.reason_code, a.reason_params,
                      a.credited_quantity, a.credited_mg, a.behaviour_version, a.methodology_release
               FROM activity a JOIN sub_account s ON s.id = a.sub_account LEFT JOIN partner p ON p.id = a.partner
               WHERE a.holder = $1 ORDER BY a.occurred_at, a.id""",
            holder_id,
        )
    out = []
    for row in rows:
        item = dict(row)
        for key in ("details", "reason_params"):
            if isinstance(item[key], str):
                item[key] = msgspec.json.decode(item[key])
        out.append(item)
    return out
