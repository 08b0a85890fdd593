"""The carbon market end to end over HTTP: a programme, residents' choice, a lot with its manifest, a sale that
settles with a public-benefit share, each resident's statement, the public account, and the ledger check."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from tests.ledger_support import Kit, assert_ledger_ok, make_kit
from tests.market_support import contributor, mg_of, new_programme, opt_out_everyone
from tests.support import Resident, assert_problem
from wallet.ledger.allocation import largest_remainder



@pytest.fixture(scope="module")
async def kit(passwords: Any, settings: Any, db: object) -> Kit:
    return await make_kit(passwords, settings)


@pytest.fixture(autouse=True)
async def clean_slate(db: object) -> None:
    await opt_out_everyone()


async def test_a_lot_from_pooling_to_payout(client: httpx.Client, operator: Resident, kit: Kit) -> None:
    programme = await new_programme(benefit_ppm=100_000, benefit_name_zh="社区植树", benefit_name_en="Community trees",
                                    benefit_url="https://example.org/trees")
    a = await contributor(kit.template, kit.partner, kit.tokens, [3000, 2000])
    b = await contributor(kit.template, kit.partner, kit.tokens, [5000])
    outsider = await contributor(kit.template, kit.partner, kit.tokens, [9000], opted_in=False)

    r = a.get(client, "/v1/me/market/consent")
    assert r.status_code == 200 and r.json()["opted_in"] is True, r.text
    assert outsider.get(client, "/v1/me/market/consent").json()["opted_in"] is False

    r = operator.get("/v1/admin/market/eligible", params={"programme": programme.code})
    assert r.status_code == 200, r.text
    assert r.json()["reduction_mg"] == mg_of(10_000) and r.json()["holders"] == 2, r.json()

    r = operator.post("/v1/admin/market/lots", json={"programme": programme.code, "target_mg": mg_of(10_000)},
                      headers={"Idempotency-Key": "lot-1"})
    assert r.status_code == 201, r.text
    lot = r.json()
    assert (lot["total_mg"], lot["entries"], lot["contributors"], lot["state"]) == (mg_of(10_000), 3, 2, "open")
    again = operator.post("/v1/admin/market/lots", json={"programme": programme.code, "target_mg": mg_of(10_000)},
                          headers={"Idempotency-Key": "lot-1"})
    assert again.status_code == 200 and again.json()["id"] == lot["id"]
    assert_problem(operator.post("/v1/admin/market/lots", json={"programme": programme.code, "target_mg": 1}), 409,
                   "not-enough-eligible")

    m = operator.get(f"/v1/admin/market/lots/{lot['id']}/manifest.json")
    assert m.status_code == 200, m.text
    digest = hashlib.sha256(b"carbon-lot/v1\n" + m.content).hexdigest()
    assert digest == m.headers["Manifest-SHA256"] == lot["manifest_sha256"]
    body = m.json()
    assert {c["holder"] for c in body["contributors"]} == {str(a.holder_id), str(b.holder_id)}
    assert sum(e["reduction_mg"] for e in body["entries"]) == body["lot"]["total_mg"] == mg_of(10_000)
    csv = operator.get(f"/v1/admin/market/lots/{lot['id']}/manifest.csv")
    assert csv.status_code == 200 and len(csv.text.strip().splitlines()) == 4, csv.text

    sale = operator.post(f"/v1/admin/market/lots/{lot['id']}/sales", json={
        "buyer": "某某科技有限公司", "exchange_ref": f"CBEEX-{lot['id']}", "sale_date": "2026-11-20",
        "price_per_tonne_fen": 8_500})
    assert sale.status_code == 201, sale.text
    assert sale.json()["state"] == "pending"
    public = client.get(f"/v1/market/lots/{lot['id']}").json()
    assert public["state"] == "pending" and public["sale"] == {"state": "pending", **{k: None for k in (
        "buyer", "exchange_ref", "sale_date", "price_per_tonne_fen", "gross_fen", "residents_fen", "benefit_fen",
        "settled_at")}}

    settled = operator.post(f"/v1/admin/market/sales/{sale.json()['id']}/settle")
    assert settled.status_code == 200, settled.text
    s = settled.json()
    gross = mg_of(10_000) * 8_500 // 10**9
    assert s["gross_fen"] == gross and s["benefit_fen"] == gross // 10
    shares = largest_remainder(gross - gross // 10, [mg_of(5000), mg_of(5000)])
    replay = operator.post(f"/v1/admin/market/sales/{sale.json()['id']}/settle")
    assert replay.json() == s

    mine = a.get(client, "/v1/me/market").json()
    assert mine["balance_fen"] == mine["received_fen"] == shares[0], mine
    (my_lot,) = mine["lots"]
    assert my_lot["price_per_tonne_fen"] == 8_500 and my_lot["fen"] == shares[0]
    detail = a.get(client, f"/v1/me/market/lots/{lot['id']}").json()
    assert sum(e["fen"] for e in detail["entries"]) == shares[0] and len(detail["entries"]) == 2
    assert_problem(outsider.get(client, f"/v1/me/market/lots/{lot['id']}"), 404, "lot-not-found")

    public = client.get(f"/v1/market/lots/{lot['id']}").json()
    assert public["sale"]["price_per_tonne_fen"] == 8_500 and public["contributors"] == 2
    assert public["public_benefit"]["name"]["en"] == "Community trees"
    assert str(a.holder_id) not in str(public)

    assert_problem(operator.post(f"/v1/admin/market/lots/{lot['id']}/sales", json={
        "buyer": "x", "exchange_ref": "another", "sale_date": "2026-11-20", "price_per_tonne_fen": 1}), 409, "lot-sold")
    assert_problem(operator.post(f"/v1/admin/market/lots/{lot['id']}/cancel", json={"reason": "x"}), 409, "lot-sold")
    await assert_ledger_ok()
