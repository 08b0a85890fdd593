"""The pages' cache (`api.pages.cache.Memo`): values its `keep` refuses (pages of places nobody has heard of,
searches, the data behind them) are cached apart, so any number of made-up URLs cannot push a real page out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

from api.pages.cache import Memo


class Maker:
    """Counts how often each key had to be made: a hit makes nothing."""

    def __init__(self) -> None:
        self.made: Counter[str] = Counter()

    def __call__(self, key: str, value: int) -> Callable[[], Awaitable[int]]:
        async def make() -> int:
            self.made[key] += 1
            return value

        return make


async def test_values_keep_refuses_never_push_kept_ones_out() -> None:
    memo: Memo[int] = Memo(ttl_s=60, stale_s=60, size_max=2, keep=lambda v: v > 0, misses_max=4)
    make = Maker()
    for key in ("a", "b"):
        assert await memo.get(key, make(key, 1)) == 1
    for n in range(50):  # made-up places: their pages are refused by the Memo's own keep
        assert await memo.get(f"nowhere-{n}", make(f"nowhere-{n}", 0)) == 0
    for n in range(50):  # searches: refused by the caller, whatever their value
        assert await memo.get(f"search-{n}", make(f"search-{n}", 1), keep=lambda _: False) == 1
    for key in ("a", "b"):
        assert await memo.get(key, make(key, 1)) == 1
    assert make.made["a"] == make.made["b"] == 1, make.made
    assert await memo.get("search-49", make("search-49", 1)) == 1  # the latest misses are cached too
    assert make.made["search-49"] == 1
    assert await memo.get("search-0", make("search-0", 1)) == 1  # the oldest went, within their own bound
    assert make.made["search-0"] == 2


async def test_a_caller_may_keep_what_the_memo_alone_would_not() -> None:
    memo: Memo[int] = Memo(ttl_s=60, stale_s=60, size_max=2, misses_max=1)
    make = Maker()
    await memo.get("kept", make("kept", 0), keep=lambda v: v == 0)
    for n in range(5):
        await memo.get(f"miss-{n}", make(f"miss-{n}", 0), keep=lambda _: False)
    await memo.get("kept", make("kept", 0))
    assert make.made["kept"] == 1
