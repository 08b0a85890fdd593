"""My progress: level, daily green streak and badges."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, Request, get
from litestar.datastructures import State

from api.auth.middleware import Principal
from api.problems import problem_responses
from api.security import BEARER
from gamification.progress.service import progress

__all__ = ["ProgressController"]

Req = Request[Principal, Any, State]


class LevelOut(msgspec.Struct, kw_only=True):
    number: int
    name: dict[str, str]
    grams: int  # where it starts


class StreakOut(msgspec.Struct, kw_only=True):
    """Counted days in a row with a credited action (my local calendar). A missed day uses a saved freeze
    (one earned per 7 counted days, at most 2 saved). `at_risk`: alive, but nothing credited today yet."""

    current: int
    longest: int
    freezes: int
    counted_today: bool
    at_risk: bool


class BadgeOut(msgspec.Struct, kw_only=True):
    code: str
    name: dict[str, str]
    description: dict[str, str]
    kind: str
    target: int
    value: int  # progress, capped at target
    earned_at: datetime | None


class ProgressOut(msgspec.Struct, kw_only=True):
    grams: int  # settled, credited reductions in all (whole grams)
    level: LevelOut
    next_level: LevelOut | None
    streak: StreakOut
    badges: list[BadgeOut]


def _level(lv: Any) -> LevelOut | None:
    return None if lv is None else LevelOut(number=lv.number, name={"zh-CN": lv.name_zh, "en": lv.name_en},
                                            grams=lv.grams)


class ProgressController(Controller):
    path = "/v1/me/progress"
    tags = ["progress"]
    security = BEARER

    @get("", operation_id="getMyProgress", summary="My level, streak and badges",
         responses=problem_responses(401, 503))
    async def progress(self, request: Req) -> ProgressOut:
        """Computed from my book, redemptions and donations as they stand; badges are awarded once, the
        moment their facts are reached (also by the worker, seconds after a new entry)."""
        p = await progress(request.user.holder_id)
        s = p["streak"]
        return ProgressOut(
            grams=p["grams"], level=_level(p["level"]), next_level=_level(p["next_level"]),  # type: ignore[arg-type]
            streak=StreakOut(current=s.current, longest=s.longest, freezes=s.freezes, counted_today=s.counted_today,
                             at_risk=s.at_risk),
            badges=[BadgeOut(code=b["badge"].code, name={"zh-CN": b["badge"].name_zh, "en": b["badge"].name_en},
                             description={"zh-CN": b["badge"].description_zh, "en": b["badge"].description_en},
                             kind=b["badge"].kind, target=b["badge"].target, value=b["value"],
                             earned_at=b["earned_at"]) for b in p["badges"]],
        )
