"""The public pages: server-rendered HTML for cities, districts, communities, teams, partners, the methodology and
the carbon market's lots, with no login and no JavaScript. Each answer is a cached page (see cache.py) with a
strong ETag of its body, so a reader's browser revalidates with If-None-Match and gets 304 without the body."""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from litestar import Controller, Litestar, Request, Response, get
from litestar.enums import MediaType
from litestar.params import FromPath, FromQuery
from markupsafe import Markup

from api.pages.cache import Memo, Page, etag_matches, page_of
from api.pages.lots import lot_page, lots_page
from api.pages.text import PERIODS, pick_language
from api.pages.views import View, Views, place_scope
from api.problems import BACKING_ERRORS, log_unavailable

__all__ = ["PagesController"]

CSS = Path(__file__).with_name("pages.css").read_text()
STYLE = Markup(CSS)  # noqa: S704 - our own file, not input; its hash is in the CSP
# The only style the pages have is this inline sheet, allowed by its hash; no script, font or remote image.
CSP = ("default-src 'none'; style-src 'sha256-" + base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
       + "'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
PAGE_TTL_S = 10.0  # a page is recomputed at most this often per process…
PAGE_STALE_S = 60.0  # …and served this much longer while its successor renders
MAX_AGE_S = 30  # what browsers and shared caches may keep
PAGES_MAX = 1_000  # 20-45 KB each
DATA_MAX = 2_000
DEFAULT_PERIOD = "week"
SEGMENT_CHARS_MAX = 100
QUERY_CHARS_MAX = 40
TEAM_ID = re.compile(r"[0-9]{1,18}")  # not str.isdigit: it takes "²", which int() refuses, and "١٢"
LOT_ID = re.compile(r"[1-9][0-9]{0,17}")  # ASCII digits only, and small enough that `id + 1` is still a bigint


class _Caches:
    """The rendered pages and the data behind them (shared by every language and period of a page)."""

    def __init__(self) -> None:
        self.pages: Memo[Page] = Memo(ttl_s=PAGE_TTL_S, stale_s=PAGE_STALE_S, size_max=PAGES_MAX,
                                      keep=lambda page: page.status == 200)
        self.data: Memo[Any] = Memo(ttl_s=PAGE_TTL_S, stale_s=PAGE_STALE_S, size_max=DATA_MAX)


def caches(app: Litestar) -> _Caches:
    """One per app (so per event loop: Litestar's test clients run the app on a loop of their own)."""
    found = app.state.get("page_caches")
    if found is None:
        found = app.state.page_caches = _Caches()
    return found


def _headers(page: Page) -> dict[str, str]:
    return {"Cache-Control": f"public, max-age={MAX_AGE_S}", "ETag": page.etag, "Vary": "Accept-Language",
            "Content-Language": page.language, "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "strict-origin-when-cross-origin"}


def _render(app: Litestar, status: int, template: str, context: dict[str, Any], language: str) -> Page:
    html = app.template_engine.get_template(template).render(**context, css=STYLE)  # type: ignore[union-attr]
    return page_of(status, html, language)


def _views(request: Request[Any, Any, Any], language: str, explicit: bool) -> Views:
    state = request.app.state
    return Views(state.redis, state.settings.leaderboard_zone, caches(request.app).data, language, explicit)


async def _answer(request: Request[Any, Any, Any], key: tuple[Any, ...], build: Callable[[Views], Awaitable[View]],
                  *, kept: bool = True) -> Response[bytes]:
    """The page for `key` in the reader's language, from the cache when it is there; 304 when the reader has it.
    A page not `kept` (a search) is cached apart, with the misses, so searches cannot push real pages out."""
    language, explicit = pick_language(request.query_params.get("lang"), request.headers.get("accept-language", ""))
    app = request.app

    async def make() -> Page:
        views = _views(request, language, explicit)
        view = await build(views)
        if view is None:
            return _render(app, 404, *views.not_found(), language)
        return _render(app, 200, *view, language)

    pages = caches(app).pages
    page = await pages.get((*key, language, explicit), make, keep=None if kept else lambda _: False)
    headers = _headers(page)
    if page.status == 200 and etag_matches(request.headers.get("if-none-match", ""), page.etag):
        return Response(b"", status_code=304, headers=headers)
    return Response(page.body, status_code=page.status, media_type=MediaType.HTML, headers=headers)


def _unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Redis or PostgreSQL is down: an HTML page, not cached, that asks to reload (like the API's 503)."""
    log_unavailable(request, exc)
    language, explicit = pick_language(request.query_params.get("lang"), request.headers.get("accept-language", ""))
    views = _views(request, language, explicit)
    template, context = views.not_found()
    context |= {"title": views.t["unavailable_title"], "message": views.t["unavailable_text"]}
    page = _render(request.app, 503, template, context, language)
    return Response(page.body, status_code=503, media_type=MediaType.HTML,
                    headers={**_headers(page), "Cache-Control": "no-store", "Retry-After": "5"})


def _period(period: str | None) -> str:
    return period if period in PERIODS else DEFAULT_PERIOD


def _lot_id(text: str) -> int | None:
    return int(text) if LOT_ID.fullmatch(text) else None


class PagesController(Controller):
    path = "/"
    include_in_schema = False
    opt = {"exclude_from_auth": True}
    exception_handlers = dict.fromkeys(BACKING_ERRORS, _unavailable)

    @get("/")
    async def index(self, request: Request[Any, Any, Any], q: FromQuery[str | None] = None) -> Response[bytes]:
        """Cities (a search by the start of the name when there are many), organisations, partners."""
        query = (q or "").strip()[:QUERY_CHARS_MAX]
        return await _answer(request, ("index", query), lambda v: v.index_page(query), kept=not query)

    @get("/c/{city:str}")
    async def city(self, request: Request[Any, Any, Any], city: FromPath[str],
                   period: FromQuery[str | None] = None) -> Response[bytes]:
        return await self._place(request, (city,), period)

    @get("/c/{city:str}/{district:str}")
    async def district(self, request: Request[Any, Any, Any], city: FromPath[str], district: FromPath[str],
                       period: FromQuery[str | None] = None) -> Response[bytes]:
        return await self._place(request, (city, district), period)

    @get("/c/{city:str}/{district:str}/{community:str}")
    async def community(self, request: Request[Any, Any, Any], city: FromPath[str], district: FromPath[str],
                        community: FromPath[str], period: FromQuery[str | None] = None) -> Response[bytes]:
        return await self._place(request, (city, district, community), period)

    @staticmethod
    async def _place(request: Request[Any, Any, Any], names: tuple[str, ...], period: str | None) -> Response[bytes]:
        chosen = _period(period)
        usable = all(n and len(n) <= SEGMENT_CHARS_MAX and "|" not in n for n in names)

        async def build(views: Views) -> View:
            return await views.scope_page(place_scope(*names), chosen) if usable else None

        return await _answer(request, ("place", names, chosen), build)

    @get("/t/{team_id:str}")
    async def team(self, request: Request[Any, Any, Any], team_id: FromPath[str],
                   period: FromQuery[str | None] = None) -> Response[bytes]:
        chosen = _period(period)
        number = int(team_id) if TEAM_ID.fullmatch(team_id) else None

        async def build(views: Views) -> View:
            return await views.team_page(number, chosen) if number is not None else None

        return await _answer(request, ("team", team_id[:SEGMENT_CHARS_MAX], chosen), build)

    @get("/p/{partner_id:str}")
    async def partner(self, request: Request[Any, Any, Any], partner_id: FromPath[str]) -> Response[bytes]:
        try:
            found: uuid.UUID | None = uuid.UUID(partner_id)
        except ValueError:
            found = None

        async def build(views: Views) -> View:
            return await views.partner_page(found) if found is not None else None

        return await _answer(request, ("partner", str(found) if found else "?"), build)

    @get("/methodology")
    async def methodology(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        return await _answer(request, ("methodology",), lambda v: v.methodology_page())

    @get("/lots")
    async def lots(self, request: Request[Any, Any, Any], before: FromQuery[str | None] = None) -> Response[bytes]:
        """Every lot, newest first; `?before=` the last lot of the previous page (an unknown one is a 404 page)."""
        cursor = _lot_id(before) if before is not None else None
        usable = before is None or cursor is not None

        async def build(views: Views) -> View:
            return await lots_page(views, cursor) if usable else None

        return await _answer(request, ("lots", cursor if usable else "?"), build)

    @get("/lots/{lot_id:str}")
    async def lot(self, request: Request[Any, Any, Any], lot_id: FromPath[str]) -> Response[bytes]:
        """One lot's public account: its programme, totals, sale, public-benefit share and manifest hash."""
        number = _lot_id(lot_id)

        async def build(views: Views) -> View:
            return await lot_page(views, number) if number is not None else None

        return await _answer(request, ("lot", number if number is not None else "?"), build)
