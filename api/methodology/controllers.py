"""Public, read-only: the versioned methodology partners report against and residents can check their book by."""

from __future__ import annotations

from datetime import date
from typing import Literal, cast, get_args

import msgspec
from litestar import Controller, get
from litestar.datastructures import CacheControlHeader
from litestar.params import FromPath, FromQuery

from api.problems import problem_responses
from wallet.errors import DomainError
from wallet.methodology.catalogue import (
    CATEGORIES,
    CURRENT_RELEASE,
    Behaviour,
    BehaviourVersion,
    Release,
    TrustTier,
    behaviours,
    releases,
)

__all__ = [
    "BehaviourDetail", "BehaviourList", "BehaviourOut", "Changelog", "MethodologyController", "PlausibilityOut",
    "ReleaseOut", "VersionOut",
]

Category = Literal["clothing", "food", "housing", "transport", "consumption", "office", "digital_finance"]
assert get_args(Category) == CATEGORIES, "the OpenAPI enum must list the catalogue's categories in order"
PUBLIC_5_MIN = CacheControlHeader(max_age=300, public=True)


class PlausibilityOut(msgspec.Struct, kw_only=True):
    """Bounds beyond which a report is refused or held; null where a bound does not apply."""

    max_quantity: int | None = None
    min_duration_s: int | None = None
    max_duration_s: int | None = None
    min_speed_kmh: int | None = None
    max_speed_kmh: int | None = None
    max_per_day: int | None = None


class VersionOut(msgspec.Struct, kw_only=True):
    """One immutable version of a behaviour's quantification: reduction_mg = floor(quantity × factor_mg / per),
    energy = floor(reduction_mg × energy_per_kg / 1,000,000)."""

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
    plausibility: PlausibilityOut
    exclusivity_group: str
    dedupe_window_s: int
    energy_per_kg: int


class BehaviourOut(msgspec.Struct, kw_only=True):
    code: str
    category: Category
    unit: str
    name_zh: str
    name_en: str
    description_zh: str
    description_en: str
    current: VersionOut


class BehaviourDetail(BehaviourOut, kw_only=True):
    versions: list[VersionOut]


class BehaviourList(msgspec.Struct, kw_only=True):
    methodology_version: str
    categories: list[Category]
    items: list[BehaviourOut]


class ReleaseOut(msgspec.Struct, kw_only=True):
    version: str
    date: date
    summary_zh: str
    summary_en: str
    changes: list[str]
    behaviours: list[str]  # codes that got a new version in this release


class Changelog(msgspec.Struct, kw_only=True):
    current: str
    releases: list[ReleaseOut]


def _version_out(v: BehaviourVersion) -> VersionOut:
    p = v.plausibility
    return VersionOut(
        version=v.version, since=v.since, factor_mg=v.factor_mg, per=v.per, method=v.method, source=v.source,
        source_date=v.source_date, conservative_note=v.conservative_note, trust_tier=v.trust_tier,
        daily_cap=v.daily_cap, monthly_cap=v.monthly_cap, self_report_daily_cap=v.self_report_daily_cap,
        plausibility=PlausibilityOut(
            max_quantity=p.max_quantity, min_duration_s=p.min_duration_s, max_duration_s=p.max_duration_s,
            min_speed_kmh=p.min_speed_kmh, max_speed_kmh=p.max_speed_kmh, max_per_day=p.max_per_day,
        ),
        exclusivity_group=v.exclusivity_group, dedupe_window_s=v.dedupe_window_s, energy_per_kg=v.energy_per_kg,
    )


def _behaviour_out(b: Behaviour) -> BehaviourOut:
    return BehaviourOut(
        code=b.code, category=cast(Category, b.category), unit=b.unit, name_zh=b.name_zh, name_en=b.name_en,
        description_zh=b.description_zh, description_en=b.description_en, current=_version_out(b.current),
    )


def _release_out(r: Release) -> ReleaseOut:
    changed = [b.code for b in behaviours().values() if any(v.since == r.version for v in b.versions)]
    return ReleaseOut(version=r.version, date=r.date, summary_zh=r.summary_zh, summary_en=r.summary_en,
                      changes=list(r.changes), behaviours=changed)


class MethodologyController(Controller):
    path = "/v1/methodology"
    tags = ["methodology"]
    opt = {"exclude_from_auth": True}

    @get("/behaviours", operation_id="listBehaviours", summary="The behaviour catalogue",
         cache_control=PUBLIC_5_MIN, responses=problem_responses(400))
    async def list_behaviours(self, category: FromQuery[Category | None] = None) -> BehaviourList:
        """Every behaviour code a partner may be allowed to report, by category (the 7 categories of the ACEF
        guideline), with its unit, names and descriptions in Chinese and English, and the version in force now:
        factor in mg CO2e per unit with method and source, the trust tier it needs, caps, plausibility rules,
        exclusivity group, dedupe window and energy conversion."""
        items = [_behaviour_out(b) for b in behaviours().values() if category is None or b.category == category]
        return BehaviourList(methodology_version=CURRENT_RELEASE, categories=list(get_args(Category)), items=items)

    @get("/behaviours/{code:str}", operation_id="getBehaviour", summary="One behaviour with all its versions",
         cache_control=PUBLIC_5_MIN, responses=problem_responses(404))
    async def get_behaviour(self, code: FromPath[str]) -> BehaviourDetail:
        """One behaviour by its code: the version in force now and every version it ever had, oldest first.
        A book entry names the version it was computed with, so any entry can be recomputed from here."""
        found = behaviours().get(code)
        if found is None:
            raise DomainError("not_found", "behaviour-not-found", f"No behaviour has the code {code!r}.")
        summary = msgspec.structs.asdict(_behaviour_out(found))
        return BehaviourDetail(**summary, versions=[_version_out(v) for v in found.versions])

    @get("/changelog", operation_id="getMethodologyChangelog", summary="The methodology changelog",
         cache_control=PUBLIC_5_MIN)
    async def get_changelog(self) -> Changelog:
        """Every methodology release, newest first: its date, a summary in Chinese and English, what changed,
        and the behaviours that got a new version. The newest release is the methodology in force."""
        return Changelog(current=CURRENT_RELEASE, releases=[_release_out(r) for r in reversed(releases())])
