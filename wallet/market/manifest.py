"""A lot's manifest: the entries, contributors, totals and chain heads the exchange's verifier receives.

The JSON export is canonical (compact, keys sorted, entries by id, contributors by holder id) and its bytes are
exactly what is hashed: `manifest_hash = SHA-256("carbon-lot/v1\\n" ‖ body)`, so a verifier checks it with
`(printf 'carbon-lot/v1\\n'; cat manifest.json) | sha256sum` and never re-serializes (LEDGER T1). Each entry carries
its `entry_hash` and each contributor the head of their chain (seq, hash) when the lot was made: replaying that
chain (`GET /v1/me/book/verify`, or `carbon-wallet verify-books`) shows every entry is in it. The CSV
export has the same entry rows for spreadsheets; its bytes are not hashed.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

__all__ = ["DOMAIN", "FORMAT", "Manifest", "manifest_csv", "read_manifest"]

FORMAT = "carbon-lot/v1"
DOMAIN = (FORMAT + "\n").encode()
CSV_COLUMNS = ("lot", "entry", "holder", "seq", "local_day", "behaviour", "behaviour_version", "methodology_release",
               "trust_tier", "reduction_mg", "entry_hash")

_ENTRIES = """
SELECT i.entry, i.holder, e.seq, e.local_day, e.behaviour, e.behaviour_version, e.methodology_release, e.trust_tier,
       i.reduction_mg, e.entry_hash
FROM market_lot_item i JOIN book_entry e ON e.id = i.entry WHERE i.lot = $1 ORDER BY i.entry"""
_CONTRIBUTORS = """
SELECT holder, entries, reduction_mg, head_seq, head_hash, consented_at FROM market_lot_holder
WHERE lot = $1 ORDER BY holder"""


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


class Manifest(msgspec.Struct, frozen=True):
    body: bytes
    sha256: bytes
    entries: list[asyncpg.Record]


def _entry(r: asyncpg.Record) -> dict[str, Any]:
    return {"entry": r["entry"], "holder": str(r["holder"]), "seq": r["seq"], "local_day": r["local_day"].isoformat(),
            "behaviour": r["behaviour"], "behaviour_version": r["behaviour_version"],
            "methodology_release": r["methodology_release"], "trust_tier": r["trust_tier"],
            "reduction_mg": r["reduction_mg"], "entry_hash": bytes(r["entry_hash"]).hex()}


async def read_manifest(conn: asyncpg.Connection, lot: dict[str, Any], rules: dict[str, Any]) -> Manifest:
    """Render a lot's manifest from its stored items and contributors. `lot` has id, created_at, day_from, day_to,
    target_mg, total_mg, entries and holders: the same values at creation (before the lot's row is written) and at
    every export, so the same bytes come out. Rendering runs in a thread: a 100,000-entry manifest is ~1 s of CPU
    that would otherwise stall every request on this process's event loop."""
    entries = await conn.fetch(_ENTRIES, lot["id"])
    contributors = await conn.fetch(_CONTRIBUTORS, lot["id"])
    return await asyncio.to_thread(_render, lot, rules, entries, contributors)


def _render(lot: dict[str, Any], rules: dict[str, Any], entries: list[asyncpg.Record],
            contributors: list[asyncpg.Record]) -> Manifest:
    enc = msgspec.json.Encoder(order="sorted")
    header = {
        "format": FORMAT, "id": lot["id"], "created_at": _time(lot["created_at"]),
        "day_from": lot["day_from"].isoformat(), "day_to": lot["day_to"].isoformat(), "target_mg": lot["target_mg"],
        "total_mg": lot["total_mg"], "entries": lot["entries"], "holders": lot["holders"], "programme": rules,
    }
    parts = [b'{"contributors":[', b",".join(enc.encode({
        "holder": str(c["holder"]), "entries": c["entries"], "reduction_mg": c["reduction_mg"],
        "head_seq": c["head_seq"], "head_hash": bytes(c["head_hash"]).hex(), "consented_at": _time(c["consented_at"]),
    }) for c in contributors), b'],"entries":[', b",".join(enc.encode(_entry(r)) for r in entries),
        b'],"lot":', enc.encode(header), b"}"]
    body = b"".join(parts)
    return Manifest(body, hashlib.sha256(DOMAIN + body).digest(), list(entries))


def manifest_csv(lot_id: int, manifest: Manifest) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in manifest.entries:
        row = _entry(r)
        writer.writerow([lot_id, *(row[c] for c in CSV_COLUMNS[1:])])
    return out.getvalue()
