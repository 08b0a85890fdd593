"""The pages' per-process cache: a warm page is a dictionary lookup, not a recomputation.

Every reader of a popular page wants the same bytes, and the figures move about once a second, so a rendered
page (and the data behind it) is kept for a few seconds. One computation per key runs at a time (the others
wait for it), and a value that has just expired is still served while one task renders its successor in the
background, so a slow aggregate (a city of a million residents) is paid once per refresh, not by a reader.
Sizes are bounded (least recently used go first), and keys are built from the page's normalised parameters only,
so query strings cannot grow the cache."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Memo", "Page", "etag_matches", "page_of"]

T = TypeVar("T")
log = logging.getLogger("api.pages")


@dataclass(frozen=True, slots=True)
class Page:
    status: int
    body: bytes
    etag: str
    language: str


def page_of(status: int, html: str, language: str) -> Page:
    body = html.encode()
    return Page(status, body, '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"', language)


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison: any listed tag (with or without W/) or `*`."""
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


@dataclass(slots=True)
class _Entry(Generic[T]):
    value: T
    fresh_until: float
    stale_until: float


class Memo(Generic[T]):
    """Values by key: fresh for `ttl_s`, then served for up to `stale_s` more while one task refreshes them."""

    def __init__(self, *, ttl_s: float, stale_s: float, size_max: int,
                 keep: Callable[[T], bool] | None = None, misses_max: int = 256) -> None:
        self.ttl_s = ttl_s
        self.stale_s = stale_s
        self.size_max = size_max
        self._keep = keep
        self._misses_max = misses_max
        self._entries: OrderedDict[Hashable, _Entry[T]] = OrderedDict()
        # Values `keep` refuses (pages of places that do not exist, searches, their data) live apart, in a smaller
        # LRU: requests for made-up URLs or searches cannot push real pages out.
        self._misses: OrderedDict[Hashable, _Entry[T]] = OrderedDict()
        self._pending: dict[Hashable, asyncio.Task[T]] = {}

    async def get(self, key: Hashable, make: Callable[[], Awaitable[T]], *,
                  keep: Callable[[T], bool] | None = None) -> T:
        """`keep` (else the Memo's own) says whether a value made now belongs with the real pages or apart, with
        the misses (a search, a place nobody has heard of)."""
        now = time.monotonic()
        store = self._entries if key in self._entries else self._misses
        hit = store.get(key)
        if hit is not None and hit.fresh_until > now:
            store.move_to_end(key)
            return hit.value
        if hit is not None and hit.stale_until > now:
            if key not in self._pending:
                self._start(key, make, background=True, keep=keep)
            return hit.value
        task = self._pending.get(key) or self._start(key, make, background=False, keep=keep)
        return await asyncio.shield(task)  # a reader who goes away does not cancel the others' page

    def _start(self, key: Hashable, make: Callable[[], Awaitable[T]], *, background: bool,
               keep: Callable[[T], bool] | None) -> asyncio.Task[T]:
        async def run() -> T:
            return await make()

        task = asyncio.get_running_loop().create_task(run())
        self._pending[key] = task
        task.add_done_callback(lambda done: self._settle(key, done, background, keep or self._keep))
        return task

    def _settle(self, key: Hashable, task: asyncio.Task[T], background: bool,
                keep: Callable[[T], bool] | None) -> None:
        self._pending.pop(key, None)
        if task.cancelled():
            return
        error = task.exception()  # retrieved here, so a refresh nobody awaited fails quietly but logged
        if error is not None:
            if background:
                log.warning("page refresh failed", extra={"key": repr(key)[:200], "error": repr(error)[:300]})
            return
        now = time.monotonic()
        value = task.result()
        kept = keep is None or keep(value)
        store, bound = (self._entries, self.size_max) if kept else (self._misses, self._misses_max)
        (self._misses if kept else self._entries).pop(key, None)
        store[key] = _Entry(value, now + self.ttl_s, now + self.ttl_s + self.stale_s)
        store.move_to_end(key)
        while len(store) > bound:
            store.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
        self._misses.clear()
