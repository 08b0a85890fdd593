"""HTTP plumbing and cold renders for bench/community.py.

`Getter` is one keep-alive connection (bodies by Content-Length; a 304 has none); `scrape` reads the API's
`cw_http_request_duration_seconds` histogram from /metrics, whose deltas give the API's own time per row.

Cold renders: over HTTP, the first request of each place page of the city and of each period and language variant
of the city page, one at a time (the page cache keys on the normalised place, period and language, and serves an
expired page for 60 s more while one task re-renders it, so nothing else makes an API process render while a reader
waits); in-process, what the API's cache miss runs (`Views.scope_page` and the template, `_render`), with every
cache emptied first, timed per part by wrappers around the reads `api.pages.views` calls (restored afterwards)."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from bench.community_report import PARTS, ColdRow, Hist
from bench.community_setup import City
from bench.load import HOST

Check = Callable[[int, bytes], str | None]
_LINE = re.compile(r"^cw_http_request_duration_seconds_(bucket|sum|count)\{(.*)\} (\S+)$")  # routes hold braces
_LABEL = re.compile(r'(\w+)="([^"]*)"')
PERIODS = ("week", "today", "month", "all")


class Getter:
    """One keep-alive connection sending `build(n)`; `check(status, body)` says what went wrong, if anything.
    `last_bytes`: the size of the last body (for the report)."""

    def __init__(self, port: int, build: Callable[[int], bytes], check: Check) -> None:
        self.port, self.build, self.check = port, build, check
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.last_bytes = 0

    async def __call__(self, n: int) -> str | None:
        try:
            self.conn = self.conn or await asyncio.open_connection(HOST, self.port, limit=1 << 20)
            self.conn[1].write(self.build(n))
            head = (await self.conn[0].readuntil(b"\r\n\r\n")).lower()
            status, body = int(head[9:12]), b""
            if (at := head.find(b"\r\ncontent-length:")) >= 0:
                body = await self.conn[0].readexactly(int(head[at + 17:head.index(b"\r\n", at + 2)]))
            elif status not in (204, 304):
                raise ValueError("no Content-Length")
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.close()
            return f"io: {type(exc).__name__}"
        self.last_bytes = len(body)
        return self.check(status, body)

    def close(self) -> None:
        if self.conn is not None:
            self.conn[1].close()
            self.conn = None


def get(port: int, path: str, headers: dict[str, str] | None = None) -> Callable[[int], bytes]:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    raw = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: cw-bench\r\n{extra}\r\n".encode()
    return lambda _n: raw


def ok(status: int, _body: bytes) -> str | None:
    return None if status == 200 else f"HTTP {status}"


def page_ok(status: int, body: bytes) -> str | None:
    """A 200 with the city's board (20 rows: real leaders) and its participants."""
    if status != 200:
        return f"HTTP {status}"
    board = body.partition(b'<table class="board">')[2].partition(b"</table>")[0]
    return None if board.count(b"<tr><td") == 20 and b'class="participants"' in body else "incomplete page"


def not_modified(status: int, _body: bytes) -> str | None:
    return None if status == 304 else f"HTTP {status} instead of 304"


def city_path(city: City, *names: str, query: str = "") -> str:
    return "/c/" + "/".join(quote(n, safe="") for n in (city.name, *names)) + query


async def scrape(port: int) -> dict[str, tuple[int, float, dict[float, int]]]:
    """route -> (count, sum in seconds, {le: cumulative count}) of GET requests, from the API's /metrics."""
    reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 24)
    try:
        writer.write(f"GET /metrics HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode())
        text = (await reader.read()).decode().split("\r\n\r\n", 1)[1]
    finally:
        writer.close()
    out: dict[str, tuple[int, float, dict[float, int]]] = {}
    for line in text.splitlines():
        if not (m := _LINE.match(line)):
            continue
        labels = dict(_LABEL.findall(m.group(2)))
        if labels.get("method") != "GET" or labels.get("route") == "/metrics":
            continue
        count, total, buckets = out.get(labels["route"], (0, 0.0, {}))
        value = float(m.group(3))
        if m.group(1) == "count":
            count = int(value)
        elif m.group(1) == "sum":
            total = value
        else:
            buckets[math.inf if labels["le"] == "+Inf" else float(labels["le"])] = int(value)
        out[labels["route"]] = (count, total, buckets)
    return out


def delta(before: dict[str, tuple[int, float, dict[float, int]]],
          after: dict[str, tuple[int, float, dict[float, int]]]) -> Hist:
    """The requests between two scrapes, over every GET route but /metrics (a row asks for one route)."""
    count, total, buckets = 0, 0.0, dict[float, int]()
    for route, (n, s, b) in after.items():
        n0, s0, b0 = before.get(route, (0, 0.0, {}))
        count, total = count + n - n0, total + s - s0
        for le, c in b.items():
            buckets[le] = buckets.get(le, 0) + c - b0.get(le, 0)
    return Hist(count, total, sorted(buckets.items()))


async def _one_at_a_time(port: int, paths: Sequence[tuple[str, dict[str, str]]], name: str,
                         check: Check = page_ok) -> ColdRow:
    before, samples = await scrape(port), []
    for path, headers in paths:
        getter = Getter(port, get(port, path, headers), check)
        t0 = time.perf_counter()
        problem = await getter(0)
        samples.append(1000 * (time.perf_counter() - t0))
        getter.close()
        if problem:
            raise RuntimeError(f"{path}: {problem}")
    return ColdRow(name, "HTTP", sorted(samples), delta(before, await scrape(port)))


async def http_cold(port: int, city: City) -> list[ColdRow]:
    """On an API process that has rendered no page yet: the first district page (the templates compile), the
    other place pages of the city, the city page, then its other period and language variants (data cached)."""
    places = [city_path(city, d) for d in city.districts] + [city_path(city, d, c) for d, c in city.communities]
    variants = [(city_path(city, query=q), h) for p in PERIODS for q, h in (
        (f"?period={p}", {}), (f"?period={p}&lang=zh", {}), (f"?period={p}&lang=en", {}),
        (f"?period={p}", {"Accept-Language": "en-GB,en;q=0.9"}))]
    return [await _one_at_a_time(port, [(places[0], {})], "first page request of the process (templates compile)", ok),
            await _one_at_a_time(port, [(p, {}) for p in places[1:]], "district and community pages, first request",
                                 ok),
            await _one_at_a_time(port, [variants[0]], "city page, first request (nothing cached)"),
            await _one_at_a_time(port, variants[1:], "city page, other periods and languages (data cached)", ok)]


async def inprocess_cold(env: dict[str, str], redis: Redis, tz: ZoneInfo, city: City, samples: int,
                         name: str) -> ColdRow:
    """`samples` cold renders of the city page (week, alternating zh-CN and en), each after emptying the page and
    data caches, the cached top N and the nicknames."""
    import api.pages.views as views
    from api.app import create_app
    from api.pages.cache import Memo
    from api.pages.controllers import _render
    from api.settings import load_settings
    from gamification.leaderboards import service, store
    from wallet.db import connection

    app, spent = _app(create_app, load_settings(env)), dict[str, float]()
    wrapped = {"scope_summary": "summary", "public_board": "board", "list_challenges": "challenges",
               "get_challenge": "challenges", "scopes_like": "children", "group_board": "per-capita"}
    originals = {attr: getattr(views, attr) for attr in wrapped}

    def timed(attr: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def run(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*a, **kw)
            finally:
                spent[wrapped[attr]] = spent.get(wrapped[attr], 0.0) + time.perf_counter() - t0
        return run

    parts: dict[str, list[float]] = {p: [] for p in PARTS}
    totals = []
    try:
        for attr, fn in originals.items():
            setattr(views, attr, timed(attr, fn))
        for i in range(-1, samples):  # the first, untimed, compiles the templates in this process
            store._TOPS.clear()
            service._NAMES.clear()
            service._TOP_NAMES.clear()
            spent.clear()
            language = ("zh-CN", "en")[i % 2]
            v = views.Views(redis, tz, Memo(ttl_s=10, stale_s=60, size_max=100), language, False)
            t0 = time.perf_counter()
            view = await v.scope_page(views.place_scope(city.name), "week")
            t1 = time.perf_counter()
            if view is None:
                raise RuntimeError("the city page has nothing to show")
            page = _render(app, 200, *view, language)
            t2 = time.perf_counter()
            if page_ok(page.status, page.body):
                raise RuntimeError(f"an in-process render is incomplete: {page_ok(page.status, page.body)}")
            spent["template"] = t2 - t1
            if i < 0:
                continue
            for part in PARTS[:-1]:
                parts[part].append(1000 * spent.get(part, 0.0))
            parts["other"].append(1000 * (t2 - t0 - sum(spent.values())))
            totals.append(1000 * (t2 - t0))
    finally:
        for attr, fn in originals.items():
            setattr(views, attr, fn)
    async with connection() as conn:
        tables = (await conn.fetchval("SELECT count(*) FROM community_day"),
                  await conn.fetchval("SELECT count(*) FROM community_member"))
    return ColdRow(name, "in-process", sorted(totals), None, parts, tables)


def _app(create: Callable[..., Any], settings: Any) -> Any:
    """The API app as the server builds it (for its template engine; not started). create_app configures the root
    logger: the bench's handlers and level come back afterwards."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return create(settings)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
