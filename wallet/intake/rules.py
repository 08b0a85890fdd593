"""The verdict rules, as pure functions over one activity and what the holder's book already holds.

Order matters and is part of the methodology: an activity is first checked on its own (known behaviour,
allowed source, reporting window, plausibility, trust), then against other claims (the same action from
another source, an overlapping trip), and last against caps. The first rule that answers decides, so every
verdict has exactly one reason. Everything here is integer arithmetic.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from wallet.methodology.catalogue import BehaviourVersion

__all__ = [
    "COUNTED", "REPORTED", "TIER_RANK", "Claim", "Context", "Decision", "Judged", "caps", "decide", "other_claims",
]

TIER_RANK = {"self_reported": 0, "device": 1, "verified": 2}
REPORTING_WINDOW = timedelta(days=30)
FUTURE_TOLERANCE = timedelta(minutes=5)
# What blocks a later claim of the same action. Held activities do not: a suspicious copy must not
# stop the real report, and a held one is checked against the claims again when it is reviewed.
COUNTED = ("credited", "partially_credited")
# What a day's plausible total counts: everything not refused.
REPORTED = ("credited", "partially_credited", "held")


@dataclass(frozen=True, slots=True)
class Claim:
    """An activity that already counts for the holder (credited, partly credited, or held for review)."""

    activity_id: uuid.UUID
    sub_account_id: uuid.UUID
    source: tuple[str, str]  # (zh-CN, en) name, for the reason a later claim is refused
    behaviour: str
    occurred_at: datetime
    ended_at: datetime | None
    exclusivity_group: str


@dataclass(slots=True)
class Context:
    """What the holder's book holds around the activities being judged; updated as each one is decided, so
    the first of two claims in one batch wins exactly as if they had come in two requests."""

    claims: list[Claim] = field(default_factory=list)
    used_day: dict[tuple[str, date], int] = field(default_factory=lambda: defaultdict(int))
    used_month: dict[tuple[str, int, int], int] = field(default_factory=lambda: defaultdict(int))
    used_self_day: dict[tuple[str, date], int] = field(default_factory=lambda: defaultdict(int))
    reported_day: dict[tuple[str, date], int] = field(default_factory=lambda: defaultdict(int))


@dataclass(frozen=True, slots=True)
class Judged:
    """The facts of one activity the rules need, already normalised (local day in the holder's zone)."""

    activity_id: uuid.UUID
    sub_account_id: uuid.UUID
    source: tuple[str, str]
    source_tier: str
    self_reported: bool
    allowed_behaviours: frozenset[str] | None
    behaviour: str
    quantity: int
    occurred_at: datetime
    ended_at: datetime | None
    local_day: date
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: str
    code: str
    params: dict[str, Any] = field(default_factory=dict)
    credited_quantity: int = 0
    related_activity: uuid.UUID | None = None


def _source(names: tuple[str, str]) -> dict[str, str]:
    return {"source": names[0], "source_en": names[1]}


def _rule(version: BehaviourVersion, name: str) -> int | None:
    rules = version.plausibility
    value = rules.get(name) if isinstance(rules, dict) or hasattr(rules, "get") else getattr(rules, name, None)
    return int(value) if value is not None else None


def _interval(start: datetime, end: datetime | None) -> tuple[datetime, datetime]:
    return start, end or start


def _overlaps(a: tuple[datetime, datetime], b: tuple[datetime, datetime]) -> bool:
    """Open intervals: touching ends do not overlap, so changing from bus to subway at the same minute is two
    trips. An instant (a trip reported without an end) overlaps a trip it falls strictly inside, or the
    same instant."""
    if a[0] == a[1] and b[0] == b[1]:
        return a[0] == b[0]
    return a[0] < b[1] and b[0] < a[1] if a[0] != a[1] and b[0] != b[1] else (
        b[0] < a[0] < b[1] if a[0] == a[1] else a[0] < b[0] < a[1]
    )


def _static(a: Judged, v: BehaviourVersion | None, now: datetime) -> Decision | None:
    if v is None:
        return Decision("rejected", "unknown-behaviour", {"behaviour": a.behaviour})
    if a.allowed_behaviours is not None and a.behaviour not in a.allowed_behaviours:
        return Decision("rejected", "behaviour-not-allowed", _source(a.source))
    if a.occurred_at > now + FUTURE_TOLERANCE:
        return Decision("rejected", "occurred-in-future")
    if a.occurred_at < now - REPORTING_WINDOW:
        return Decision("rejected", "outside-reporting-window", {"days": REPORTING_WINDOW.days})
    if a.ended_at is not None and a.ended_at < a.occurred_at:
        return Decision("rejected", "invalid-interval")
    if a.self_reported and v.self_report_daily_cap == 0:
        return Decision("rejected", "not-self-reportable")
    max_quantity = _rule(v, "max_quantity")
    if max_quantity is not None and a.quantity > max_quantity:
        return Decision("rejected", "implausible-quantity", {"max": max_quantity})
    if a.ended_at is not None:
        seconds = int((a.ended_at - a.occurred_at).total_seconds())
        low, high = _rule(v, "min_duration_s"), _rule(v, "max_duration_s")
        if (low is not None and seconds < low) or (high is not None and seconds > high):
            return Decision("rejected", "implausible-duration", {"seconds": seconds})
        distance = a.details.get("distance_m")
        if isinstance(distance, int) and not isinstance(distance, bool) and distance >= 0 and seconds > 0:
            # km/h × 1000 without floats: distance_m × 3600 / seconds = metres per hour.
            metres_per_hour = distance * 3600 // seconds
            slow, fast = _rule(v, "min_speed_kmh"), _rule(v, "max_speed_kmh")
            if (slow is not None and metres_per_hour < slow * 1000) or (
                fast is not None and metres_per_hour > fast * 1000
            ):
                return Decision("rejected", "implausible-speed", {"kmh": metres_per_hour // 1000})
    return None


def _trust(a: Judged, v: BehaviourVersion, ctx: Context) -> Decision | None:
    max_per_day = _rule(v, "max_per_day")
    if max_per_day is not None and ctx.reported_day[(a.behaviour, a.local_day)] + a.quantity > max_per_day:
        return Decision("held", "implausible-daily-total", {"max": max_per_day})
    if not a.self_reported and TIER_RANK[a.source_tier] < TIER_RANK[v.trust_tier]:
        return Decision("held", "needs-review-tier", _source(a.source))
    if a.self_reported and a.details.get("photo_ref"):
        return Decision("held", "photo-review")
    return None


def other_claims(a: Judged, v: BehaviourVersion, ctx: Context) -> Decision | None:
    window = timedelta(seconds=v.dedupe_window_s)
    mine = _interval(a.occurred_at, a.ended_at)
    for c in ctx.claims:
        if (
            v.dedupe_window_s
            and c.behaviour == a.behaviour
            and c.sub_account_id != a.sub_account_id
            and abs(c.occurred_at - a.occurred_at) <= window
        ):
            return Decision("duplicate", "already-counted", {**_source(c.source), "at": c.occurred_at.isoformat()},
                            related_activity=c.activity_id)
        if (
            v.exclusivity_group
            and c.exclusivity_group == v.exclusivity_group
            and _overlaps(mine, _interval(c.occurred_at, c.ended_at))
        ):
            return Decision("duplicate", "overlapping-trip",
                            {**_source(c.source), "behaviour": c.behaviour, "at": c.occurred_at.isoformat()},
                            related_activity=c.activity_id)
    return None


def caps(a: Judged, v: BehaviourVersion, ctx: Context) -> Decision:
    day_key = (a.behaviour, a.local_day)
    room = a.quantity
    limiting = ""
    checks = [
        ("daily-cap", v.daily_cap, ctx.used_day[day_key]),
        ("monthly-cap", v.monthly_cap, ctx.used_month[(a.behaviour, a.local_day.year, a.local_day.month)]),
    ]
    if a.self_reported:
        checks.append(("self-report-cap", v.self_report_daily_cap, ctx.used_self_day[day_key]))
    for name, cap, used in checks:
        if cap and cap - used < room:
            room, limiting = max(0, cap - used), name
    if room == a.quantity:
        return Decision("credited", "credited", credited_quantity=room)
    cap_value = dict((n, c) for n, c, _ in checks)[limiting]
    if room == 0:
        return Decision("rejected", f"{limiting}-reached", {"cap": cap_value})
    return Decision("partially_credited", f"{limiting}-partial", {"cap": cap_value, "credited": room},
                    credited_quantity=room)


def decide(a: Judged, v: BehaviourVersion | None, ctx: Context, now: datetime) -> Decision:
    """One verdict, and the context updated with its effect."""
    decision = _static(a, v, now)
    if decision is None:
        assert v is not None
        # A copy of something already counted is a duplicate whoever sent it, before any question of trust.
        decision = other_claims(a, v, ctx) or _trust(a, v, ctx) or caps(a, v, ctx)
    if v is not None and decision.verdict in COUNTED:
        ctx.claims.append(Claim(a.activity_id, a.sub_account_id, a.source, a.behaviour, a.occurred_at,
                                a.ended_at, v.exclusivity_group))
    if decision.verdict in REPORTED:
        ctx.reported_day[(a.behaviour, a.local_day)] += a.quantity
    if decision.credited_quantity:
        ctx.used_day[(a.behaviour, a.local_day)] += decision.credited_quantity
        ctx.used_month[(a.behaviour, a.local_day.year, a.local_day.month)] += decision.credited_quantity
        if a.self_reported:
            ctx.used_self_day[(a.behaviour, a.local_day)] += decision.credited_quantity
    return decision
