"""The behaviour catalogue: the one list of green actions partners may be allowed to report.

Kept as a reviewed data file rather than database rows so that every change to what counts as a
green action goes through code review and is visible in history.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType

__all__ = [
    "CATALOGUE_PATH",
    "CATEGORIES",
    "Behaviour",
    "behaviour_codes",
    "behaviours",
    "load_behaviours",
    "unknown_behaviours",
]

CATALOGUE_PATH = Path(__file__).with_name("behaviours.toml")

# The seven categories of the ACEF group standard (2022), in its order.
CATEGORIES: tuple[str, ...] = ("clothing", "food", "housing", "transport", "consumption", "office", "digital_finance")

_FIELDS = ("code", "category", "unit", "name_zh", "name_en", "description_en")
_SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")


@dataclass(frozen=True, slots=True)
class Behaviour:
    """A kind of green action; frozen because codes are referenced by partners and book entries forever."""

    code: str
    category: str
    unit: str
    name_zh: str
    name_en: str
    description_en: str


def _parse_entry(index: int, raw: object) -> Behaviour:
    where = f"behaviour #{index + 1}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a table, got {type(raw).__name__}")
    if isinstance(raw.get("code"), str):
        where = f"{where} ({raw['code']!r})"
    missing = [field for field in _FIELDS if field not in raw]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    # Unknown keys are rejected so a misspelt field fails loudly instead of being silently ignored.
    extra = sorted(set(raw) - set(_FIELDS))
    if extra:
        raise ValueError(f"{where}: unknown field(s) {', '.join(extra)}")
    for field in _FIELDS:
        value = raw[field]
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: {field} must be a non-empty string")
    if not _SNAKE_CASE.fullmatch(raw["code"]):
        raise ValueError(f"{where}: code must be snake_case")
    if raw["category"] not in CATEGORIES:
        raise ValueError(f"{where}: unknown category {raw['category']!r}; expected one of {', '.join(CATEGORIES)}")
    if not _SNAKE_CASE.fullmatch(raw["unit"]):
        raise ValueError(f"{where}: unit must be a lower-case identifier such as 'trip' or 'kwh'")
    return Behaviour(**{field: raw[field].strip() for field in _FIELDS})


def load_behaviours(path: Path = CATALOGUE_PATH) -> dict[str, Behaviour]:
    """Read and validate a catalogue file; any defect is fatal because a wrong catalogue miscredits residents."""
    with path.open("rb") as file:
        document = tomllib.load(file)
    entries = document.get("behaviour")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected at least one [[behaviour]] table")
    catalogue: dict[str, Behaviour] = {}
    for index, raw in enumerate(entries):
        behaviour = _parse_entry(index, raw)
        if behaviour.code in catalogue:
            raise ValueError(f"behaviour #{index + 1} ({behaviour.code!r}): duplicate code")
        catalogue[behaviour.code] = behaviour
    empty = [category for category in CATEGORIES if all(b.category != category for b in catalogue.values())]
    if empty:
        raise ValueError(f"{path}: no behaviour in category {', '.join(empty)}")
    return catalogue


@cache
def behaviours() -> Mapping[str, Behaviour]:
    """The shipped catalogue, read once per process; read-only so no caller can alter it for the others."""
    return MappingProxyType(load_behaviours())


@cache
def behaviour_codes() -> frozenset[str]:
    """The shipped codes, for cheap membership checks when partners are configured or report actions."""
    return frozenset(behaviours())


def unknown_behaviours(codes: Iterable[str]) -> list[str]:
    """Codes not in the catalogue, sorted and deduplicated so error messages are stable."""
    known = behaviour_codes()
    return sorted({code for code in codes if code not in known})
