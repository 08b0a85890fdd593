"""What a leaderboard is: a scope (who competes), a period (when it counts), and the Redis keys and score
encoding that make "top N, my rank, my neighbours" a handful of O(log N) operations.

Scores rank whole grams of settled, credited reductions (credits minus reversals). Ties go to whoever reached
the score first: a sorted-set score is `grams × 2^23 + (2^23 − 1 − tick)`, where `tick` is when the last
entry counted was recorded (seconds since the period began; minutes since 2026 for all time). Both parts are
exact in a double up to 2^29 g (536 t) per resident and period, which no resident reaches; beyond it the
score saturates. PostgreSQL stays the truth: every board can be rebuilt from the book (`rebuild`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Literal
from zoneinfo import ZoneInfo

__all__ = [
    "GROUP_SCOPES",
    "HOLDER_SCOPES",
    "PERIODS",
    "Period",
    "Seat",
    "board_key",
    "current_periods",
    "decode",
    "encode",
    "group_keys",
    "period_of",
    "zone",
]

Scope = Literal["global", "city", "district", "community", "team", "department", "newcomer"]
GroupScope = Literal["team", "community"]
HOLDER_SCOPES: tuple[Scope, ...] = ("global", "city", "district", "community", "team", "department", "newcomer")
GROUP_SCOPES: tuple[GroupScope, ...] = ("team", "community")
PERIODS = ("today", "week", "month", "all")
TICK_BITS = 23
TICK_MAX = (1 << TICK_BITS) - 1
GRAMS_MAX = (1 << 29) - 1
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
NEWCOMER_DAYS = 30
# How long a finished period's board is kept for "last week" views before Redis drops it.
KEEP = {"today": timedelta(days=8), "week": timedelta(days=35), "month": timedelta(days=400)}


@cache
def zone(name: str = "Asia/Shanghai") -> ZoneInfo:
    return ZoneInfo(name)


@dataclass(frozen=True, slots=True)
class Period:
    name: str  # today | week | month | all
    key: str  # d20261121 | w2026-47 | m202611 | all
    start: datetime | None  # None for all time
    end: datetime | None

    @property
    def expire_at(self) -> int | None:
        """When Redis may drop this period's board (unix seconds)."""
        return int((self.end + KEEP[self.name]).timestamp()) if self.end else None

    def tick(self, recorded_at: datetime) -> int:
        if self.start is None:
            return min(TICK_MAX, max(0, int((recorded_at - EPOCH).total_seconds() // 60)))
        return min(TICK_MAX, max(0, int((recorded_at - self.start).total_seconds())))


def _day(d: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(d, time.min, tz)


def period_of(name: str, at: datetime, tz: ZoneInfo) -> Period:
    """The period called `name` that contains the instant `at`, in the boards' time zone."""
    local = at.astimezone(tz).date()
    if name == "today":
        return Period(name, f"d{local:%Y%m%d}", _day(local, tz), _day(local + timedelta(days=1), tz))
    if name == "week":  # ISO weeks: Monday to Sunday
        monday = local - timedelta(days=local.weekday())
        year, week, _ = monday.isocalendar()
        return Period(name, f"w{year}-{week:02d}", _day(monday, tz), _day(monday + timedelta(days=7), tz))
    if name == "month":
        first = local.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        return Period(name, f"m{first:%Y%m}", _day(first, tz), _day(following, tz))
    if name == "all":
        return Period(name, "all", None, None)
    raise ValueError(f"unknown period {name!r}")


def current_periods(tz: ZoneInfo, now: datetime | None = None) -> list[Period]:
    now = now or datetime.now(UTC)
    return [period_of(name, now, tz) for name in PERIODS]


def encode(mg: int, tick: int) -> int:
    grams = max(-GRAMS_MAX, min(GRAMS_MAX, mg // 1000))
    return grams * (1 << TICK_BITS) + (TICK_MAX - tick)


def decode(score: float) -> tuple[int, int]:
    """(grams, tick) of a sorted-set score."""
    value = int(score)
    grams, rest = divmod(value, 1 << TICK_BITS)
    return grams, TICK_MAX - rest


@dataclass(frozen=True, slots=True)
class Seat:
    """Where a resident competes now: their places, team, whether they appear publicly, and whether they
    are still a newcomer. Read from PostgreSQL with each batch of entries; kept in Redis so a move can take
    their points from the old boards to the new ones."""

    city: str | None
    district: str | None
    community: str | None
    team: int | None
    department: int | None
    visible: bool  # opted in to public boards and not excluded
    excluded: bool
    newcomer_until: datetime

    def scope_ids(self) -> dict[str, str]:
        """Scope → its id in board keys, for the scopes this resident belongs to."""
        out = {"global": "-"}
        if self.city:
            out["city"] = self.city
            if self.district:
                out["district"] = f"{self.city}|{self.district}"
                if self.community:
                    out["community"] = f"{self.city}|{self.district}|{self.community}"
        if self.team is not None:
            out["team"] = str(self.team)
            if self.department is not None:
                out["department"] = str(self.department)
        return out

    def group_ids(self) -> dict[str, tuple[str, str]]:
        """Group scope → (the board's id, this resident's group on it): teams compete globally, communities
        within their city."""
        out: dict[str, tuple[str, str]] = {}
        if self.team is not None:
            out["team"] = ("-", str(self.team))
        ids = self.scope_ids()
        if "community" in ids:
            out["community"] = (self.city or "-", ids["community"])
        return out

    def pack(self) -> str:
        return "\x1f".join([self.city or "", self.district or "", self.community or "",
                            "" if self.team is None else str(self.team),
                            "" if self.department is None else str(self.department),
                            "1" if self.visible else "0", "1" if self.excluded else "0",
                            str(int(self.newcomer_until.timestamp()))])

    @classmethod
    def unpack(cls, raw: str | bytes) -> Seat:
        text = raw.decode() if isinstance(raw, bytes) else raw
        city, district, community, team, department, visible, excluded, until = text.split("\x1f")
        return cls(city or None, district or None, community or None, int(team) if team else None,
                   int(department) if department else None, visible == "1", excluded == "1",
                   datetime.fromtimestamp(int(until), UTC))


def board_key(scope: str, scope_id: str, period: Period) -> str:
    return f"lb:{scope}:{scope_id}:{period.key}"


def group_keys(scope: str, board_id: str, group: str, period: Period) -> tuple[str, str, str]:
    """(the per-capita board, the groups' totals, this group's active residents) for one period."""
    base = f"lbpc:{scope}:{board_id}:{period.key}"
    return base, base + ":v", f"{base}:a:{group}"
