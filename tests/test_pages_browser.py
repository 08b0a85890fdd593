"""The public pages in a real headless browser (Debian's chromium, driven by Playwright): every page type loads
with no console error, links lead from the index to a city, its district and community and back, to the team,
partner and methodology pages, and to the carbon market's lots and one sold lot; the chart is drawn (bars of
non-zero size, in view); a 390×844 phone has no horizontal scrolling; a screenshot of each page type goes to the
test artefact folder.

The tests are plain functions (Playwright's sync API cannot run inside the running asyncio loop); the world is
seeded once by an async fixture. No browser is ever downloaded: without chromium these tests fail and say so."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright
from redis.asyncio import Redis

from tests.leaderboard_support import Arena, fresh_start, make_arena
from tests.ledger_support import make_kit
from tests.market_page_support import settled_lot
from tests.market_support import new_programme, opt_out_everyone
from tests.page_support import World, artefacts_dir, seed_world
from tests.support import ApiProcess, Resident

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
async def redis(db: object) -> AsyncIterator[Redis]:
    client = Redis.from_url(os.environ["REDIS_URL"])
    await fresh_start(client)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
async def world(passwords: object, settings: Any, client: httpx.Client, redis: Redis, operator: Resident) -> World:
    arena: Arena = await make_arena(passwords, settings, client, redis)
    return await seed_world(arena, redis, operator, settings)


@pytest.fixture(scope="module")
async def lot_id(passwords: object, settings: Any, operator: Resident, world: World) -> int:
    """A lot sold and settled through the operator API, a tenth of it to a public-benefit project (after `world`,
    so the async fixtures run in one order)."""
    await opt_out_everyone()
    programme = await new_programme(benefit_ppm=100_000, benefit_name_zh="社区植树", benefit_name_en="Community trees",
                                    benefit_url="https://example.org/trees")
    lot, _, _ = await settled_lot(operator, await make_kit(passwords, settings), programme.code,
                                  [[3000, 2000], [5000]], 8_500)
    return int(lot["id"])


@pytest.fixture(scope="module")
def site(work_dir: Path, world: World, lot_id: int) -> Iterator[str]:
    """An API process of this module's own, started after the seeding: pages cached by earlier modules' reads (the
    index keeps its list of partners for a few seconds) cannot hide what this world added."""
    proc = ApiProcess(work_dir).start()
    yield proc.base_url
    proc.stop()


@pytest.fixture(scope="module")
def browser(world: World, lot_id: int) -> Iterator[Browser]:
    """Started after the async fixtures (hence `world` and `lot_id`): while Playwright's sync API is open, its own
    event loop runs in this thread and pytest-asyncio could not set up an async fixture."""
    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not executable:
        pytest.fail("Debian's chromium is missing (looked for /usr/bin/chromium): run `make test`, which installs it")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=ARGS)
        yield launched
        launched.close()


class Tab:
    """A page in a fresh context that records console errors and uncaught exceptions."""

    def __init__(self, browser: Browser, base_url: str, **options: Any) -> None:
        options.setdefault("locale", "zh-CN")  # a reader in China (Chromium would send Accept-Language: en-US)
        self.context = browser.new_context(base_url=base_url, **options)
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def __enter__(self) -> Tab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.context.close()


def path(*segments: str) -> str:
    return "/" + "/".join(quote(s, safe="") for s in segments)


def pages_of(world: World, lot_id: int) -> dict[str, str]:
    return {"index": "/", "city": path("c", world.city), "district": path("c", world.city, world.districts[0]),
            "community": path("c", world.city, world.districts[0], world.community),
            "team": path("t", str(world.team["id"])), "partner": path("p", str(world.partner["id"])),
            "methodology": "/methodology", "lots": "/lots", "lot": path("lots", str(lot_id)),
            "not-found": path("c", "没有这个城市")}


def test_every_page_type_loads_cleanly_fits_a_phone_and_is_photographed(
        browser: Browser, site: str, world: World, lot_id: int) -> None:
    out = artefacts_dir()
    shots: dict[str, bytes] = {}
    for name, url in pages_of(world, lot_id).items():
        for label, options in (("phone", {"viewport": PHONE, "device_scale_factor": 2, "is_mobile": True}),
                               ("desktop", {"viewport": {"width": 1280, "height": 900}})):
            with Tab(browser, site, **options) as tab:
                response = tab.page.goto(url)
                assert response is not None and response.status == (404 if name == "not-found" else 200), url
                expect(tab.page.locator("h1")).to_be_visible()
                errors = [e for e in tab.errors if not (name == "not-found" and "404" in e)]
                assert errors == [], (name, label, errors)
                overflow = tab.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 0, (name, label, overflow)
                shots[f"{name}-{label}.png"] = tab.page.screenshot(path=str(out / f"{name}-{label}.png"),
                                                                    full_page=True)
    # this run's screenshots (the folder keeps earlier runs'): real PNGs, and no two pages alike
    assert len([n for n in shots if n.endswith("-phone.png")]) >= 8
    assert {"lots-phone.png", "lot-desktop.png"} <= set(shots)
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in shots.values())
    assert len(set(shots.values())) == len(shots)


def test_links_lead_down_from_the_index_and_back_up(browser: Browser, site: str, world: World) -> None:
    with Tab(browser, site, viewport=PHONE) as tab:
        page = tab.page
        page.goto("/")
        page.get_by_role("searchbox").fill(world.city)  # many cities in a shared test database: find ours
        page.get_by_role("button").click()
        page.get_by_role("link", name=world.city, exact=True).click()
        expect(page.locator("h1")).to_have_text(world.city)
        page.get_by_role("link", name=world.districts[0], exact=True).click()
        expect(page.locator("h1")).to_have_text(world.districts[0])
        page.locator("ul.children").get_by_role("link", name=world.community, exact=True).click()
        expect(page.locator("h1")).to_have_text(world.community)
        assert unquote(page.url).endswith(f"/c/{world.city}/{world.districts[0]}/{world.community}")
        expect(page.locator("table.board tbody tr")).to_have_count(2)
        page.go_back()
        expect(page.locator("h1")).to_have_text(world.districts[0])
        page.locator("nav.crumbs").get_by_role("link", name=world.city, exact=True).click()
        expect(page.locator("h1")).to_have_text(world.city)

        page.locator("ul.tabs").get_by_role("link", name="总榜").click()
        expect(page.locator('ul.tabs a[aria-current="page"]')).to_have_text("总榜")
        expect(page.locator("table.board tbody tr")).to_have_count(len(world.public))
        page.get_by_role("link", name="English").click()
        expect(page.locator("html")).to_have_attribute("lang", "en")
        expect(page.locator('ul.tabs a[aria-current="page"]')).to_have_text("All time")
        page.locator("footer").get_by_role("link", name="Methodology").click()
        expect(page.locator("h1")).to_have_text("Methodology")
        expect(page.locator("div.behaviour").first).to_be_visible()

        page.locator("nav.crumbs").get_by_role("link", name="Home").click()
        expect(page.locator("html")).to_have_attribute("lang", "en")  # the chosen language stays
        page.locator("ul.partners").get_by_role("link", name=world.partner["name_en"], exact=True).click()
        expect(page.locator("h1")).to_have_text(world.partner["name_en"])
        expect(page.locator("section.month").first).to_be_visible()

        page.goto(path("t", str(world.team["id"])))
        expect(page.locator("h1")).to_have_text(world.team["name_zh"])
        page.goto(path("c", "没有这个城市"))
        page.get_by_role("link", name="返回首页").click()
        expect(page.locator("h1")).to_have_text("社区减碳排行榜")
        assert tab.errors == [] or all("404" in e for e in tab.errors), tab.errors


def test_the_charts_are_drawn_in_view_with_a_title_per_bar(browser: Browser, site: str, world: World) -> None:
    with Tab(browser, site, viewport=PHONE, is_mobile=True) as tab:
        page = tab.page
        page.goto(path("c", world.city) + "?period=all")
        for chart, expected in (("daily", 30), ("categories", 3)):
            svg = page.locator(f"svg.chart.{chart}")
            svg.scroll_into_view_if_needed()
            expect(svg).to_be_in_viewport()
            box = svg.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 50, (chart, box)
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (chart, box)
            bars = svg.locator("rect.bar")
            expect(bars).to_have_count(expected)
            sizes = [bars.nth(i).bounding_box() for i in range(expected)]
            drawn = [b for b in sizes if b and b["width"] > 0 and b["height"] > 0]
            assert len(drawn) >= (4 if chart == "daily" else 3), (chart, sizes)
            title = bars.last.locator("title").text_content() or ""
            assert ":" in title and ("kg" in title or " t" in title), title
        assert page.locator("svg.daily desc").text_content()
        page.locator("section[aria-labelledby=daily-h] details summary").click()
        expect(page.locator("section[aria-labelledby=daily-h] details table tbody tr")).to_have_count(30)
        page.locator("svg.daily").screenshot(path=str(artefacts_dir() / "chart-daily-phone.png"))
        assert tab.errors == [], tab.errors


def test_the_index_leads_to_the_lots_and_a_sold_lot_in_both_languages(
        browser: Browser, site: str, lot_id: int) -> None:
    with Tab(browser, site, viewport=PHONE, is_mobile=True) as tab:
        page = tab.page
        page.goto("/")
        page.locator("main a.lots").click()
        expect(page.locator("h1")).to_have_text("碳减排量批次")
        page.locator(f'li[data-lot="{lot_id}"]').get_by_role("link", name=f"第 {lot_id} 批").click()
        expect(page.locator("h1")).to_have_text(f"第 {lot_id} 批")
        expect(page.locator("a.benefit")).to_have_text("社区植树")
        hash_box = page.locator("code.hash").bounding_box()
        assert hash_box is not None and hash_box["x"] + hash_box["width"] <= PHONE["width"], hash_box
        page.get_by_role("link", name="English").click()
        expect(page.locator("h1")).to_have_text(f"Lot {lot_id}")
        expect(page.locator("a.benefit")).to_have_text("Community trees")
        page.locator("nav.crumbs").get_by_role("link", name="Carbon market lots").click()
        expect(page.locator(f'li[data-lot="{lot_id}"] .state')).to_have_text("Sold and paid out")
        assert tab.errors == [], tab.errors
