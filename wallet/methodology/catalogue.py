"""The versioned methodology catalogue: what each green action is worth, and why.

A reviewed data file rather than database rows, so that every change to what counts (and how much) goes
through code review and history. A behaviour version is immutable once released: a book entry keeps the
(code, version) it was computed with, and a new release adds versions instead of editing them, so history
never changes. Everything is an integer: reductions in mg CO2e, caps in the behaviour's unit.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

__all__ = [
    "CATALOGUE_PATH", "CATEGORIES", "CURRENT_RELEASE", "TRUST_TIERS", "UNITS", "Behaviour", "BehaviourVersion",
    "Catalogue", "Plausibility", "Release", "TrustTier", "behaviour_codes", "behaviours", "catalogue",
    "current_version", "energy_for", "load_catalogue", "meets_tier", "reduction_mg", "releases",
    "unknown_behaviours", "version_at", "version_of",
]

CATALOGUE_PATH = Path(__file__).with_name("catalogue.toml")

# The seven categories of the ACEF group standard (2022), in its order.
CATEGORIES: tuple[str, ...] = ("clothing", "food", "housing", "transport", "consumption", "office", "digital_finance")
TrustTier = Literal["verified", "device", "self_reported"]
# Most trusted first: partner server-to-server data > phone sensors > the resident's word.
TRUST_TIERS: tuple[TrustTier, ...] = ("verified", "device", "self_reported")
# Units in which real quantities are whole numbers (metres, not km; Wh, not kWh), so no float is ever needed.
UNITS = frozenset({
    "g", "m", "l", "wh", "step", "trip", "order", "meal", "box", "item", "appliance", "bill", "receipt",
    "payment", "transaction", "ticket", "meeting", "day", "sheet", "document", "invoice",
})
MIN_BEHAVIOURS = 40
_INT_MAX = 10**12  # a limit on everything: no factor, cap or bound in this file is anywhere near it

_SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_RELEASE = re.compile(r"[0-9]{4}\.[1-9][0-9]*")


@dataclass(frozen=True, slots=True)
class Release:
    """One published methodology version (a changelog entry); the last one is the methodology in force."""

    version: str
    date: date
    summary_zh: str
    summary_en: str
    changes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Plausibility:
    """Bounds beyond which a report is not believable; None where a bound does not apply."""

    max_quantity: int | None = None
    min_duration_s: int | None = None
    max_duration_s: int | None = None
    min_speed_kmh: int | None = None
    max_speed_kmh: int | None = None
    max_per_day: int | None = None


@dataclass(frozen=True, slots=True)
class BehaviourVersion:
    """How one behaviour is quantified from release `since` on; frozen because book entries cite it."""

    code: str
    version: int
    since: str
    factor_mg: int
    per: int
    method: str
    source: str
    source_date: str
    conservative_note: str
    trust_tier: TrustTier
    daily_cap: int
    monthly_cap: int
    self_report_daily_cap: int
    plausibility: Plausibility
    exclusivity_group: str
    dedupe_window_s: int
    energy_per_kg: int


@dataclass(frozen=True, slots=True)
class Behaviour:
    """A kind of green action; its code is referenced by partners and book entries forever."""

    code: str
    category: str
    unit: str
    name_zh: str
    name_en: str
    description_zh: str
    description_en: str
    versions: tuple[BehaviourVersion, ...]

    @property
    def current(self) -> BehaviourVersion:
        return self.versions[-1]


@dataclass(frozen=True, slots=True)
class Catalogue:
    releases: tuple[Release, ...]
    behaviours: Mapping[str, Behaviour]

    @property
    def current_release(self) -> Release:
        return self.releases[-1]


class _Table:
    """One TOML table checked against its exact key set, so a misspelt key fails instead of being ignored."""

    def __init__(self, raw: object, where: str, required: Iterable[str], optional: Iterable[str] = ()) -> None:
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected a table, got {type(raw).__name__}")
        required, optional = tuple(required), tuple(optional)
        missing = [key for key in required if key not in raw]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        extra = sorted(set(raw) - set(required) - set(optional))
        if extra:
            raise ValueError(f"{where}: unknown field(s) {', '.join(extra)}")
        self.raw, self.where = cast(dict[str, Any], raw), where

    def text(self, key: str, *, empty: bool = False) -> str:
        value = self.raw[key]
        if not isinstance(value, str) or (not empty and not value.strip()):
            raise ValueError(f"{self.where}: {key} must be a {'' if empty else 'non-empty '}string")
        return value.strip()

    def integer(self, key: str, minimum: int = 0) -> int:
        value = self.raw[key]
        # bool is an int subclass in Python; `true` must not pass as 1.
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{self.where}: {key} must be an integer, got {type(value).__name__}")
        if not minimum <= value <= _INT_MAX:
            raise ValueError(f"{self.where}: {key} must be between {minimum} and {_INT_MAX:_}, got {value}")
        return value


def _refuse_floats(value: object, where: str) -> None:
    """Accounting is integer-only (DESIGN.md §4): a float anywhere in the file is a defect, even in text fields."""
    if isinstance(value, float):
        raise ValueError(f"{where}: floats are not allowed ({value!r}); use integers in a smaller unit")
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_floats(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            label = item.get("code", item.get("version", index + 1)) if isinstance(item, dict) else index + 1
            _refuse_floats(item, f"{where} {label!r}" if isinstance(label, str) else f"{where} #{label}")


def _release(index: int, raw: object) -> Release:
    table = _Table(raw, f"release #{index + 1}", ("version", "date", "summary_zh", "summary_en", "changes"))
    version = table.text("version")
    table.where = f"release #{index + 1} ({version!r})"
    if not _RELEASE.fullmatch(version):
        raise ValueError(f"{table.where}: version must look like 2026.1")
    when, changes = table.raw["date"], table.raw["changes"]
    if not isinstance(when, date) or isinstance(when, datetime):
        raise ValueError(f"{table.where}: date must be a TOML date such as 2026-11-01")
    if not isinstance(changes, list) or not changes or not all(isinstance(c, str) and c.strip() for c in changes):
        raise ValueError(f"{table.where}: changes must be a non-empty list of non-empty strings")
    return Release(version, when, table.text("summary_zh"), table.text("summary_en"),
                   tuple(c.strip() for c in changes))


_PLAUSIBILITY = tuple(f.name for f in fields(Plausibility))
_VERSION_TEXT = ("since", "method", "source", "source_date", "trust_tier", "exclusivity_group")
_VERSION_INTS = {"version": 1, "factor_mg": 0, "per": 1, "daily_cap": 0, "monthly_cap": 0,
                 "self_report_daily_cap": 0, "dedupe_window_s": 0, "energy_per_kg": 0}


def _plausibility(raw: object, where: str) -> Plausibility:
    table = _Table(raw, f"{where}: plausibility", (), _PLAUSIBILITY)
    bounds = {key: table.integer(key, minimum=1) for key in table.raw}
    for low, high in (("min_duration_s", "max_duration_s"), ("min_speed_kmh", "max_speed_kmh")):
        if low in bounds and high in bounds and bounds[low] > bounds[high]:
            raise ValueError(f"{where}: plausibility {low} is above {high}")
    return Plausibility(**bounds)


def _version(code: str, raw: object, position: int, release_order: Mapping[str, int]) -> BehaviourVersion:
    where = f"behaviour {code!r} version #{position}"
    table = _Table(raw, where, (*_VERSION_TEXT, *_VERSION_INTS, "conservative_note", "plausibility"))
    ints = {key: table.integer(key, minimum) for key, minimum in _VERSION_INTS.items()}
    if ints["version"] != position:
        raise ValueError(f"{where}: versions must be numbered 1, 2, … in order; found {ints['version']}")
    texts = {key: table.text(key, empty=key == "exclusivity_group") for key in _VERSION_TEXT}
    if texts["since"] not in release_order:
        raise ValueError(f"{where}: since {texts['since']!r} names no [[release]]")
    if texts["trust_tier"] not in TRUST_TIERS:
        raise ValueError(f"{where}: unknown trust_tier {texts['trust_tier']!r}; expected {', '.join(TRUST_TIERS)}")
    if texts["exclusivity_group"] and not _SNAKE_CASE.fullmatch(texts["exclusivity_group"]):
        raise ValueError(f"{where}: exclusivity_group must be snake_case or empty")
    daily, monthly, self_daily = ints["daily_cap"], ints["monthly_cap"], ints["self_report_daily_cap"]
    if daily and monthly and monthly < daily:
        raise ValueError(f"{where}: monthly_cap is below daily_cap")
    if daily and self_daily > daily:
        raise ValueError(f"{where}: self_report_daily_cap is above daily_cap")
    plausibility = _plausibility(table.raw["plausibility"], where)
    if daily and plausibility.max_per_day is not None and plausibility.max_per_day < daily:
        raise ValueError(f"{where}: plausibility max_per_day is below daily_cap, so the cap could never be reached")
    return BehaviourVersion(
        code=code, conservative_note=table.text("conservative_note", empty=True), plausibility=plausibility,
        **ints, **texts,  # type: ignore[arg-type]  # trust_tier was checked against TRUST_TIERS above
    )


_BEHAVIOUR_TEXT = ("code", "category", "unit", "name_zh", "name_en", "description_zh", "description_en")


def _behaviour(index: int, raw: object, release_order: Mapping[str, int]) -> Behaviour:
    where = f"behaviour #{index + 1}"
    if isinstance(raw, dict) and isinstance(raw.get("code"), str):
        where = f"{where} ({raw['code']!r})"
    table = _Table(raw, where, (*_BEHAVIOUR_TEXT, "version"))
    texts = {key: table.text(key) for key in _BEHAVIOUR_TEXT}
    if not _SNAKE_CASE.fullmatch(texts["code"]):
        raise ValueError(f"{where}: code must be snake_case")
    if texts["category"] not in CATEGORIES:
        raise ValueError(f"{where}: unknown category {texts['category']!r}; expected one of {', '.join(CATEGORIES)}")
    if texts["unit"] not in UNITS:
        raise ValueError(f"{where}: unknown unit {texts['unit']!r}; expected one of {', '.join(sorted(UNITS))}")
    raw_versions = table.raw["version"]
    if not isinstance(raw_versions, list) or not raw_versions:
        raise ValueError(f"{where}: expected at least one [[behaviour.version]]")
    versions = tuple(_version(texts["code"], v, n, release_order) for n, v in enumerate(raw_versions, 1))
    for earlier, later in itertools.pairwise(versions):
        if release_order[later.since] < release_order[earlier.since]:
            raise ValueError(f"{where}: version {later.version} since {later.since!r} is earlier than "
                             f"version {earlier.version} since {earlier.since!r}")
    return Behaviour(**texts, versions=versions)


def load_catalogue(path: Path = CATALOGUE_PATH) -> Catalogue:
    """Read and validate a catalogue file; any defect is fatal because a wrong catalogue miscredits residents."""
    with path.open("rb") as file:
        document = tomllib.load(file)
    _refuse_floats(document, path.name)
    _Table(document, path.name, ("release", "behaviour"))
    raw_releases, raw_behaviours = document["release"], document["behaviour"]
    if not isinstance(raw_releases, list) or not raw_releases:
        raise ValueError(f"{path.name}: expected at least one [[release]]")
    found = tuple(_release(i, r) for i, r in enumerate(raw_releases))
    for earlier, later in itertools.pairwise(found):
        if later.date <= earlier.date:
            raise ValueError(f"release {later.version!r}: releases must be listed oldest first, each dated "
                             f"after the one before ({earlier.version!r})")
    if len({release.version for release in found}) != len(found):
        raise ValueError(f"{path.name}: two releases share a version")
    release_order = {release.version: i for i, release in enumerate(found)}
    if not isinstance(raw_behaviours, list):
        raise ValueError(f"{path.name}: expected [[behaviour]] tables")
    table: dict[str, Behaviour] = {}
    for index, raw in enumerate(raw_behaviours):
        behaviour = _behaviour(index, raw, release_order)
        if behaviour.code in table:
            raise ValueError(f"behaviour #{index + 1} ({behaviour.code!r}): duplicate code")
        table[behaviour.code] = behaviour
    empty = [category for category in CATEGORIES if all(b.category != category for b in table.values())]
    if empty:
        raise ValueError(f"{path.name}: no behaviour in category {', '.join(empty)}")
    if len(table) < MIN_BEHAVIOURS:
        raise ValueError(f"{path.name}: {len(table)} behaviours; the methodology needs at least {MIN_BEHAVIOURS}")
    return Catalogue(found, MappingProxyType(table))


@cache
def catalogue() -> Catalogue:
    """The shipped catalogue, read once per process; read-only so no caller can alter it for the others."""
    return load_catalogue()


def behaviours() -> Mapping[str, Behaviour]:
    return catalogue().behaviours


@cache
def behaviour_codes() -> frozenset[str]:
    """The shipped codes, for cheap membership checks when partners are configured or report actions."""
    return frozenset(behaviours())


def unknown_behaviours(codes: Iterable[str]) -> list[str]:
    """Codes not in the catalogue, sorted and deduplicated so error messages are stable."""
    known = behaviour_codes()
    return sorted({code for code in codes if code not in known})


def releases() -> tuple[Release, ...]:
    """Oldest first; the last is the methodology in force."""
    return catalogue().releases


def _behaviour_named(code: str) -> Behaviour:
    found = behaviours().get(code)
    if found is None:
        raise KeyError(f"no behaviour has the code {code!r}")
    return found


def current_version(code: str) -> BehaviourVersion:
    """The version new activities are judged with."""
    return _behaviour_named(code).current


def version_of(code: str, version: int) -> BehaviourVersion:
    """The exact version a book entry cites, so it can be recomputed and explained later."""
    versions = _behaviour_named(code).versions
    if not 1 <= version <= len(versions):
        raise KeyError(f"behaviour {code!r} has no version {version}")
    return versions[version - 1]


def version_at(code: str, release: str) -> BehaviourVersion:
    """The version in force at a release: the newest one whose `since` is that release or an earlier one."""
    order = {r.version: i for i, r in enumerate(releases())}
    if release not in order:
        raise KeyError(f"no methodology release {release!r}")
    in_force = [v for v in _behaviour_named(code).versions if order[v.since] <= order[release]]
    if not in_force:
        raise KeyError(f"behaviour {code!r} was not yet in the methodology at release {release!r}")
    return in_force[-1]


def meets_tier(source_tier: str, required: str) -> bool:
    """Whether a source of `source_tier` is trusted enough for a version needing `required`."""
    return TRUST_TIERS.index(source_tier) <= TRUST_TIERS.index(required)


def reduction_mg(version: BehaviourVersion, quantity: int) -> int:
    """floor(quantity × factor_mg / per): one rounding, down, so residents are never credited a part-mg."""
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 0:
        raise ValueError(f"quantity must be a non-negative integer, got {quantity!r}")
    return quantity * version.factor_mg // version.per


def energy_for(version: BehaviourVersion, reduction_mg: int) -> int:
    """floor(reduction_mg × energy_per_kg / 1,000,000); a reversal negates the original result, never recomputes."""
    if not isinstance(reduction_mg, int) or isinstance(reduction_mg, bool) or reduction_mg < 0:
        raise ValueError(f"reduction_mg must be a non-negative integer, got {reduction_mg!r}")
    return reduction_mg * version.energy_per_kg // 1_000_000


# The methodology version stamped on every book entry written now (loading here also validates at start).
CURRENT_RELEASE: str = catalogue().current_release.version
