"""The geometry of the pages' two charts, computed here so the templates only draw: bars of the last 30 days
and a horizontal bar per category. Server-rendered SVG, so the charts need no JavaScript; every bar carries a
<title> (hover) and the templates add a text description and a data table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from api.pages.text import mass

__all__ = ["Bar", "CategoryChart", "DailyChart", "category_chart", "daily_chart"]

WIDTH = 400  # viewBox units; the SVG scales to the page, about 1:1 on a 390 px phone
DAILY_HEIGHT = 200
LEFT, RIGHT, TOP, BOTTOM = 34, 6, 18, 22
ROW_HEIGHT = 26
LABEL_WIDTH = 96
VALUE_WIDTH = 64


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str  # the day or the category
    value: str  # the mass, formatted
    mg: int


@dataclass(frozen=True, slots=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True, slots=True)
class DailyChart:
    width: int
    height: int
    bars: list[Bar]
    ticks: list[Tick]  # horizontal grid lines with their labels, in `unit`
    unit: str  # kg or t
    days: list[tuple[float, str]]  # x and label of the days named under the axis
    left: int
    right: float
    base: float
    total_mg: int


@dataclass(frozen=True, slots=True)
class CategoryChart:
    width: int
    height: int
    bars: list[Bar]
    label_width: int
    summary: str  # "出行 1.20 kg, 饮食 0.45 kg": the chart as one sentence, for its <desc>


def nice_ceiling(value_mg: int) -> int:
    """The smallest 1, 2 or 5 × 10^k mg at or above `value_mg` (1 kg when there is nothing yet)."""
    if value_mg <= 0:
        return 1_000_000
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value_mg:
                return m * step
        step *= 10


def daily_chart(series: list[tuple[date, int]]) -> DailyChart:
    """One bar per day; negative days (reversals outweighing credits) are drawn as empty, their value in the
    bar's title and the table."""
    top_mg = nice_ceiling(max((mg for _, mg in series), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, DAILY_HEIGHT - TOP - BOTTOM
    base = TOP + plot_h
    slot = plot_w / max(len(series), 1)
    bars = []
    for i, (day, mg) in enumerate(series):
        h = plot_h * max(mg, 0) / top_mg
        bars.append(Bar(round(LEFT + i * slot + slot * 0.15, 2), round(base - h, 2), round(slot * 0.7, 2),
                        round(h, 2), day.isoformat(), mass(mg), mg))
    steps = 4 if str(top_mg).startswith("2") else 5  # 0.5, 1, 1.5, 2 or 1, 2, 3, 4, 5 (× 10^k)
    unit_mg, unit = (1_000_000_000, "t") if top_mg >= 1_000_000_000 else (1_000_000, "kg")
    ticks = [Tick(round(base - plot_h * k / steps, 2), format(top_mg * k / steps / unit_mg, "g"))
             for k in range(steps + 1)]
    picked = list(range(0, len(series), 7))
    if picked and len(series) - 1 - picked[-1] >= 4:  # the last day too, unless its label would overlap
        picked.append(len(series) - 1)
    days = [(round(LEFT + (i + 0.5) * slot, 2), series[i][0].strftime("%m-%d")) for i in picked]
    return DailyChart(WIDTH, DAILY_HEIGHT, bars, ticks, unit, days, LEFT, WIDTH - RIGHT, base,
                      sum(mg for _, mg in series))


def category_chart(categories: list[tuple[str, int]], names: dict[str, str]) -> CategoryChart:
    """One row per category, largest first, the bar's length relative to the largest."""
    most = max((mg for _, mg in categories), default=0) or 1
    room = WIDTH - LABEL_WIDTH - VALUE_WIDTH
    bars = [Bar(LABEL_WIDTH, i * ROW_HEIGHT + 4, round(max(room * mg / most, 1), 2), ROW_HEIGHT - 8,
                names.get(code, code), mass(mg), mg) for i, (code, mg) in enumerate(categories)]
    return CategoryChart(WIDTH, max(len(bars), 1) * ROW_HEIGHT, bars, LABEL_WIDTH,
                         ", ".join(f"{b.label} {b.value}" for b in bars))
