"""The methodology catalogue: the shipped file is complete, sourced and versioned; a broken file is refused
with a message naming the offending entry; reductions and energy are integer arithmetic rounded down once."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from wallet.methodology.catalogue import (
    CATEGORIES,
    CURRENT_RELEASE,
    TRUST_TIERS,
    BehaviourVersion,
    Plausibility,
    behaviour_codes,
    behaviours,
    current_version,
    energy_for,
    load_catalogue,
    meets_tier,
    reduction_mg,
    releases,
    unknown_behaviours,
    version_at,
    version_of,
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


# --- the shipped catalogue ---


def test_shipped_catalogue_loads_and_covers_every_category() -> None:
    catalogue = load_catalogue()
    assert len(catalogue.behaviours) >= 40
    assert len(CATEGORIES) == 7
    assert {b.category for b in catalogue.behaviours.values()} == set(CATEGORIES)
    assert all(b.code == code for code, b in catalogue.behaviours.items())


def test_shipped_catalogue_has_the_required_codes() -> None:
    assert REQUIRED_CODES <= behaviour_codes()
    assert behaviours()["walking_steps"].unit == "step"
    assert behaviours()["clothes_recycling"].unit == "g"
    assert behaviours()["clothes_recycling"].category == "clothing"


def test_every_version_is_sourced_explained_and_capped() -> None:
    known_releases = {r.version for r in releases()}
    for b in behaviours().values():
        assert b.name_zh and b.name_en and b.description_zh and b.description_en
        for n, v in enumerate(b.versions, 1):
            assert v.code == b.code and v.version == n and v.since in known_releases
            assert v.method and v.source and v.source_date, b.code
            assert v.trust_tier in TRUST_TIERS, b.code
            assert v.per >= 1 and v.factor_mg > 0 and v.energy_per_kg > 0, b.code
            # Nothing a cheater could inflate is left uncapped.
            assert v.daily_cap > 0 and v.monthly_cap >= v.daily_cap, b.code
            assert v.self_report_daily_cap <= v.daily_cap, b.code
            assert v.source.startswith("derived") or "derived" not in v.method.lower()[:8], b.code


def test_units_keep_quantities_whole() -> None:
    for b in behaviours().values():
        for v in b.versions:
            if b.unit in {"m", "step", "wh", "l"}:
                assert v.per == 1000, b.code  # a km, 1,000 steps, a kWh, a m³
            if b.unit == "m" and b.category == "transport" and b.code != "freight_empty_mile_reduction":
                assert v.plausibility.max_speed_kmh is not None, b.code


def test_transport_modes_that_take_time_are_exclusive_and_steps_are_not() -> None:
    modes = {"shared_bike_ride", "private_bike_ride", "bus_trip", "subway_trip", "rail_trip", "ev_trip", "carpool_trip"}
    for code in modes:
        assert current_version(code).exclusivity_group == "transport", code
    assert current_version("walking_steps").exclusivity_group == ""
    assert current_version("walking_steps").plausibility.max_per_day == 50_000
    assert current_version("freight_empty_mile_reduction").self_report_daily_cap == 0
    assert current_version("parcel_box_reuse").energy_per_kg == 1352


def test_releases_are_oldest_first_and_the_last_is_current() -> None:
    found = releases()
    assert [r.version for r in found] == ["2026.1", "2026.2"]
    assert found[0].date == date(2026, 11, 1) and found[1].date == date(2026, 11, 20)
    assert CURRENT_RELEASE == found[-1].version
    assert all(r.changes and r.summary_zh and r.summary_en for r in found)


def test_a_new_version_leaves_the_old_one_in_force_for_its_release() -> None:
    walk_v1, walk_v2 = version_of("walking_steps", 1), version_of("walking_steps", 2)
    assert (walk_v1.factor_mg, walk_v1.since) == (20_000, "2026.1")
    assert (walk_v2.factor_mg, walk_v2.since) == (16_400, "2026.2")
    assert current_version("walking_steps") == walk_v2
    assert version_at("walking_steps", "2026.1") == walk_v1
    assert version_at("walking_steps", "2026.2") == walk_v2
    assert version_at("shared_bike_ride", "2026.1").factor_mg == 60_000
    assert current_version("shared_bike_ride").factor_mg == 52_000
    # A behaviour untouched in 2026.2 is still its first version then.
    assert version_at("bus_trip", "2026.2") == version_of("bus_trip", 1) == current_version("bus_trip")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: current_version("teleportation"), "teleportation"),
        (lambda: version_of("walking_steps", 3), "no version 3"),
        (lambda: version_of("walking_steps", 0), "no version 0"),
        (lambda: version_at("walking_steps", "1999.1"), "no methodology release"),
    ],
)
def test_unknown_versions_are_lookup_errors(call: Callable[[], object], message: str) -> None:
    with pytest.raises(KeyError, match=message):
        call()


def test_cached_catalogue_is_read_only() -> None:
    with pytest.raises(TypeError):
        behaviours()["new_code"] = behaviours()["bus_trip"]  # type: ignore[index]


def test_unknown_behaviours_are_sorted_and_deduplicated() -> None:
    assert unknown_behaviours(["bus_trip", "zz_made_up", "aa_made_up", "zz_made_up"]) == ["aa_made_up", "zz_made_up"]
    assert unknown_behaviours(REQUIRED_CODES) == []


def test_trust_tiers_are_ordered() -> None:
    assert meets_tier("verified", "device") and meets_tier("device", "device")
    assert not meets_tier("self_reported", "device") and not meets_tier("device", "verified")


# --- integer arithmetic ---


def _version(factor_mg: int, per: int, energy_per_kg: int = 1000) -> BehaviourVersion:
    return BehaviourVersion(
        code="x", version=1, since="2026.1", factor_mg=factor_mg, per=per, method="m", source="s", source_date="2026",
        conservative_note="", trust_tier="verified", daily_cap=1, monthly_cap=1, self_report_daily_cap=0,
        plausibility=Plausibility(), exclusivity_group="", dedupe_window_s=0, energy_per_kg=energy_per_kg,
    )


def test_reduction_is_floor_of_quantity_times_factor_over_per() -> None:
    steps = current_version("walking_steps")  # 16,400 mg per 1,000 steps
    assert reduction_mg(steps, 1_999) == 32_783  # 32,783.6 rounded down
    assert reduction_mg(steps, 1_000) == 16_400
    assert reduction_mg(steps, 0) == 0
    assert reduction_mg(current_version("ev_trip"), 1_500) == 168_000
    assert reduction_mg(_version(1, 3), 2) == 0  # 0.67 mg is not credited
    assert reduction_mg(_version(10**6, 1), 10**12) == 10**18  # exact at any size: Python ints, no floats
    assert isinstance(reduction_mg(steps, 7), int)


@pytest.mark.parametrize("quantity", [-1, 1.5, True, "3"])
def test_reduction_refuses_anything_but_a_non_negative_int(quantity: Any) -> None:
    with pytest.raises(ValueError, match="quantity"):
        reduction_mg(current_version("bus_trip"), quantity)


def test_energy_is_floor_of_mg_times_energy_per_kg_over_a_million() -> None:
    box = current_version("parcel_box_reuse")
    assert energy_for(box, reduction_mg(box, 1)) == 50  # Cainiao: 37 g → 50 energy
    assert energy_for(box, reduction_mg(box, 37)) == 37 * 50
    assert energy_for(_version(37_000, 1, 1351), 37_000) == 49  # why the catalogue says 1352, not 1351
    ant = current_version("no_disposable_cutlery")
    assert energy_for(ant, 15_943) == 15  # Ant Forest: 1 g = 1 energy, part grams dropped
    assert energy_for(ant, 999) == 0
    with pytest.raises(ValueError, match="reduction_mg"):
        energy_for(ant, -1)
    with pytest.raises(ValueError, match="reduction_mg"):
        energy_for(ant, 1.0)  # type: ignore[arg-type]


# --- validation of a catalogue file ---


def _behaviour(code: str, category: str = "transport") -> dict[str, Any]:
    return {
        "code": code, "category": category, "unit": "trip", "name_zh": "测试", "name_en": "Test",
        "description_zh": "测试行为。", "description_en": "A test behaviour.",
        "version": [{
            "version": 1, "since": "2026.1", "factor_mg": 52_000, "per": 1, "method": "Baseline minus project.",
            "source": "A test source", "source_date": "2026", "conservative_note": "", "trust_tier": "verified",
            "daily_cap": 10, "monthly_cap": 200, "self_report_daily_cap": 0,
            "plausibility": {"max_quantity": 1, "min_speed_kmh": 3, "max_speed_kmh": 30},
            "exclusivity_group": "transport", "dedupe_window_s": 300, "energy_per_kg": 1000,
        }],
    }


def _document() -> dict[str, Any]:
    """A valid catalogue: two releases, one behaviour per category, filled up to the minimum of 40."""
    release = {"version": "2026.1", "date": date(2026, 11, 1), "summary_zh": "首版", "summary_en": "First",
               "changes": ["Initial."]}
    later = {**release, "version": "2026.2", "date": date(2026, 11, 20), "changes": ["A revision."]}
    entries = [_behaviour(f"base_{c}", c) for c in CATEGORIES]
    entries += [_behaviour(f"filler_{i}") for i in range(40 - len(entries))]
    return {"release": [release, later], "behaviour": entries}


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"


def _write(tmp_path: Path, mutate: Callable[[dict[str, Any]], object] | None = None) -> Path:
    document = copy.deepcopy(_document())
    if mutate is not None:
        mutate(document)
    lines: list[str] = []
    for release in document.get("release", []):
        lines += ["[[release]]", *(f"{k} = {_value(v)}" for k, v in release.items())]
    for entry in document.get("behaviour", []):
        lines += ["[[behaviour]]", *(f"{k} = {_value(v)}" for k, v in entry.items() if k != "version")]
        for version in entry.get("version", []):
            lines += ["[[behaviour.version]]", *(f"{k} = {_value(v)}" for k, v in version.items())]
    path = tmp_path / "catalogue.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _first(document: dict[str, Any]) -> dict[str, Any]:
    """The first version of the first filler behaviour, 'filler_0'."""
    return document["behaviour"][len(CATEGORIES)]["version"][0]


def _second_version(document: dict[str, Any], **changes: Any) -> None:
    entry = document["behaviour"][len(CATEGORIES)]
    entry["version"].append({**entry["version"][0], "version": 2, "since": "2026.2", "factor_mg": 46_000, **changes})


def test_valid_temporary_catalogue_loads(tmp_path: Path) -> None:
    catalogue = load_catalogue(_write(tmp_path, lambda d: _second_version(d)))
    assert len(catalogue.behaviours) == 40
    assert catalogue.current_release.version == "2026.2"
    filler = catalogue.behaviours["filler_0"]
    assert [v.factor_mg for v in filler.versions] == [52_000, 46_000] and filler.current.version == 2
    assert filler.current.plausibility == Plausibility(max_quantity=1, min_speed_kmh=3, max_speed_kmh=30)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: _first(d).__setitem__(key, value)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set("factor_mg", "52000"), r"'filler_0' version #1: factor_mg must be an integer, got str"),
        (_set("factor_mg", 52.0), r"floats are not allowed"),
        (_set("per", True), r"'filler_0' version #1: per must be an integer, got bool"),
        (_set("per", 0), r"'filler_0' version #1: per must be between 1"),
        (_set("factor_mg", -1), r"factor_mg must be between 0"),
        (_set("daily_cap", -5), r"'filler_0' version #1: daily_cap must be between 0"),
        (_set("monthly_cap", 5), r"monthly_cap is below daily_cap"),
        (_set("self_report_daily_cap", 11), r"self_report_daily_cap is above daily_cap"),
        (_set("trust_tier", "trusted"), r"'filler_0' version #1: unknown trust_tier 'trusted'"),
        (_set("since", "2025.9"), r"'filler_0' version #1: since '2025.9' names no \[\[release\]\]"),
        (_set("version", 2), r"'filler_0' version #1: versions must be numbered"),
        (_set("source", " "), r"'filler_0' version #1: source must be a non-empty string"),
        (_set("method", ""), r"method must be a non-empty string"),
        (_set("exclusivity_group", "Transport Modes"), r"exclusivity_group must be snake_case"),
        (_set("factr_mg", 1), r"'filler_0' version #1: unknown field\(s\) factr_mg"),
        (lambda d: _first(d).pop("source"), r"'filler_0' version #1: missing source"),
        (_set("plausibility", {"max_speed_kmh": 25.5}), r"floats are not allowed \(25.5\)"),
        (_set("plausibility", {"top_speed": 30}), r"unknown field\(s\) top_speed"),
        (_set("plausibility", {"max_quantity": 0}), r"max_quantity must be between 1"),
        (_set("plausibility", {"min_speed_kmh": 40, "max_speed_kmh": 30}), r"min_speed_kmh is above max_speed_kmh"),
        (_set("plausibility", {"max_per_day": 5}), r"max_per_day is below daily_cap"),
        (lambda d: _second_version(d, version=3), r"'filler_0' version #2: versions must be numbered 1, 2"),
        (lambda d: _second_version(d, since="2027.1"), r"since '2027.1' names no \[\[release\]\]"),
        (lambda d: (_first(d).__setitem__("since", "2026.2"), _second_version(d, since="2026.1")),
         r"version 2 since '2026.1' is earlier than version 1 since '2026.2'"),
        (lambda d: d["behaviour"][len(CATEGORIES)].__setitem__("version", []), r"'filler_0'\): missing version"),
        (lambda d: d["release"][1].__setitem__("date", date(2026, 10, 1)), r"oldest first"),
        (lambda d: d["release"][1].__setitem__("version", "2026.1"), r"two releases share a version"),
        (lambda d: d["release"][0].__setitem__("version", "v1"), r"version must look like 2026.1"),
        (lambda d: d["release"][0].__setitem__("changes", []), r"changes must be a non-empty list"),
        (lambda d: d["release"][0].__setitem__("summary_en", 1.5), r"floats are not allowed"),
        (lambda d: d.__setitem__("release", []), r"catalogue.toml: missing release"),
        (lambda d: d["behaviour"].append(_behaviour("filler_0")), r"'filler_0'\): duplicate code"),
        (lambda d: d["behaviour"].append(_behaviour("space_trip", "leisure")), r"unknown category 'leisure'"),
        (lambda d: d["behaviour"].append(_behaviour("Bike-Trip")), r"'Bike-Trip'\): code must be snake_case"),
        (lambda d: d["behaviour"][-1].__setitem__("unit", "km"), r"unknown unit 'km'"),
        (lambda d: d["behaviour"][-1].__setitem__("name_en", " "), r"name_en must be a non-empty string"),
        (lambda d: d["behaviour"][-1].pop("description_zh"), r"missing description_zh"),
        (lambda d: d["behaviour"].pop(), r"39 behaviours; the methodology needs at least 40"),
        (lambda d: d["behaviour"].pop(0), r"no behaviour in category clothing"),
    ],
)
def test_a_broken_catalogue_is_refused_naming_the_entry(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], object], message: str
) -> None:
    path = _write(tmp_path, mutate)
    with pytest.raises(ValueError, match=message):
        load_catalogue(path)


def test_a_float_is_refused_wherever_it_is(tmp_path: Path) -> None:
    path = _write(tmp_path, _set("energy_per_kg", 1000.0))
    with pytest.raises(ValueError, match=r"behaviour 'filler_0'.*energy_per_kg: floats are not allowed"):
        load_catalogue(path)
    text = path.read_text(encoding="utf-8").replace("energy_per_kg = 1000.0", "energy_per_kg = 1000")
    path.write_text(text + "\n[extra]\nratio = 0.5\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"extra\.ratio: floats are not allowed"):
        load_catalogue(path)
