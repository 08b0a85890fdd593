"""The carbon book's tamper evidence (LEDGER L3, T1, T4, T5, L11).

The database refuses to change or remove history. Whoever gets past that (a superuser switching off ordinary
triggers with `session_replication_role = replica` for one transaction) cannot edit, delete, reorder,
truncate or splice entries without the verifier (service, resident API, operator CLI) naming the first
broken link. Anyone can recompute every hash and amount from the API, and the export carries the same chain.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from tests.partner_support import ALL_SCOPES, REDIRECT_URI
from tests.support import ROOT, Resident, register
from wallet.accounts.service import ensure_self_sub_account, link_partner
from wallet.book.chain import DOMAIN, EntryFields, canonical_bytes, chain_hash, genesis
from wallet.book.corrections import reverse_entry
from wallet.book.service import Verification, verify_holder
from wallet.db import connection
from wallet.intake.judge import SELF_SOURCE, record_reports
from wallet.intake.reports import Report, Source
from wallet.methodology.catalogue import energy_for, reduction_mg, version_of
from wallet.partners.service import PartnerSpec, register_partner
from wallet.sealing import SecretBox

BEHAVIOURS = ["clothes_recycling", "double_sided_printing", "e_signature", "parcel_box_reuse"]
# Five entries, all well under their caps: (behaviour, quantity).
BOOK = [("parcel_box_reuse", 2), ("clothes_recycling", 1500), ("e_signature", 3), ("double_sided_printing", 40),
        ("parcel_box_reuse", 1)]
EXPORT_HEADER = ["id", "seq", "kind", "local_day", "occurred_at", "behaviour", "behaviour_version",
                 "methodology_release", "category", "quantity", "reduction_mg", "energy", "source", "trust_tier",
                 "activity_id", "event_id", "partner_id", "sub_account_id", "reverses", "recorded_at", "note",
                 "prev_hash", "entry_hash"]


# --- helpers -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def partner(db: object, settings: Any) -> dict[str, Any]:
    made = await register_partner(PartnerSpec(
        name=f"账本测试 {uuid.uuid4().hex[:6]}", name_en="Book Test", kind="other", redirect_uris=[REDIRECT_URI],
        allowed_scopes=ALL_SCOPES, allowed_behaviours=BEHAVIOURS,
    ), SecretBox(settings.data_key))
    return made.partner


@dataclass
class Booked:
    """A resident (with tokens, for the API) whose book holds the given reports, all credited."""

    resident: Resident
    holder_id: uuid.UUID
    source: Source
    total_mg: int


async def booked(client: httpx.Client, partner: dict[str, Any], items: list[tuple[str, int]] = BOOK) -> Booked:
    resident = register(client)
    holder_id = uuid.UUID(resident.holder_id)
    link = await link_partner(holder_id, partner["id"], ["activities:write", "book:read"])
    source = Source(holder_id=holder_id, sub_account_id=link.sub_account_id, partner_id=partner["id"], via="token",
                    trust_tier=partner["trust_tier"], names=(partner["name"], partner["name_en"]),
                    allowed_behaviours=frozenset(partner["allowed_behaviours"]))
    now = datetime.now(UTC)
    receipts = await record_reports(source, [
        Report(f"order-{i}-{uuid.uuid4().hex[:8]}", code, quantity, now - timedelta(minutes=7 * (len(items) - i)))
        for i, (code, quantity) in enumerate(items)
    ])
    assert [r.verdict for r in receipts] == ["credited"] * len(items), receipts
    return Booked(resident, holder_id, source, sum(r.credited_mg for r in receipts))


async def entry(holder_id: uuid.UUID, seq: int) -> asyncpg.Record:
    async with connection() as conn:
        return await conn.fetchrow("SELECT * FROM book_entry WHERE holder = $1 AND seq = $2", holder_id, seq)


async def tamper(*statements: tuple[Any, ...]) -> None:
    """Edit behind the triggers' back, in one transaction: replica mode skips ordinary triggers until commit."""
    async with connection() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        for sql, *args in statements:
            await conn.execute(sql, *args)


class _RolledBack(Exception):
    pass


async def assert_refused(sql: str, *args: Any, says: str = "") -> None:
    """The database refuses `sql` (restrict_violation, naming `says`). The transaction is rolled back even
    if it succeeds, so a missing guard cannot damage the session's data."""
    try:
        async with connection() as conn, conn.transaction():
            await conn.execute(sql, *args)
            raise _RolledBack
    except _RolledBack:
        raise AssertionError(f"the database accepted {sql}") from None
    except asyncpg.RestrictViolationError as exc:
        assert says in str(exc), exc


def all_entries(resident: Resident, page: int = 2) -> list[dict[str, Any]]:
    """Every entry through the API, following cursors (small pages, so pagination is exercised too)."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": page}
    while True:
        r = resident.get("/v1/me/book/entries", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        if body["next_cursor"] is None:
            return items
        params["cursor"] = body["next_cursor"]


def refuse_float(text: str) -> float:
    raise AssertionError(f"a float in a book response: {text}")


def verification_json(v: Verification) -> dict[str, Any]:
    return {"ok": v.ok, "entries": v.entries, "total_mg": v.total_mg, "broken_seq": v.broken_seq, "reason": v.reason}


# --- 1. The database refuses to change history -----------------------------------------------------------


async def test_the_database_refuses_to_update_delete_or_truncate_book_entries(
    client: httpx.Client, partner: dict[str, Any]
) -> None:
    b = await booked(client, partner)
    for sql in ("UPDATE book_entry SET reduction_mg = reduction_mg + 1 WHERE holder = $1",
                "UPDATE book_entry SET seq = seq WHERE holder = $1",  # even an update that changes nothing
                "DELETE FROM book_entry WHERE holder = $1"):
        await assert_refused(sql, b.holder_id, says="append-only")
    await assert_refused("TRUNCATE book_entry CASCADE", says="append-only")  # CASCADE: past energy_ball's key
    assert await verify_holder(b.holder_id) == Verification(b.holder_id, True, len(BOOK), b.total_mg)


async def test_a_final_verdict_never_moves_and_a_reported_activity_never_changes(
    client: httpx.Client, partner: dict[str, Any]
) -> None:
    b = await booked(client, partner, BOOK[:1])
    credited = (await entry(b.holder_id, 1))["activity"]
    for verdict in ("rejected", "duplicate", "received", "held"):
        await assert_refused("UPDATE activity SET verdict = $2, credited_mg = 0 WHERE id = $1", credited, verdict,
                             says="final")
    await assert_refused("UPDATE activity SET quantity = quantity + 1 WHERE id = $1", credited,
                         says="cannot be changed")
    await assert_refused("DELETE FROM activity WHERE id = $1", credited, says="cannot be deleted")

    # A held activity moves once more (the review), and then it is final too.
    self_source = Source(holder_id=b.holder_id, sub_account_id=await ensure_self_sub_account(b.holder_id),
                         partner_id=None, via="self", trust_tier="self_reported", names=SELF_SOURCE)
    (held,) = await record_reports(self_source, [
        Report(f"photo-{uuid.uuid4().hex[:8]}", "own_cup", 1, datetime.now(UTC) - timedelta(minutes=5),
               details={"photo_ref": "cup.jpg"}),
    ])
    assert held.verdict == "held", held
    async with connection() as conn:  # the review's move: allowed
        await conn.execute("UPDATE activity SET verdict = 'rejected' WHERE id = $1", held.activity_id)
    await assert_refused("UPDATE activity SET verdict = 'credited' WHERE id = $1", held.activity_id, says="final")


# --- 2. The verifier names the first broken link ---------------------------------------------------------


async def test_an_untouched_book_verifies_with_its_count_and_total(client: httpx.Client,
                                                                   partner: dict[str, Any]) -> None:
    b = await booked(client, partner)
    v = await verify_holder(b.holder_id)
    assert v == Verification(b.holder_id, True, len(BOOK), b.total_mg)
    assert b.resident.get("/v1/me/book/verify").json() == verification_json(v)
    assert b.resident.get("/v1/me/book").json()["totals"]["all_time_mg"] == b.total_mg

    (more,) = await record_reports(b.source, [Report(f"late-{uuid.uuid4().hex[:8]}", "e_signature", 2,
                                                     datetime.now(UTC) - timedelta(minutes=1))])
    assert more.verdict == "credited"
    assert await verify_holder(b.holder_id) == Verification(b.holder_id, True, len(BOOK) + 1,
                                                            b.total_mg + more.credited_mg)
    empty = register(client)
    assert empty.get("/v1/me/book/verify").json() == {"ok": True, "entries": 0, "total_mg": 0, "broken_seq": None,
                                                      "reason": None}


Tamper = Callable[[Booked], Awaitable[tuple[int, str]]]  # does it; returns the first broken seq and the reason
COLUMNS_DIFFER = "the stored columns differ from the hashed bytes"
UNLINKED = "prev_hash does not link to the previous entry"


def _sql(seq: int, reason: str, *statements: str) -> Tamper:
    async def run(b: Booked) -> tuple[int, str]:
        await tamper(*((sql, b.holder_id) for sql in statements))
        return seq, reason
    return run


async def _edited_amount_and_bytes(b: Booked) -> tuple[int, str]:
    """The columns and the canonical bytes agree again, but the hash was left as it was."""
    row = await entry(b.holder_id, 3)
    fields = msgspec.json.decode(bytes(row["canonical"])[len(DOMAIN):])
    fields["reduction_mg"] -= 1
    forged = DOMAIN + msgspec.json.encode(fields, order="sorted")
    await tamper(("UPDATE book_entry SET reduction_mg = reduction_mg - 1, canonical = $2 WHERE holder = $1 AND seq = 3",
                  b.holder_id, forged))
    return 3, "entry_hash does not match the entry's bytes"


async def _denied_event_id(b: Booked) -> tuple[int, str]:
    """T5: the partner's own event id is inside the hashed bytes, so the activity cannot be re-labelled."""
    row = await entry(b.holder_id, 2)
    await tamper(("UPDATE activity SET external_id = external_id || '-not-ours' WHERE id = $1", row["activity"]))
    return 2, COLUMNS_DIFFER


async def _truncated_tail_and_head(b: Booked) -> tuple[int, str]:
    """The head's count and total rewound as well: its hash still names the removed entry."""
    last = await entry(b.holder_id, 5)
    await tamper(("DELETE FROM book_entry WHERE holder = $1 AND seq = 5", b.holder_id),
                 ("UPDATE book_head SET seq = 4, total_mg = total_mg - $2 WHERE holder_id = $1", b.holder_id,
                  last["reduction_mg"]))
    return 4, "the chain head's hash is not the last entry's"


async def _edited_head_total(b: Booked) -> tuple[int, str]:
    await tamper(("UPDATE book_head SET total_mg = total_mg + 1000000 WHERE holder_id = $1", b.holder_id))
    return 5, f"the cached total {b.total_mg + 1000000} mg differs from the entries' {b.total_mg} mg"


TAMPERS: dict[str, Tamper] = {
    "edited-amount": _sql(3, COLUMNS_DIFFER,
                          "UPDATE book_entry SET reduction_mg = reduction_mg - 1 WHERE holder = $1 AND seq = 3"),
    "edited-amount-and-bytes": _edited_amount_and_bytes,
    "denied-event-id": _denied_event_id,
    "deleted-middle-row": _sql(3, "entry 3 is missing or out of order (found 4)",
                               "DELETE FROM book_entry WHERE holder = $1 AND seq = 3"),
    "swapped-rows": _sql(  # (holder, seq) stays unique even in replica mode: swap through a free position
        2, UNLINKED, "UPDATE book_entry SET seq = 1000000 WHERE holder = $1 AND seq = 2",
        "UPDATE book_entry SET seq = 2 WHERE holder = $1 AND seq = 3",
        "UPDATE book_entry SET seq = 3 WHERE holder = $1 AND seq = 1000000"),
    "truncated-tail": _sql(5, "the chain head says 5 entries but 4 are stored",
                           "DELETE FROM book_entry WHERE holder = $1 AND seq = 5"),
    "truncated-tail-and-head": _truncated_tail_and_head,
    "edited-head-total": _edited_head_total,
}


@pytest.mark.parametrize("how", list(TAMPERS))
async def test_the_verifier_names_the_first_broken_link(client: httpx.Client, partner: dict[str, Any],
                                                        how: str) -> None:
    b = await booked(client, partner)
    seq, reason = await TAMPERS[how](b)
    v = await verify_holder(b.holder_id)
    assert (v.ok, v.broken_seq, v.reason) == (False, seq, reason), v
    r = b.resident.get("/v1/me/book/verify")
    assert r.status_code == 200, r.text
    assert r.json() == verification_json(v)


async def test_an_entry_moved_into_another_holders_chain_is_detected_in_both(
    client: httpx.Client, partner: dict[str, Any]
) -> None:
    a, b = await booked(client, partner), await booked(client, partner, BOOK[:2])
    moved = await entry(a.holder_id, 5)
    tail = await entry(b.holder_id, 2)
    # Appended to b's chain as its 3rd entry, relinked to b's tip, and b's head advanced over it: the bytes
    # still name a's holder and position, and a's head still counts it.
    await tamper(
        ("UPDATE book_entry SET holder = $2, seq = 3, prev_hash = $3 WHERE id = $1", moved["id"], b.holder_id,
         tail["entry_hash"]),
        ("UPDATE book_head SET seq = 3, head_hash = $2, total_mg = total_mg + $3 WHERE holder_id = $1", b.holder_id,
         moved["entry_hash"], moved["reduction_mg"]),
    )
    assert (await verify_holder(b.holder_id)).reason == COLUMNS_DIFFER
    assert b.resident.get("/v1/me/book/verify").json()["broken_seq"] == 3
    assert a.resident.get("/v1/me/book/verify").json()["reason"] == "the chain head says 5 entries but 4 are stored"

    # Moved as it is into an empty book: chains start from a per-holder genesis, so it links to nothing.
    c = register(client)
    first = await entry(a.holder_id, 1)
    assert bytes(first["prev_hash"]) == genesis(a.holder_id)
    await tamper(("UPDATE book_entry SET holder = $2 WHERE id = $1", first["id"], uuid.UUID(c.holder_id)))
    v = await verify_holder(uuid.UUID(c.holder_id))
    assert (v.ok, v.broken_seq, v.reason) == (False, 1, UNLINKED), v
    assert c.get("/v1/me/book/verify").json() == verification_json(v)


async def test_a_tail_cut_with_a_rewound_head_is_still_detected(client: httpx.Client,
                                                               partner: dict[str, Any]) -> None:
    b = await booked(client, partner)
    last, kept = await entry(b.holder_id, 5), await entry(b.holder_id, 4)
    await tamper(("DELETE FROM book_entry WHERE holder = $1 AND seq = 5", b.holder_id),
                 ("UPDATE book_head SET seq = 4, head_hash = $2, total_mg = total_mg - $3 WHERE holder_id = $1",
                  b.holder_id, kept["entry_hash"], last["reduction_mg"]))
    assert not (await verify_holder(b.holder_id)).ok


async def test_the_cli_names_each_broken_holder(client: httpx.Client, partner: dict[str, Any]) -> None:
    clean, broken = await booked(client, partner, BOOK[:1]), await booked(client, partner)
    await TAMPERS["edited-amount"](broken)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "api.cli", "verify-books", "--quiet", cwd=ROOT, env=os.environ.copy(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = (part.decode() for part in await asyncio.wait_for(proc.communicate(), 300))
    assert "Traceback" not in err, err
    assert proc.returncode == 1, out + err
    assert [line for line in out.splitlines() if str(broken.holder_id) in line], out
    assert str(clean.holder_id) not in out  # --quiet names only the broken books


# --- 3. Anyone can recompute the chain and the amounts ---------------------------------------------------


def rebuilt(holder_id: uuid.UUID, e: dict[str, Any], *, event_id: str, partner_id: str | None,
            note: str) -> bytes:
    """An entry's canonical bytes from its published fields, with `wallet.book.chain` as the reference."""
    return canonical_bytes(EntryFields(
        holder_id=holder_id, seq=e["seq"], kind=e["kind"], activity_id=uuid.UUID(e["activity_id"]),
        external_id=event_id, reverses=e["reverses"], sub_account_id=uuid.UUID(e["sub_account_id"]),
        partner_id=uuid.UUID(partner_id) if partner_id else None, trust_tier=e["trust_tier"],
        behaviour=e["behaviour"], behaviour_version=e["behaviour_version"],
        methodology_release=e["methodology_release"], category=e["category"], quantity=e["quantity"],
        reduction_mg=e["reduction_mg"], energy=e["energy"], occurred_at=datetime.fromisoformat(e["occurred_at"]),
        local_day=date.fromisoformat(e["local_day"]), recorded_at=datetime.fromisoformat(e["recorded_at"]),
        note=note,
    ))


async def test_every_hash_and_amount_can_be_recomputed_from_the_api(client: httpx.Client,
                                                                    partner: dict[str, Any]) -> None:
    b = await booked(client, partner)
    corrected = await entry(b.holder_id, 2)
    await reverse_entry(corrected["id"], reason="合作方撤回订单 / the partner retracted the order",
                        operator_id=uuid.uuid4())
    entries = all_entries(b.resident)
    assert [e["seq"] for e in entries] == list(range(1, len(BOOK) + 2))
    assert [e["kind"] for e in entries] == ["credit"] * len(BOOK) + ["reversal"]
    assert entries[-1]["reverses"] == corrected["id"]
    # The hashed fields /book/entries leaves out come from the activities (event id, a reversal's note) and
    # the sub-accounts (partner id).
    activities = {a["id"]: a for a in b.resident.get("/v1/me/activities", params={"limit": 200}).json()["items"]}
    accounts = b.resident.get("/v1/me/accounts").json()["sub_accounts"]
    partner_of = {s["id"]: s["partner"]["id"] if s["partner"] else None for s in accounts}

    prev = genesis(b.holder_id)
    for e in entries:
        activity = activities[e["activity_id"]]
        note = activity["reversal_note"] if e["kind"] == "reversal" else ""
        assert e["prev_hash"] == prev.hex(), e
        prev = chain_hash(prev, rebuilt(b.holder_id, e, event_id=activity["event_id"],
                                        partner_id=partner_of[e["sub_account_id"]], note=note))
        assert e["entry_hash"] == prev.hex(), e
        # Amounts: floor(quantity × factor / per) of the version the entry cites; a reversal negates it.
        sign = -1 if e["kind"] == "reversal" else 1
        version = version_of(e["behaviour"], e["behaviour_version"])
        assert e["reduction_mg"] == sign * reduction_mg(version, sign * e["quantity"]), e
        assert e["energy"] == sign * energy_for(version, sign * e["reduction_mg"]), e
    total = sum(e["reduction_mg"] for e in entries)
    assert total == b.total_mg - corrected["reduction_mg"]
    assert b.resident.get("/v1/me/book").json()["totals"]["all_time_mg"] == total
    assert b.resident.get("/v1/me/book/verify").json() == {"ok": True, "entries": len(entries), "total_mg": total,
                                                           "broken_seq": None, "reason": None}


async def test_the_export_alone_is_enough_to_recompute_the_chain(client: httpx.Client,
                                                                 partner: dict[str, Any]) -> None:
    b = await booked(client, partner, BOOK[:2])
    r = b.resident.get("/v1/me/book/export/jsonl")
    prev = genesis(b.holder_id)
    for e in (json.loads(line) for line in r.text.splitlines()):
        prev = chain_hash(prev, rebuilt(b.holder_id, e, event_id=e["event_id"], partner_id=e["partner_id"],
                                        note=e["note"]))
        assert e["entry_hash"] == prev.hex(), e


# --- 4. Export -------------------------------------------------------------------------------------------


async def test_the_export_carries_the_same_chain_in_csv_and_json_lines(client: httpx.Client,
                                                                      partner: dict[str, Any]) -> None:
    b = await booked(client, partner)
    entries = all_entries(b.resident, page=200)

    r = b.resident.get("/v1/me/book/export")  # CSV by default
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert f"carbon-book-{b.holder_id}.csv" in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == EXPORT_HEADER
    assert len(rows) == 1 + len(entries)
    for row, e in zip(rows[1:], entries, strict=True):  # chain order, every column as the entries endpoint says
        assert row == ["" if e[column] is None else str(e[column]) for column in EXPORT_HEADER]
        assert e["source"] == partner["name"]

    r = b.resident.get("/v1/me/book/export/jsonl")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line, parse_float=refuse_float) for line in r.text.splitlines()]
    assert lines == entries


async def test_no_book_response_carries_a_float(client: httpx.Client, partner: dict[str, Any]) -> None:
    b = await booked(client, partner)
    for path in ("/v1/me/book", "/v1/me/book/entries", "/v1/me/book/days", "/v1/me/book/verify",
                 "/v1/me/activities", "/v1/me/book/export/jsonl"):
        r = b.resident.get(path)
        assert r.status_code == 200, (path, r.text)
        for line in r.text.splitlines():
            json.loads(line, parse_float=refuse_float)
