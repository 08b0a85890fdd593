"""The carbon market's public pages over HTTP, on lots made through the operator API: /lots lists every lot newest
first with its state, programme, exchange, total, contributors and, once settled, the price and the sale date;
/lots/{id} states the programme's rules, the totals, the settled sale with its split and where the public-benefit
share went, the manifest's hash (which the operator's manifest.json really hashes to) and how proceeds are split;
a cancelled lot says its entries were released, a pending sale shows no figures; both languages; ETag and 304;
unknown lots and cursors are 404 pages; no holder id, UUID or e-mail in any of them."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.pages.text import co2e, percent, yuan
from tests.ledger_support import GROWER, Kit, make_kit
from tests.market_page_support import BUYER, card_of, make_lot, record_sale, settled_lot
from tests.market_support import contributor, mg_of, new_programme, opt_out_everyone
from tests.page_support import UUID, figures, get_page
from tests.support import ApiProcess, Resident
from wallet.methodology.catalogue import behaviours

PRICE_FEN = 8_500
BENEFIT_PPM = 100_000
TREES = ("社区植树", "Community trees", "https://example.org/trees")


@dataclass
class Market:
    settled: dict[str, Any]
    sale: dict[str, Any]
    cancelled: dict[str, Any]
    pending: dict[str, Any]
    pending_sale: dict[str, Any]
    holders: list[str]


@pytest.fixture(scope="module")
async def clean_slate(db: object) -> None:
    await opt_out_everyone()


@pytest.fixture(scope="module")
async def market(clean_slate: None, passwords: Any, settings: Any, operator: Resident) -> Market:
    """Three lots, newest last: one sold and settled with a 10% public-benefit share, one cancelled, one whose
    sale (paid in energy) is pending. Each takes only its own contributors' entries."""
    kit: Kit = await make_kit(passwords, settings)
    trees = await new_programme(benefit_ppm=BENEFIT_PPM, benefit_name_zh=TREES[0], benefit_name_en=TREES[1],
                                benefit_url=TREES[2])
    settled, sale, a = await settled_lot(operator, kit, trees.code, [[3000, 2000], [5000]], PRICE_FEN)
    plain = await new_programme()
    cancelled, b = await make_lot(operator, kit, plain.code, [[1000]])
    energy = await new_programme(payout="energy", energy_per_fen=10)
    pending, c = await make_lot(operator, kit, energy.code, [[700], [800]])
    pending_sale = record_sale(operator, pending["id"], 9_000)
    r = operator.post(f"/v1/admin/market/lots/{cancelled['id']}/cancel", json={"reason": "数量不足 test@example.org"})
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
    return Market(settled, sale, r.json(), pending, pending_sale, [str(h) for h in a + b + c])


def test_masses_money_and_shares_are_formatted_from_integers_rounding_down() -> None:
    assert co2e(1_024_000_000) == co2e(1_029_999_999) == "1.02 t CO2e"
    assert co2e(1_234_567_890_123) == "1,234.56 t CO2e" and co2e(999_999_999) == "999.99 kg CO2e"
    assert co2e(mg_of(10_000)) == "12.80 kg CO2e" and co2e(999) == "0.99 g CO2e"
    assert (yuan(8_500), yuan(5), yuan(123_456_789)) == ("¥85.00", "¥0.05", "¥1,234,567.89")
    assert (percent(100_000), percent(12_345), percent(1_000_000), percent(0)) == ("10%", "1.2345%", "100%", "0%")


def test_the_lots_page_lists_the_lots_newest_first_with_state_total_and_price(
        market: Market, client: httpx.Client) -> None:
    r = get_page(client, "/lots")
    assert r.status_code == 200, r.text
    html = r.text
    ids = [int(i) for i in re.findall(r'data-lot="(\d+)"', html)]
    mine = [market.pending["id"], market.cancelled["id"], market.settled["id"]]
    assert ids[:3] == mine, ids  # the newest first
    card, numbers = card_of(html, market.settled["id"])
    assert numbers == {"total": mg_of(10_000), "contributors": 2, "price": PRICE_FEN}
    assert "12.80 kg CO2e" in card and "¥85.00/吨二氧化碳当量" in card and '<time datetime="2026-11-20">' in card
    assert f'href="/lots/{market.settled["id"]}"' in card and "已售出并分配" in card
    assert "测试项目" in card and "北京绿色交易所" in card
    card, numbers = card_of(html, market.cancelled["id"])
    assert "已取消" in card and "price" not in numbers and numbers["contributors"] == 1
    card, numbers = card_of(html, market.pending["id"])
    assert "交易待结算" in card and "price" not in numbers  # a pending sale's price is not public yet

    en = get_page(client, "/lots?lang=en").text
    card, _ = card_of(en, market.settled["id"])
    assert "Sold and paid out" in card and "¥85.00 per t CO2e" in card and "Test programme" in card
    assert f'href="/lots/{market.settled["id"]}?lang=en"' in card


def test_older_lots_come_after_a_cursor_and_link_back_to_the_newest(market: Market, client: httpx.Client) -> None:
    html = get_page(client, f"/lots?before={market.cancelled['id']}").text
    ids = [int(i) for i in re.findall(r'data-lot="(\d+)"', html)]
    assert ids[0] == market.settled["id"] and market.cancelled["id"] not in ids and market.pending["id"] not in ids
    assert 'class="newest" href="/lots"' in html
    assert all(a > b for a, b in pairwise(ids))


def test_a_settled_lot_states_its_rules_totals_sale_split_benefit_and_manifest(
        market: Market, client: httpx.Client, operator: Resident) -> None:
    lot, sale = market.settled, market.sale
    html = get_page(client, f"/lots/{lot['id']}").text
    gross = mg_of(10_000) * PRICE_FEN // 10**9
    benefit = gross * BENEFIT_PPM // 10**6
    assert (sale["gross_fen"], sale["benefit_fen"], sale["residents_fen"]) == (gross, benefit, gross - benefit)
    assert figures(html) == {"total": mg_of(10_000), "entries": 3, "contributors": 2, "paid": 2, "price": PRICE_FEN,
                             "gross": gross, "residents": gross - benefit, "benefit": benefit}
    assert f"<h1>第 {lot['id']} 批</h1>" in html and "已售出并分配" in html
    assert BUYER in html and sale["exchange_ref"] in html and '<time datetime="2026-11-20">' in html
    assert f"{yuan(gross)}</data>" in html and "公益份额（10%）" in html
    assert f'<a class="benefit" href="{TREES[2]}" rel="external noopener noreferrer">{TREES[0]}</a>' in html
    name = behaviours()[GROWER].name_zh
    assert f'<a href="/methodology#{GROWER}">{name}（版本 1）</a>' in html and "合作平台核验" in html
    assert "最大余数" in html and "向下取整到分" in html

    manifest = operator.get(f"/v1/admin/market/lots/{lot['id']}/manifest.json")
    assert manifest.status_code == 200, manifest.text
    digest = hashlib.sha256(b"carbon-lot/v1\n" + manifest.content).hexdigest()
    assert digest == lot["manifest_sha256"] and f'<code class="hash">{digest}</code>' in html
    assert "(printf &#39;carbon-lot/v1\\n&#39;; cat manifest.json) | sha256sum" in html

    en = get_page(client, f"/lots/{lot['id']}?lang=en").text
    assert figures(en) == figures(html)
    assert f"<h1>Lot {lot['id']}</h1>" in en and "Sold and paid out" in en and "Public-benefit share (10%)" in en
    assert f">{TREES[1]}</a>" in en and "largest remainder" in en and "rounded down to the fen" in en
    assert f"{behaviours()[GROWER].name_en} (version 1)" in en and "verified by a partner" in en


def test_a_cancelled_lot_says_its_entries_were_released_and_a_pending_sale_shows_no_figures(
        market: Market, client: httpx.Client) -> None:
    html = get_page(client, f"/lots/{market.cancelled['id']}").text
    assert "已取消" in html and "其中的账本记录已释放" in html and "这个项目没有公益份额" in html
    assert "数量不足" not in html  # the operator's reason is not published
    assert {"price", "gross", "paid"} & set(figures(html)) == {"paid"} and figures(html)["paid"] == 0
    en = get_page(client, f"/lots/{market.cancelled['id']}?lang=en").text
    assert "was cancelled on" in en and "book entries were released" in en

    pending = get_page(client, f"/lots/{market.pending['id']}?lang=en").text
    assert "Sale awaiting settlement" in pending and "awaits the exchange&#39;s settlement" in pending
    assert "price" not in figures(pending) and BUYER not in pending
    assert market.pending_sale["exchange_ref"] not in pending
    assert "at the published rate of 10 energy per fen" in pending and figures(pending)["contributors"] == 2


@pytest.mark.parametrize("path", ["/lots/999999999999999999", "/lots/0", "/lots/not-a-lot", "/lots/²",
                                  "/lots/99999999999999999999999", "/lots?before=abc", "/lots?before=0",
                                  "/lots?before=999999999999999999"])
def test_unknown_lots_and_cursors_are_404_pages_that_link_home(
        market: Market, client: httpx.Client, path: str) -> None:
    r = get_page(client, path)
    assert r.status_code == 404 and 'class="home" href="/"' in r.text and "找不到这个页面" in r.text
    en = get_page(client, path + ("&" if "?" in path else "?") + "lang=en")
    assert en.status_code == 404 and "Page not found" in en.text


def test_cache_headers_etag_and_304(market: Market, client: httpx.Client) -> None:
    for path in (f"/lots/{market.settled['id']}", "/lots"):
        r = get_page(client, path)
        etag = r.headers["etag"]
        assert re.fullmatch(r'"[0-9a-f]{32}"', etag), path
        assert r.headers["cache-control"] == "public, max-age=30" and r.headers["vary"] == "Accept-Language"
        assert r.headers["content-security-policy"].startswith("default-src 'none'; style-src 'sha256-")
        again = client.get(path, headers={"If-None-Match": etag})
        assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag), path
        en = client.get(path, headers={"Accept-Language": "en", "If-None-Match": etag})
        assert en.status_code == 200 and en.headers["content-language"] == "en" and en.headers["etag"] != etag


async def test_no_holder_ids_uuids_emails_or_scripts_in_any_market_page(
        market: Market, client: httpx.Client) -> None:
    secrets = market.holders + [h.replace("-", "") for h in market.holders]
    paths = ["/lots", f"/lots?before={market.cancelled['id']}"] + [
        f"/lots/{lot['id']}" for lot in (market.settled, market.cancelled, market.pending)]
    for path in paths:
        for language in ("zh-CN", "en"):
            html = get_page(client, path, **{"Accept-Language": language}).text
            assert not UUID.search(html), path
            assert not re.search(r"[\w.+-]+@[\w-]+\.\w", html), path
            assert not [s for s in secrets if s in html], path
            assert "<script" not in html, path
            remote = set(re.findall(r'(?:src|href)="((?:https?:)?//[^"]*)"', html))
            assert remote <= {TREES[2]}, (path, remote)  # only the public-benefit project's own page


def test_the_index_and_every_footer_link_to_the_lots(work_dir: Path) -> None:
    """On an API process of its own: the index's list of partners, cached for a minute, must not hide from
    tests/test_pages.py a partner it adds after this reads the index."""
    proc = ApiProcess(work_dir).start()
    try:
        with httpx.Client(base_url=proc.base_url, timeout=30) as own:
            html = get_page(own, "/").text
            assert '<a class="lots" href="/lots">' in html and html.count('href="/lots"') == 2  # section, footer
            en = get_page(own, "/?lang=en").text
            assert '<a class="lots" href="/lots?lang=en">' in en and "Carbon market" in en
            assert 'href="/lots"' in get_page(own, "/methodology").text
    finally:
        proc.stop()


@pytest.mark.parametrize("path", ["/t/²", "/t/١٢"])
def test_a_team_id_in_digits_other_than_ascii_is_a_404_page(client: httpx.Client, path: str) -> None:
    """`str.isdigit` accepts "²" (which int() refuses: a 500) and "١٢" (a second URL for team 12)."""
    r = get_page(client, path)
    assert r.status_code == 404 and "找不到这个页面" in r.text


async def test_lots_come_twenty_to_a_page_each_linking_to_the_older_ones(
        market: Market, client: httpx.Client, operator: Resident, passwords: Any, settings: Any) -> None:
    """22 lots of one entry each (after the module's three); cursors no reader has used yet, so no cached page."""
    await opt_out_everyone()
    kit = await make_kit(passwords, settings)
    one = await new_programme()
    await contributor(kit.template, kit.partner, kit.tokens, [100] * 22)
    ids = []
    for _ in range(22):
        r = operator.post("/v1/admin/market/lots", json={"programme": one.code, "target_mg": mg_of(100)})
        assert r.status_code == 201 and r.json()["entries"] == 1, r.text
        ids.append(r.json()["id"])
    html = get_page(client, f"/lots?before={ids[-1]}&lang=en").text
    assert [int(i) for i in re.findall(r'data-lot="(\d+)"', html)] == ids[-2:0:-1]  # 20 lots
    older = re.search(r'<a class="older" rel="next" href="([^"]+)">Older lots</a>', html)
    assert older and older.group(1) == f"/lots?before={ids[1]}&amp;lang=en", html[-800:]
    after = get_page(client, older.group(1).replace("&amp;", "&")).text
    listed = [int(i) for i in re.findall(r'data-lot="(\d+)"', after)]
    assert listed[:4] == [ids[0], market.pending["id"], market.cancelled["id"], market.settled["id"]], listed
    assert 'class="newest" href="/lots?lang=en"' in after
