"""Writing a holder's book (inside the caller's transaction, under the holder's head lock), verifying
chains, and the reads residents see. Totals are sums over entries, never a separate counter, except the
head's `total_mg` cache, which the verifier checks."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg

from wallet.book.chain import Draft, EntryFields, canonical_bytes, chain_hash, genesis
from wallet.db import connection
from wallet.energy.balls import grow_params, grow_sql

__all__ = [
    "ENTRY_COLUMNS", "Draft", "Head", "Verification", "append", "chain", "entries_insert_sql", "lock_head",
    "verify_all", "verify_holder",
]


@dataclass(frozen=True, slots=True)
class Head:
    holder_id: uuid.UUID
    seq: int
    hash: bytes
    total_mg: int
    time_zone: str


async def lock_head(conn: asyncpg.Connection, holder_id: uuid.UUID) -> Head:
    """Lock the holder's chain tip for the rest of the transaction: their writes queue here, others' do not.
    The head row is created on a holder's first entry; afterwards this is one round trip."""
    row = await conn.fetchrow(_LOCK, holder_id)
    if row is None:
        await conn.execute(
            "INSERT INTO book_head (holder_id, seq, head_hash, total_mg, updated_at) VALUES ($1, 0, NULL, 0, now()) "
            "ON CONFLICT (holder_id) DO NOTHING",
            holder_id,
        )
        row = await conn.fetchrow(_LOCK, holder_id)
    return Head(holder_id, row["seq"], bytes(row["head_hash"] or genesis(holder_id)), row["total_mg"],
                row["time_zone"])


_LOCK = """SELECT b.seq, b.head_hash, b.total_mg, h.time_zone FROM book_head b JOIN holder h ON h.id = b.holder_id
           WHERE b.holder_id = $1 FOR UPDATE OF b"""


def chain(head: Head, drafts: Sequence[Draft]) -> tuple[Head, list[list[Any]]]:
    """Give `drafts` their places in the chain: the new head and one column list per `book_entry` column in
    `ENTRY_COLUMNS` order (for one unnest insert). Pure: callers may fold the insert into a larger statement."""
    recorded_at = datetime.now(UTC)
    columns: list[list[Any]] = [[] for _ in ENTRY_COLUMNS]
    prev = head.hash
    for i, d in enumerate(drafts, start=1):
        f = EntryFields(holder_id=head.holder_id, seq=head.seq + i, recorded_at=recorded_at, **_draft_dict(d))
        canonical = canonical_bytes(f)
        digest = chain_hash(prev, canonical)
        for column, value in zip(columns, (
            f.seq, f.kind, f.activity_id, f.reverses, f.sub_account_id, f.partner_id, f.trust_tier, f.behaviour,
            f.behaviour_version, f.methodology_release, f.category, f.quantity, f.reduction_mg, f.energy,
            f.occurred_at, f.local_day, f.recorded_at, prev, digest, canonical, f.note,
        ), strict=True):
            column.append(value)
        prev = digest
    added_mg = sum(d.reduction_mg for d in drafts)
    return replace(head, seq=head.seq + len(drafts), hash=prev, total_mg=head.total_mg + added_mg), columns


ENTRY_COLUMNS = ("seq", "kind", "activity", "reverses", "sub_account", "partner", "trust_tier", "behaviour",
                 "behaviour_version", "methodology_release", "category", "quantity", "reduction_mg", "energy",
                 "occurred_at", "local_day", "recorded_at", "prev_hash", "entry_hash", "canonical", "note")
ENTRY_TYPES = ("bigint", "text", "uuid", "bigint", "uuid", "uuid", "text", "text", "int", "text", "text", "bigint",
               "bigint", "bigint", "timestamptz", "date", "timestamptz", "bytea", "bytea", "bytea", "text")


def entries_insert_sql(first_param: int) -> str:
    """`INSERT INTO book_entry … SELECT … FROM unnest(…)` whose column arrays are parameters first_param…;
    the holder is $1 of the enclosing statement."""
    params = ", ".join(f"${first_param + i}::{t}[]" for i, t in enumerate(ENTRY_TYPES))
    names = ", ".join(ENTRY_COLUMNS)
    return f"INSERT INTO book_entry (holder, {names}) SELECT $1, {names} FROM unnest({params}) AS src({names})"  # noqa: S608


async def append(conn: asyncpg.Connection, head: Head, drafts: Sequence[Draft]) -> tuple[Head, dict[uuid.UUID, int]]:
    """Chain and insert `drafts`, move the head and grow the credits' energy balls, in one round trip;
    returns the new head and each activity's entry id."""
    if not drafts:
        return head, {}
    new_head, columns = chain(head, drafts)
    first = len(ENTRY_COLUMNS) + 2
    inserted = await conn.fetch(
        f"""WITH e AS ({entries_insert_sql(2)} RETURNING id, activity, energy),
                h AS (UPDATE book_head SET seq = ${first}, head_hash = ${first + 1}, total_mg = ${first + 2},
                      updated_at = now() WHERE holder_id = $1 RETURNING 1),{grow_sql("e", first + 3)}
            SELECT id, activity FROM e""",  # noqa: S608 - generated placeholders only
        head.holder_id, *columns, new_head.seq, new_head.hash, new_head.total_mg, *grow_params(),
    )
    return new_head, {r["activity"]: r["id"] for r in inserted}


def _draft_dict(d: Draft) -> dict[str, Any]:
    return {name: getattr(d, name) for name in Draft.__slots__}


# -- verification -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verification:
    holder_id: uuid.UUID
    ok: bool
    entries: int
    total_mg: int
    broken_seq: int | None = None
    reason: str | None = None


_ENTRIES = """
SELECT e.*, a.external_id FROM book_entry e JOIN activity a ON a.id = e.activity
WHERE e.holder = $1 ORDER BY e.seq, e.id
"""


async def verify_holder(holder_id: uuid.UUID) -> Verification:
    """Recompute the chain from genesis: positions, links, hashes, the bytes against the columns, and the
    head against the last entry and the sum. The first broken link is named; nothing after it is trusted."""
    async with connection() as conn:
        head = await conn.fetchrow("SELECT seq, head_hash, total_mg FROM book_head WHERE holder_id = $1", holder_id)
        rows = await conn.fetch(_ENTRIES, holder_id)
        credited = await conn.fetch(
            "SELECT id, credited_mg FROM activity WHERE holder = $1 AND verdict IN ('credited', 'partially_credited')",
            holder_id,
        )
    prev, total = genesis(holder_id), 0

    def broken(seq: int, reason: str) -> Verification:
        return Verification(holder_id, False, len(rows), total, seq, reason)

    for expected_seq, row in enumerate(rows, start=1):
        if row["seq"] != expected_seq:
            return broken(expected_seq, f"entry {expected_seq} is missing or out of order (found {row['seq']})")
        if bytes(row["prev_hash"]) != prev:
            return broken(row["seq"], "prev_hash does not link to the previous entry")
        rebuilt = canonical_bytes(EntryFields(
            holder_id=holder_id, seq=row["seq"], kind=row["kind"], activity_id=row["activity"],
            external_id=row["external_id"], reverses=row["reverses"], sub_account_id=row["sub_account"],
            partner_id=row["partner"], trust_tier=row["trust_tier"], behaviour=row["behaviour"],
            behaviour_version=row["behaviour_version"], methodology_release=row["methodology_release"],
            category=row["category"], quantity=row["quantity"], reduction_mg=row["reduction_mg"],
            energy=row["energy"], occurred_at=row["occurred_at"], local_day=row["local_day"],
            recorded_at=row["recorded_at"], note=row["note"],
        ))
        if rebuilt != bytes(row["canonical"]):
            return broken(row["seq"], "the stored columns differ from the hashed bytes")
        if chain_hash(prev, rebuilt) != bytes(row["entry_hash"]):
            return broken(row["seq"], "entry_hash does not match the entry's bytes")
        prev = bytes(row["entry_hash"])
        total += row["reduction_mg"]
    head_seq = head["seq"] if head else 0
    if head_seq != len(rows):
        return broken(len(rows) + 1, f"the chain head says {head_seq} entries but {len(rows)} are stored")
    if head is not None and rows and bytes(head["head_hash"]) != prev:
        return broken(len(rows), "the chain head's hash is not the last entry's")
    if head is not None and head["total_mg"] != total:
        return broken(len(rows), f"the cached total {head['total_mg']} mg differs from the entries' {total} mg")
    # Reconciliation (LEDGER L11): every activity judged credited has exactly its credit in the chain, so a
    # cut tail with a rewound head still shows. (Against someone rewriting activities too: signed checkpoints.)
    credits = {r["activity"]: r["reduction_mg"] for r in rows if r["kind"] == "credit"}
    missing = [a for a in credited if credits.get(a["id"]) != a["credited_mg"]]
    if missing:
        return broken(len(rows) + 1, f"activity {missing[0]['id']} was credited but its entry is missing or differs")
    return Verification(holder_id, True, len(rows), total)


async def verify_all() -> AsyncIterator[Verification]:
    """Every holder with a book, one at a time (memory stays bounded by the largest single book)."""
    async with connection() as conn:
        holders = [r["holder_id"] for r in await conn.fetch("SELECT holder_id FROM book_head ORDER BY holder_id")]
    for holder_id in holders:
        yield await verify_holder(holder_id)
