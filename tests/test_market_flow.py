"""The carbon market end to end over HTTP: a programme, residents' choice, a lot with its manifest, a sale that
settles with a public-benefit share, each resident's statement, the public account, and the ledger check."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ledger_support import Kit, assert_ledger_ok, make_kit
from tests.market_support import contributor, mg_of, new_programme, opt_out_everyone
from tests.support import ROOT, Resident, assert_problem, deliver_pending_events
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
    await deliver_pending_events()
    inbox = a.get(client, "/v1/me/inbox").json()
    (told,) = [m for m in inbox["items"] if m["kind"] == "market_paid_fen"]
    assert told["link"] == f"carbonwallet://market/lots/{lot['id']}" and told["trigger"] == "market_paid"
    assert f"{shares[0] // 100}.{shares[0] % 100:02d}" in told["body"], told
    await assert_ledger_ok()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "api.cli", "market", *args], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)


async def test_the_cli_runs_a_lot_from_programme_to_settlement(tmp_path: Path, kit: Kit) -> None:
    await contributor(kit.template, kit.partner, kit.tokens, [4000])
    await contributor(kit.template, kit.partner, kit.tokens, [6000])
    code = f"cli-{uuid.uuid4().hex[:8]}"
    spec = tmp_path / "programme.json"
    spec.write_text(json.dumps({
        "code": code, "name_zh": "命令行项目", "name_en": "CLI programme", "exchange_zh": "广州碳排放权交易所",
        "exchange_en": "China Emissions Exchange Guangzhou", "behaviours": ["clothes_recycling@1"],
        "period_from": (date.today() - timedelta(days=3)).isoformat(),
        "period_to": (date.today() + timedelta(days=2)).isoformat(), "settle_days": 0,
        "payout": "energy", "energy_per_fen": 100}, ensure_ascii=False), encoding="utf-8")
    made = _cli("programme-create", str(spec))
    assert made.returncode == 0, made.stderr
    assert _cli("programme-create", str(spec)).returncode == 1, "a code is published once"
    assert json.loads(_cli("eligible", code).stdout)["reduction_mg"] == mg_of(10_000)
    lot = _cli("lot-create", code, str(mg_of(10_000)))
    assert lot.returncode == 0 and "open" in lot.stdout, lot.stderr
    lot_id = int(lot.stdout.split()[1])
    out = tmp_path / "manifest.json"
    exported = _cli("manifest", str(lot_id), "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    sha = hashlib.sha256(b"carbon-lot/v1\n" + out.read_bytes()).hexdigest()
    assert sha in exported.stderr and sha in lot.stdout
    assert _cli("manifest", str(lot_id), "--csv").stdout.count("\n") == 3
    sale = _cli("sale-record", str(lot_id), "--buyer", "CLI Buyer", "--ref", f"GZ-{code}", "--date", "2026-11-20",
                "--price", "90000")
    assert sale.returncode == 0, sale.stderr
    settled = _cli("sale-settle", str(json.loads(sale.stdout)["id"]))
    assert settled.returncode == 0 and json.loads(settled.stdout)["state"] == "settled", settled.stderr
    assert _cli("lot-cancel", str(lot_id), "too late").returncode == 1, "a sold lot is never released"
    await assert_ledger_ok()
