"""The public methodology API: the catalogue with the version in force, one behaviour with its history, and
the changelog, readable without a token and cacheable."""

from __future__ import annotations

import httpx

from tests.support import assert_problem
from wallet.methodology.catalogue import CURRENT_RELEASE, behaviours, releases

VERSION_FIELDS = {
    "version", "since", "factor_mg", "per", "method", "source", "source_date", "conservative_note", "trust_tier",
    "daily_cap", "monthly_cap", "self_report_daily_cap", "plausibility", "exclusivity_group", "dedupe_window_s",
    "energy_per_kg",
}


def test_the_catalogue_lists_the_version_in_force(client: httpx.Client) -> None:
    response = client.get("/v1/methodology/behaviours")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "max-age=300, public"
    body = response.json()
    assert body["methodology_version"] == CURRENT_RELEASE == "2026.2"
    assert len(body["categories"]) == 7 and len(body["items"]) == len(behaviours()) >= 40
    walking = next(b for b in body["items"] if b["code"] == "walking_steps")
    assert walking["unit"] == "step" and walking["name_zh"] == "步行" and walking["description_zh"]
    assert set(walking["current"]) == VERSION_FIELDS
    assert walking["current"]["version"] == 2 and walking["current"]["factor_mg"] == 16_400
    assert walking["current"]["plausibility"]["max_per_day"] == 50_000
    assert walking["current"]["plausibility"]["max_speed_kmh"] is None
    food = client.get("/v1/methodology/behaviours", params={"category": "food"}).json()["items"]
    assert food and {b["category"] for b in food} == {"food"}


def test_one_behaviour_comes_with_every_version(client: httpx.Client) -> None:
    response = client.get("/v1/methodology/behaviours/shared_bike_ride")
    assert response.status_code == 200 and "public" in response.headers["cache-control"]
    body = response.json()
    assert body["code"] == "shared_bike_ride" and body["category"] == "transport" and body["unit"] == "trip"
    assert [(v["version"], v["since"], v["factor_mg"]) for v in body["versions"]] == [
        (1, "2026.1", 60_000), (2, "2026.2", 52_000),
    ]
    assert body["current"] == body["versions"][-1]
    assert body["current"]["exclusivity_group"] == "transport" and body["current"]["source"]
    one = client.get("/v1/methodology/behaviours/no_disposable_cutlery").json()
    assert one["unit"] == "order" and len(one["versions"]) == 1


def test_the_changelog_is_newest_first(client: httpx.Client) -> None:
    response = client.get("/v1/methodology/changelog")
    assert response.status_code == 200 and "public" in response.headers["cache-control"]
    body = response.json()
    assert body["current"] == CURRENT_RELEASE
    assert [r["version"] for r in body["releases"]] == [r.version for r in reversed(releases())] == ["2026.2", "2026.1"]
    newest, first = body["releases"]
    assert newest["date"] == "2026-11-20" and newest["summary_zh"] and newest["summary_en"] and newest["changes"]
    assert sorted(newest["behaviours"]) == ["shared_bike_ride", "walking_steps"]
    assert len(first["behaviours"]) == len(behaviours())


def test_unknown_code_and_category_are_problems(client: httpx.Client) -> None:
    assert_problem(client.get("/v1/methodology/behaviours/teleportation"), 404, "behaviour-not-found")
    assert_problem(client.get("/v1/methodology/behaviours", params={"category": "space"}), 400)
