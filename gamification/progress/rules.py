"""Levels, the streak rule and badges, loaded once from `rules.toml` and validated (a broken file stops the
start with the entry named), and the pure arithmetic on them: which level, how long a streak."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date
from functools import cache
from itertools import pairwise
from pathlib import Path

from wallet.methodology.catalogue import CATEGORIES, behaviours

__all__ = ["Badge", "Level", "Rules", "Streak", "level_of", "rules", "streak_of"]

RULES_PATH = Path(__file__).with_name("rules.toml")
KINDS = ("actions", "grams", "categories", "streak", "redemptions", "donations", "challenges")


@dataclass(frozen=True, slots=True)
class Level:
    number: int
    grams: int
    name_zh: str
    name_en: str


@dataclass(frozen=True, slots=True)
class Badge:
    code: str
    kind: str
    target: int
    name_zh: str
    name_en: str
    description_zh: str
    description_en: str
    behaviours: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rules:
    levels: tuple[Level, ...]
    badges: tuple[Badge, ...]
    freeze_every_days: int
    freezes_max: int


@cache
def rules(path: Path = RULES_PATH) -> Rules:
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    levels = tuple(Level(i, int(item["grams"]), item["name_zh"], item["name_en"])
                   for i, item in enumerate(raw["level"], start=1))
    if not levels or levels[0].grams != 0 or any(a.grams >= b.grams for a, b in pairwise(levels)):
        raise ValueError(f"{path}: levels must start at 0 grams and rise strictly")
    badges = []
    seen: set[str] = set()
    for item in raw["badge"]:
        where = f"{path}: badge {item.get('code')!r}"
        missing = [k for k in ("code", "kind", "target", "name_zh", "name_en", "description_zh", "description_en")
                   if k not in item]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        if item["code"] in seen:
            raise ValueError(f"{where}: this code is used twice")
        seen.add(item["code"])
        if item.get("kind") not in KINDS:
            raise ValueError(f"{where}: kind must be one of {', '.join(KINDS)}")
        if isinstance(item["target"], bool) or not isinstance(item["target"], int) or item["target"] < 1:
            raise ValueError(f"{where}: target must be a whole number of at least 1")
        unknown = [b for b in item.get("behaviours", []) if b not in behaviours()]
        if unknown:
            raise ValueError(f"{where}: unknown behaviours {unknown}")
        if item["kind"] == "categories" and item["target"] > len(CATEGORIES):
            raise ValueError(f"{where}: there are only {len(CATEGORIES)} categories")
        badges.append(Badge(item["code"], item["kind"], item["target"], item["name_zh"], item["name_en"],
                            item["description_zh"], item["description_en"], tuple(item.get("behaviours", []))))
    streak = raw["streak"]
    every, most = streak.get("freeze_every_days"), streak.get("freezes_max")
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise ValueError(f"{path}: [streak] freeze_every_days must be a whole number of at least 1")
    if not isinstance(most, int) or isinstance(most, bool) or most < 0:
        raise ValueError(f"{path}: [streak] freezes_max must be a whole number of at least 0")
    return Rules(levels, tuple(badges), every, most)


def level_of(grams: int) -> tuple[Level, Level | None]:
    """The level reached with `grams` and the next one (None at the top)."""
    levels = rules().levels
    reached = [lv for lv in levels if lv.grams <= max(0, grams)][-1]
    following = next((lv for lv in levels if lv.grams > max(0, grams)), None)
    return reached, following


@dataclass(frozen=True, slots=True)
class Streak:
    current: int  # counted days in the running streak (frozen days bridge it but do not count)
    longest: int
    freezes: int  # saved up now
    counted_today: bool
    at_risk: bool  # alive, but today has no credited action yet


def streak_of(days: list[date], today: date) -> Streak:
    """Days with a settled, credited action (in the resident's local calendar, as each entry recorded it),
    oldest first. A missed day uses a saved freeze if there is one; one freeze is earned per
    `freeze_every_days` counted days in a row, up to `freezes_max`. Deterministic: the same days give the
    same streak however the actions arrived."""
    r = rules()
    current = longest = freezes = run = 0
    previous: date | None = None
    for day in days:
        if day > today:
            break
        missed = 0 if previous is None else (day - previous).days - 1
        if previous is None or missed > freezes:
            current, run = 0, 0  # a break: the saved freezes stay saved
        else:
            freezes -= missed
        current += 1
        run += 1
        if run % r.freeze_every_days == 0 and freezes < r.freezes_max:
            freezes += 1
        longest = max(longest, current)
        previous = day
    if previous is None:
        return Streak(0, 0, 0, False, False)
    missed_since = (today - previous).days - 1  # days before today without an action
    if previous == today:
        return Streak(current, longest, freezes, True, False)
    if missed_since <= freezes:
        return Streak(current, longest, freezes - missed_since, False, True)
    return Streak(0, longest, freezes, False, False)
