"""The behaviour catalogue: the shipped file is complete and valid, and a broken file is refused with a
message naming the offending entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from wallet.methodology.catalogue import (
    CATEGORIES,
    Behaviour,
    behaviour_codes,
    behaviours,
    load_behaviours,
    unknown_behaviours,
)

REQUIRED_CODES = {
    "shared_bike_ride",
    "walking_steps",
    "bus_trip",
    "subway_trip",
    "ev_trip",
    "carpool_trip",
    "no_disposable_cutlery",
    "clean_plate",
    "parcel_box_reuse",
    "clothes_recycling",
    "second_hand_sale",
    "second_hand_purchase",
    "paperless_bill",
    "e_receipt",
    "online_meeting",
    "home_electricity_saved",
    "green_appliance_purchase",
    "freight_empty_mile_reduction",
}


def _entry(code: str, category: str = "transport") -> str:
    return f"""
[[behaviour]]
code = "{code}"
category = "{category}"
unit = "trip"
name_zh = "测试"
name_en = "Test"
description_en = "A test behaviour."
"""


def _write(tmp_path: Path, *entries: str) -> Path:
    """A catalogue with one valid behaviour per category plus the given entries."""
    base = [_entry(f"base_{category}", category) for category in CATEGORIES]
    path = tmp_path / "behaviours.toml"
    path.write_text("".join(base + list(entries)), encoding="utf-8")
    return path


def test_shipped_catalogue_loads_and_covers_every_category() -> None:
    catalogue = load_behaviours()
    assert len(catalogue) >= 40
    assert {b.category for b in catalogue.values()} == set(CATEGORIES)
    assert len(CATEGORIES) == 7
    assert all(isinstance(b, Behaviour) and b.code == code for code, b in catalogue.items())


def test_shipped_catalogue_has_the_required_codes() -> None:
    assert REQUIRED_CODES <= behaviour_codes()
    assert behaviours()["walking_steps"].unit == "step"
    assert behaviours()["clothes_recycling"].category == "clothing"


def test_cached_catalogue_is_read_only() -> None:
    with pytest.raises(TypeError):
        behaviours()["new_code"] = behaviours()["bus_trip"]  # type: ignore[index]


def test_unknown_behaviours_are_sorted_and_deduplicated() -> None:
    assert unknown_behaviours(["bus_trip", "zz_made_up", "aa_made_up", "zz_made_up"]) == ["aa_made_up", "zz_made_up"]
    assert unknown_behaviours(REQUIRED_CODES) == []


def test_valid_temporary_catalogue_loads(tmp_path: Path) -> None:
    catalogue = load_behaviours(_write(tmp_path, _entry("bike_trip")))
    assert len(catalogue) == len(CATEGORIES) + 1


def test_duplicate_code_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, _entry("bike_trip"), _entry("bike_trip"))
    with pytest.raises(ValueError, match=r"'bike_trip'.*duplicate code"):
        load_behaviours(path)


def test_unknown_category_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, _entry("bike_trip", "leisure"))
    with pytest.raises(ValueError, match=r"'bike_trip'.*unknown category 'leisure'"):
        load_behaviours(path)


def test_non_snake_case_code_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'Bike-Trip'.*snake_case"):
        load_behaviours(_write(tmp_path, _entry("Bike-Trip")))


def test_empty_name_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, _entry("bike_trip").replace('name_en = "Test"', 'name_en = " "'))
    with pytest.raises(ValueError, match=r"'bike_trip'.*name_en must be a non-empty string"):
        load_behaviours(path)


def test_category_without_behaviours_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "behaviours.toml"
    path.write_text(_entry("bike_trip"), encoding="utf-8")
    with pytest.raises(ValueError, match="no behaviour in category clothing"):
        load_behaviours(path)
