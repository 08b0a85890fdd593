"""Helpers for the market's public pages: lots made and sold the way an operator does it (the operator API), over
residents made with tests/market_support.py, and the figures one lot's card on /lots states."""

from __future__ import annotations

import re
import uuid
from typing import Any

from tests.ledger_support import Kit
from tests.market_support import contributor, mg_of
from tests.page_support import figures
from tests.support import Resident

__all__ = ["BUYER", "card_of", "make_lot", "record_sale", "settle", "settled_lot"]

BUYER = "某某科技有限公司"


async def make_lot(operator: Resident, kit: Kit, programme: str, quantities: list[list[int]]) -> tuple[
        dict[str, Any], list[uuid.UUID]]:
    """One contributor per list of recycling grams, then a lot of exactly their entries (nobody else may be opted in:
    call opt_out_everyone first)."""
    holders = [(await contributor(kit.template, kit.partner, kit.tokens, q)).holder_id for q in quantities]
    target = sum(mg_of(g) for q in quantities for g in q)
    r = operator.post("/v1/admin/market/lots", json={"programme": programme, "target_mg": target},
                      headers={"Idempotency-Key": uuid.uuid4().hex})
    assert r.status_code == 201, r.text
    lot = r.json()
    assert lot["total_mg"] == target and lot["contributors"] == len(quantities), lot
    return lot, holders


def record_sale(operator: Resident, lot_id: int, price_per_tonne_fen: int, sale_date: str = "2026-11-20") -> dict[
        str, Any]:
    r = operator.post(f"/v1/admin/market/lots/{lot_id}/sales", json={
        "buyer": BUYER, "exchange_ref": f"CBEEX-{uuid.uuid4().hex[:8]}", "sale_date": sale_date,
        "price_per_tonne_fen": price_per_tonne_fen})
    assert r.status_code == 201, r.text
    return r.json()


def settle(operator: Resident, sale_id: int) -> dict[str, Any]:
    r = operator.post(f"/v1/admin/market/sales/{sale_id}/settle")
    assert r.status_code == 200 and r.json()["state"] == "settled", r.text
    return r.json()


async def settled_lot(operator: Resident, kit: Kit, programme: str, quantities: list[list[int]],
                      price_per_tonne_fen: int) -> tuple[dict[str, Any], dict[str, Any], list[uuid.UUID]]:
    lot, holders = await make_lot(operator, kit, programme, quantities)
    sale = settle(operator, record_sale(operator, lot["id"], price_per_tonne_fen)["id"])
    return lot, sale, holders


def card_of(html: str, lot_id: int) -> tuple[str, dict[str, int]]:
    """One lot's card on /lots: its HTML and its named figures."""
    found = re.search(rf'<li class="card lot" data-lot="{lot_id}">(.*?)</li>', html, re.DOTALL)
    assert found, f"lot {lot_id} is not listed"
    return found.group(1), figures(found.group(1))
