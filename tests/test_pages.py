"""The public pages over HTTP, on a world seeded through the product's paths: every page type answers HTML with
the figures of the community aggregates (and the enterprise ledger), the public board by nickname of residents
who opted in, the city's challenge and links up and down; no id, phone, e-mail, hidden nickname or join code
anywhere; unknown places, teams and partners are 404 pages that link home; zh-CN by default, en by `?lang=` or
Accept-Language; a strong ETag with 304 on If-None-Match, public Cache-Control, and a response cache."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import date
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from markupsafe import escape
from redis.asyncio import Redis

from gamification.community.follow import step as community_step
from gamification.community.reads import enterprise_ledger, scope_summary
from tests.leaderboard_support import Arena, fresh_start, make_arena, mg_of, settle
from tests.page_support import UUID, World, figures, get_page, local_today, seed_world, values
from tests.support import Resident
from wallet.methodology.catalogue import behaviours, releases
from wallet.partners.service import list_partners


@pytest.fixture(scope="module")
async def redis(db: object) -> AsyncIterator[Redis]:
    client = Redis.from_url(os.environ["REDIS_URL"])
    await fresh_start(client)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
async def arena(passwords: object, settings: Any, client: httpx.Client, redis: Redis) -> Arena:
    return await make_arena(passwords, settings, client, redis)


@pytest.fixture(scope="module")
async def world(arena: Arena, redis: Redis, operator: Resident, settings: Any) -> World:
    return await seed_world(arena, redis, operator, settings)


def url(*segments: str, **query: str) -> str:
    path = "/" + "/".join(quote(s, safe="") for s in segments)
    return path + ("?" + "&".join(f"{k}={quote(v)}" for k, v in query.items()) if query else "")


def board_names(html: str) -> list[str]:
    table = html.split('<table class="board">', 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr><td class=\"num\">\d+</td><td>([^<]*)</td>", table)


async def test_the_city_page_states_the_aggregates_and_the_public_board(
        world: World, client: httpx.Client, settings: Any) -> None:
    r = get_page(client, url("c", world.city, period="all"))
    assert r.status_code == 200
    html = r.text
    summary = await scope_summary(f"city:{world.city}", today=local_today(settings))
    assert figures(html) == {"total": summary["total_mg"], "recent": summary["recent_mg"],
                             "participants": summary["participants"], "actions": summary["actions"]}
    assert summary["total_mg"] == world.expected_city_mg and summary["participants"] == 5
    assert board_names(html) == [p.nickname for p in world.public]
    # the 30 days' bars (their titles and the table) and the categories add up to the same as the summary
    assert len(re.findall(r'<rect class="bar"', html.split('class="chart daily"')[1].split("</svg>")[0])) == 30
    daily = html.split('class="chart daily"')[1].split("</details>")[0]
    assert sum(values(daily)) == summary["recent_mg"]
    for category, mg in summary["categories"]:
        assert f'<data value="{mg}">' in html.split('class="chart categories"')[1], category
    assert {c for c, _ in summary["categories"]} == {"clothing", "transport", "food"}
    assert "衣着" in html and "出行" in html
    assert world.challenge["title"]["zh-CN"] in html and "<progress max=\"5000\"" in html
    for district in world.districts:  # links down
        assert f'href="{url("c", world.city, district)}"' in html
    assert f'href="{url("c", world.city, world.districts[0], world.community)}"' in html  # per-capita board
    assert "树一年" in html and "公里" in html and "Arbor Day" in html and "北京市交通委员会" in html


async def test_district_and_community_pages_link_up_and_down_and_count_their_residents(
        world: World, client: httpx.Client, settings: Any) -> None:
    district = url("c", world.city, world.districts[0])
    community = url("c", world.city, world.districts[0], world.community)
    for path, scope, shown in (
            (district, f"district:{world.city}|{world.districts[0]}", 2),
            (community, f"community:{world.city}|{world.districts[0]}|{world.community}", 2)):
        html = get_page(client, path + "?period=all").text
        summary = await scope_summary(scope, today=local_today(settings))
        assert figures(html)["total"] == summary["total_mg"] > 0, scope
        assert figures(html)["participants"] == 3, scope  # a, b and the hidden resident
        assert len(board_names(html)) == shown, scope
        assert f'href="{url("c", world.city)}"' in html  # breadcrumb up to the city
    assert f'href="{community}"' in get_page(client, district).text  # the district links to its community
    assert world.challenge["title"]["zh-CN"] not in get_page(client, district).text  # a city challenge


async def test_the_team_page_in_both_languages(world: World, client: httpx.Client, settings: Any) -> None:
    team = world.team
    zh = get_page(client, url("t", str(team["id"]), period="all")).text
    en = get_page(client, url("t", str(team["id"]), period="all", lang="en")).text
    summary = await scope_summary(f"team:{team['id']}", today=local_today(settings))
    assert figures(zh)["total"] == figures(en)["total"] == summary["total_mg"] > 0
    assert f"<h1>{team['name_zh']}</h1>" in zh and f"<h1>{team['name_en']}</h1>" in en
    members = [world.everyone[0], world.everyone[2]]  # a and c joined the team
    assert board_names(zh) == [p.nickname for p in world.public if p in members]


async def test_the_partner_page_is_the_enterprise_ledger(world: World, client: httpx.Client, settings: Any) -> None:
    partner_id = world.partner["id"]
    html = get_page(client, url("p", str(partner_id))).text
    today = local_today(settings)
    months_ago = today.year * 12 + today.month - 1 - 11  # the page shows this month and the 11 before it
    first = date(months_ago // 12, months_ago % 12 + 1, 1)
    ledger = await enterprise_ledger(partner_id, from_day=first, to_day=today)
    assert figures(html)["total"] == ledger["total"]["reduction_mg"] == world.expected_partner_mg
    assert figures(html)["participants"] == ledger["total"]["participants"] == 5
    months = [int(v) for v in re.findall(r'<data class="month-total" value="(\d+)">', html)]
    assert sum(months) == world.expected_partner_mg and len(months) == len(ledger["months"])
    assert world.partner["name"] in html and "旧衣回收" in html


def test_the_methodology_page_lists_every_behaviour_and_the_changelog(client: httpx.Client) -> None:
    zh = get_page(client, "/methodology").text
    en = get_page(client, "/methodology?lang=en").text
    for b in behaviours().values():
        assert f'id="{b.code}"' in zh and b.name_zh in zh and b.name_en in en, b.code
        assert b.current.source.replace("&", "&amp;") in zh, b.code
    assert "1.28 g 二氧化碳当量 / 1 克" in zh and "1.28 g CO2e per 1 g" in en
    for release in releases():
        assert release.version in zh and escape(release.summary_en) in en


def test_the_index_finds_a_city_and_links_to_the_methodology(world: World, client: httpx.Client) -> None:
    html = get_page(client, url("", q=world.city)).text
    assert f'href="{url("c", world.city)}"' in html and 'href="/methodology"' in html
    assert world.partner["name"] in html  # active partners are listed
    assert "没有以" in get_page(client, url("", q="不存在的城市名")).text


@pytest.mark.parametrize("path", ["/c/没有这个城市", "/c/{city}/没有这个区", "/c/{city}/{district}/没有这个社区",
                                  "/t/999999999999", "/t/not-a-team", "/p/{uuid}", "/p/not-a-partner"])
def test_unknown_places_teams_and_partners_are_404_pages_that_link_home(
        world: World, client: httpx.Client, path: str) -> None:
    path = path.format(city=quote(world.city), district=quote(world.districts[0]), uuid=uuid.uuid4())
    r = get_page(client, path)
    assert r.status_code == 404 and 'class="home" href="/"' in r.text and "找不到这个页面" in r.text
    en = get_page(client, path + "?lang=en")
    assert en.status_code == 404 and 'href="/?lang=en"' in en.text and "Page not found" in en.text


def test_languages_by_query_then_accept_language_then_chinese(world: World, client: httpx.Client) -> None:
    path = url("c", world.city)
    cases = [({}, "zh-CN"), ({"Accept-Language": "en-US,en;q=0.9"}, "en"), ({"Accept-Language": "fr, en;q=0.5"}, "en"),
             ({"Accept-Language": "en;q=0.3, zh-TW;q=0.8"}, "zh-CN"), ({"Accept-Language": "de"}, "zh-CN")]
    for headers, language in cases:
        r = get_page(client, path, **headers)
        assert (r.headers["content-language"], f'<html lang="{language}">' in r.text) == (language, True), headers
    r = get_page(client, path + "?lang=zh-CN", **{"Accept-Language": "en"})
    assert r.headers["content-language"] == "zh-CN"
    assert f'href="{path}?period=today&amp;lang=zh-CN"' in r.text  # a chosen language is carried on
    assert f'href="{path}?period=week&amp;lang=en"' in r.text  # and the switch link offers the other
    en = get_page(client, path + "?lang=en").text
    assert "Leaderboard" in en and "排行榜" not in en and "Clothing" in en


async def test_no_ids_phones_emails_hidden_residents_or_join_codes_in_any_page(
        world: World, client: httpx.Client) -> None:
    secrets = [str(p.id) for p in world.everyone] + [str(p.id).replace("-", "") for p in world.everyone]
    secrets += [p.http.login for p in world.everyone] + world.phones + [world.hidden.nickname]
    secrets += [world.team["join_code"], world.partner["client_id"]]
    paths = [url("c", world.city), url("c", world.city, world.districts[0]),
             url("c", world.city, world.districts[0], world.community), url("t", str(world.team["id"])),
             url("p", str(world.partner["id"])), url("", q=world.city), "/methodology"]
    partner_ids = {str(p["id"]) for p in await list_partners()}  # the index links to partners' pages
    for path in paths:
        for query in ("", "period=all", "period=today&lang=en"):
            page = path + ("&" if "?" in path else "?") + query if query else path
            html = get_page(client, page).text
            assert not re.search(r"[\w.+-]+@[\w-]+\.\w", html), page  # no e-mail address at all
            leaked = [s for s in secrets if s and s in html]
            assert not leaked, (page, leaked)
            assert {u for u in UUID.findall(html) if u != str(world.partner["id"])} <= partner_ids, page
            assert "<script" not in html and not re.search(r'(?:src|href)="(?:https?:)?//', html), page


def test_cache_headers_etag_and_304(world: World, client: httpx.Client) -> None:
    path = url("c", world.city, world.districts[1])
    r = get_page(client, path)
    etag = r.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert r.headers["cache-control"] == "public, max-age=30" and r.headers["vary"] == "Accept-Language"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    again = client.get(path, headers={"If-None-Match": etag})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    assert client.get(path, headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    en = client.get(path + "?lang=en")
    assert en.headers["etag"] != etag and client.get(path + "?lang=en", headers={
        "If-None-Match": etag}).status_code == 200
    assert client.get("/c/没有这个城市", headers={"If-None-Match": "*"}).status_code == 404


async def test_a_warm_page_comes_from_the_response_cache(world: World, client: httpx.Client, redis: Redis,
                                                         settings: Any) -> None:
    path = url("c", world.city, world.districts[1], world.other_community, period="all")
    started = time.monotonic()
    before = get_page(client, path)
    c = next(p for p in world.public if p.nickname.startswith("页丙"))
    await c.credit(100)
    await community_step(wait=True)
    await settle(redis)
    after = get_page(client, path)
    if time.monotonic() - started < 8:  # the page is kept 10 s: a new credit shows only after that
        assert after.headers["etag"] == before.headers["etag"]
        assert figures(after.text)["total"] == figures(before.text)["total"]
    timings = []
    for _ in range(20):
        t0 = time.perf_counter()
        assert client.get(path).status_code == 200
        timings.append(time.perf_counter() - t0)
    assert sorted(timings)[10] < 0.05, timings  # the median warm request, HTTP included, well under 50 ms
    summary = await scope_summary(f"community:{world.city}|{world.districts[1]}|{world.other_community}",
                                  today=local_today(settings))
    assert summary["total_mg"] >= figures(before.text)["total"] + mg_of(100)
