"""Words and numbers of the public pages: the strings in both languages (data, not code), the language a reader
gets, masses in kg or t, the everyday equivalents with their sources, and links that keep the reader's choice
of language."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

__all__ = [
    "LANGUAGES", "PERIODS", "Formats", "Link", "co2e", "equivalents", "grams", "mass", "number", "percent",
    "pick_language", "strings", "yuan",
]

LANGUAGES = ("zh-CN", "en")
PERIODS = ("today", "week", "month", "all")
HERE = Path(__file__).parent
ACCEPT_LANGUAGE_TAGS_MAX = 20  # a limit on everything: a long header is read only this far


@cache
def _load(name: str) -> dict[str, Any]:
    with (HERE / name).open("rb") as fh:
        return tomllib.load(fh)


def strings(language: str) -> Mapping[str, Any]:
    return _load("strings.toml")[language if language in LANGUAGES else "zh-CN"]


def equivalents() -> Mapping[str, Any]:
    return _load("equivalents.toml")


def _language_of(tag: str) -> str | None:
    tag = tag.strip().lower()
    if tag.startswith("zh"):
        return "zh-CN"
    if tag.startswith("en"):
        return "en"
    return None


def pick_language(query: str | None, accept_language: str) -> tuple[str, bool]:
    """`?lang=` first (then links carry it on), else the best of Accept-Language by its q-values, else Chinese.
    Returns the language and whether the reader chose it in the URL."""
    chosen = _language_of(query or "")
    if chosen:
        return chosen, True
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(accept_language.split(",")[:ACCEPT_LANGUAGE_TAGS_MAX]):
        tag, _, params = part.partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        language = _language_of(tag)
        if language and q > 0:
            ranked.append((-q, i, language))
    return (min(ranked)[2] if ranked else "zh-CN"), False


def number(n: float, decimals: int = 0) -> str:
    return f"{n:,.{decimals}f}"


def mass(mg: int) -> str:
    """A mass of CO2e for people: kg below a tonne (more decimals for small amounts), t above."""
    kg = mg / 1_000_000
    if abs(kg) >= 1000:
        return f"{number(kg / 1000, 2)} t"
    return f"{number(kg, 2 if abs(kg) < 10 else 1 if abs(kg) < 100 else 0)} kg"


def grams(mg: int) -> str:
    """Small amounts (a behaviour's factor): g, or kg from 1,000 g."""
    g = mg / 1000
    return f"{number(g / 1000, 2)} kg" if g >= 1000 else f"{number(g, 2 if g < 10 else 1 if g < 100 else 0)} g"


def _hundredths(value: int, per: int) -> str:
    """`value` / `per` with two decimals, rounded down, in integers only (no float ever sees an amount)."""
    whole, part = divmod(value * 100 // per, 100)
    return f"{whole:,}.{part:02d}"


def co2e(mg: int) -> str:
    """A lot's mass of CO2e, rounded down so it never states more than was pooled: t from a tonne, kg from a
    kilogram, else g. The exact milligrams go beside it in the page's <data value>."""
    if mg < 0:
        return "-" + co2e(-mg)
    if mg >= 1_000_000_000:
        return f"{_hundredths(mg, 1_000_000_000)} t CO2e"
    if mg >= 1_000_000:
        return f"{_hundredths(mg, 1_000_000)} kg CO2e"
    return f"{_hundredths(mg, 1_000)} g CO2e"


def yuan(fen: int) -> str:
    """Money from integer fen: ¥85.00."""
    sign, fen = ("-", -fen) if fen < 0 else ("", fen)
    return f"{sign}¥{fen // 100:,}.{fen % 100:02d}"


def percent(ppm: int) -> str:
    """A share in parts per million as a percentage, exactly (100,000 ppm → 10%, 12,345 ppm → 1.2345%)."""
    whole, part = divmod(ppm, 10_000)
    return f"{whole:,}" + (f".{part:04d}".rstrip("0") if part else "") + "%"


def _how_many(value: float) -> str:
    return number(value, 1 if value < 10 else 0)


class Formats:
    """What the templates call to show numbers, in the reader's language and the boards' time zone."""

    def __init__(self, t: Mapping[str, Any], tz: ZoneInfo) -> None:
        self.t = t
        self.tz = tz
        self.mass = mass
        self.grams = grams
        self.number = number
        self.co2e = co2e
        self.yuan = yuan
        self.percent = percent

    def trees(self, mg: int) -> str:
        return self.t["trees"].format(n=_how_many(max(mg, 0) / equivalents()["tree_year"]["mg"]))

    def car_km(self, mg: int) -> str:
        return self.t["car_km"].format(n=_how_many(max(mg, 0) / equivalents()["car_km"]["mg"]))

    def when(self, at: datetime | None) -> str:
        return at.astimezone(self.tz).strftime("%Y-%m-%d %H:%M") if at else "—"

    def day(self, at: datetime | date | None) -> str:
        """A date, or the local day of a moment in the boards' time zone."""
        if at is None:
            return "—"
        return (at.astimezone(self.tz).date() if isinstance(at, datetime) else at).isoformat()

    def month(self, d: date) -> str:
        return d.strftime("%Y-%m")

    def category(self, code: str) -> str:
        return self.t["category"].get(code, code)

    def unit(self, code: str) -> str:
        return self.t["unit"].get(code, code)


class Link:
    """Builds this site's URLs: path segments are percent-encoded, and a language the reader chose in the URL
    is carried on (one chosen by Accept-Language needs no help)."""

    def __init__(self, language: str, explicit: bool) -> None:
        self.language = language
        self.explicit = explicit

    def __call__(self, *segments: str | int, **query: str | None) -> str:
        return self._url(segments, query, self.language if self.explicit else None)

    def switched(self, *segments: str | int, **query: str | None) -> str:
        """The same page in the other language (always in the URL: it must override Accept-Language)."""
        return self._url(segments, query, strings(self.language)["switch_lang"])

    @staticmethod
    def _url(segments: tuple[str | int, ...], query: Mapping[str, str | None], language: str | None) -> str:
        path = "/" + "/".join(quote(str(s), safe="") for s in segments if s != "")
        params = {k: v for k, v in query.items() if v} | ({"lang": language} if language else {})
        return path + ("?" + urlencode(params) if params else "")
