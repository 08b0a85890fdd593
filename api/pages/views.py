"""What each public page shows, gathered from the domain's reads (community aggregates, public boards,
challenges, the methodology catalogue, teams and partners) into a template's context. Nothing here knows a
resident's id, phone or e-mail: boards come by nickname from `public_board`, everything else is aggregates.

A view returns (template, context), or None when there is nothing to show (an unknown place, team or partner):
the controller answers 404 then."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from api.pages.cache import Memo
from api.pages.charts import category_chart, daily_chart
from api.pages.text import PERIODS, Formats, Link, equivalents, strings
from gamification.challenges.service import get_challenge, list_challenges
from gamification.community.reads import enterprise_ledger, scope_summary, scopes_like
from gamification.leaderboards.service import group_board, public_board
from gamification.teams.service import get_team
from wallet.errors import DomainError
from wallet.methodology.catalogue import CATEGORIES, CURRENT_RELEASE, behaviours, releases
from wallet.partners.service import get_partner, list_partners

__all__ = ["Scope", "View", "Views", "place_scope", "team_scope"]

View = tuple[str, dict[str, Any]] | None
BOARD_ROWS = 20
PER_CAPITA_ROWS = 10
CHILDREN_MAX = 200
LEDGER_MONTHS = 12


@dataclass(frozen=True, slots=True)
class Scope:
    """One page's subject: its community-aggregate scope, its public board and its challenges' scope."""

    kind: str  # city | district | community | team
    key: str  # e.g. "district:北京市|海淀区"
    board: str
    board_id: str
    challenge: tuple[str, str] | None
    path: tuple[str, ...]  # URL segments
    names: tuple[str, ...]  # city, district, community (a team: its id)


def place_scope(*names: str) -> Scope:
    kind = ("city", "district", "community")[len(names) - 1]
    joined = "|".join(names)
    challenge = {"city": ("city", joined), "community": ("community", joined)}.get(kind)
    return Scope(kind, f"{kind}:{joined}", kind, joined, challenge, ("c", *names), names)


def team_scope(team_id: int) -> Scope:
    return Scope("team", f"team:{team_id}", "team", str(team_id), ("team", str(team_id)), ("t", str(team_id)),
                 (str(team_id),))


class Views:
    """The pages' reads for one request: the reader's language and links, the boards' zone, and the per-process
    data cache shared by every language and period of a page."""

    def __init__(self, redis: Redis, tz: ZoneInfo, data: Memo[Any], language: str, explicit: bool) -> None:
        self.redis, self.tz, self.data = redis, tz, data
        self.language = language
        self.t = strings(language)
        self.f = Formats(self.t, tz)
        self.link = Link(language, explicit)

    def base(self, title: str, crumbs: list[tuple[str, str]], switch: str) -> dict[str, Any]:
        """What every page's frame needs: the strings, formats, links home, to the methodology and the lots."""
        key = "source_zh" if self.language == "zh-CN" else "source_en"
        return {"t": self.t, "f": self.f, "link": self.link, "title": title, "crumbs": crumbs,
                "switch_href": switch, "home_href": self.link(""), "methodology_href": self.link("methodology"),
                "lots_href": self.link("lots"), "sources": [equivalents()[k][key] for k in ("tree_year", "car_km")]}

    async def _cached(self, key: tuple[Any, ...], make: Callable[[], Awaitable[Any]], *,
                      keep: Callable[[Any], bool] | None = None) -> Any:
        return await self.data.get(key, make, keep=keep)

    # --- pages of a place or a team ----------------------------------------------------------------------

    async def scope_page(self, scope: Scope, period: str, title: str | None = None) -> View:
        """A place is known once a reduction of its residents has been counted (404 before); a team, whose page
        is asked for with its `title`, exists by itself and may show zeros."""
        today = datetime.now(self.tz).date()
        summary = await self._cached(("summary", scope.key, today), lambda: scope_summary(scope.key, today=today),
                                     keep=_counted)
        if title is None and not _counted(summary):
            return None
        board = await public_board(self.redis, self.tz, scope.board, scope.board_id, period, limit=BOARD_ROWS)
        names = [board.names.get(s.member, {}).get("nickname") or "—" for s in board.read.top]
        crumbs = [(self.t["home"], self.link(""))]
        for i, name in enumerate(scope.names if scope.kind != "team" else ()):
            crumbs.append((name, self.link("c", *scope.names[: i + 1])))
        title = title or scope.names[-1]
        if scope.kind == "team":
            crumbs.append((title, self.link(*scope.path)))
        ctx = self.base(title, crumbs, self.link.switched(*scope.path, period=period))
        ctx.update(
            scope=scope, kind_label=self.t[f"kind_{scope.kind}"], summary=summary, period=period,
            periods=[(p, self.t[f"period_{p}"], self.link(*scope.path, period=p)) for p in PERIODS],
            board=[(s.rank, name, s.mg) for s, name in zip(board.read.top, names, strict=True)],
            board_count=board.read.count, daily=daily_chart(summary["series"]),
            categories=category_chart(summary["categories"], dict(self.t["category"])),
            behaviours=[self._behaviour(b["behaviour"], b["category"], b["mg"], b["actions"])
                        for b in summary["behaviours"]],
            challenges=await self._challenges(scope), children=await self._children(scope),
            per_capita=await self._per_capita(scope, period),
        )
        return "pages/scope.html.j2", ctx

    async def team_page(self, team_id: int, period: str) -> View:
        try:
            team = await self._cached(("team", team_id), lambda: get_team(team_id))
        except DomainError as exc:
            if exc.kind == "not_found":
                return None
            raise
        name = team["name_zh"] if self.language == "zh-CN" else (team["name_en"] or team["name_zh"])
        return await self.scope_page(team_scope(team_id), period, title=name)

    def _behaviour(self, code: str, category: str, mg: int, actions: int) -> dict[str, Any]:
        found = behaviours().get(code)
        name = (found.name_zh if self.language == "zh-CN" else found.name_en) if found else code
        return {"name": name, "category": self.f.category(category), "mg": mg, "actions": actions}

    async def _challenges(self, scope: Scope) -> list[dict[str, Any]]:
        if scope.challenge is None:
            return []
        wanted = scope.challenge

        async def load() -> list[dict[str, Any]]:
            running = [c for c in await list_challenges() if c["state"] == "active"
                       and (c["scope"], c["scope_id"]) == wanted]
            return [await get_challenge(c["id"], top=0) for c in running[:10]]

        out = []
        for c in await self._cached(("challenges", wanted), load):
            zh = self.language == "zh-CN"
            kind, progress, goal = c["goal_kind"], c["progress"], c["goal"]
            unit = self.t["goal_" + kind]
            shown = (self.f.mass(progress * 1000), self.f.mass(goal * 1000)) if kind == "grams" else (
                f"{self.f.number(progress)} {unit}", f"{self.f.number(goal)} {unit}")
            out.append({"title": c["title_zh"] if zh else c["title_en"],
                        "description": c["description_zh"] if zh else c["description_en"],
                        "progress": max(progress, 0), "goal": goal, "shown": shown,
                        "percent": min(100, max(progress, 0) * 100 // goal) if goal else 0,
                        "participants": c["participants"], "ends": self.f.when(c["ends_at"]),
                        "outcome": c["outcome_zh"] if zh else c["outcome_en"], "outcomes": c["outcomes"]})
        return out

    async def _children(self, scope: Scope) -> list[tuple[str, str]]:
        if scope.kind not in ("city", "district"):
            return []
        child = "district" if scope.kind == "city" else "community"
        prefix = f"{child}:{'|'.join(scope.names)}|"
        found = await self._cached(("children", prefix), lambda: scopes_like(prefix, limit=CHILDREN_MAX))
        names = [s.split("|")[-1] for s in found]
        return [(n, self.link("c", *scope.names, n)) for n in names if n]

    async def _per_capita(self, scope: Scope, period: str) -> list[tuple[int, str, str, int]]:
        if scope.kind != "city":
            return []
        board = await group_board(self.redis, self.tz, "community", scope.board_id, period, limit=PER_CAPITA_ROWS)
        return [(s.rank, s.member.split("|")[-1], self.link("c", *s.member.split("|")), s.mg)
                for s in board.read.top if s.member.count("|") == 2]

    # --- partner, methodology, index -----------------------------------------------------------------------

    async def partner_page(self, partner_id: uuid.UUID) -> View:
        try:
            partner = await self._cached(("partner", partner_id), lambda: get_partner(partner_id))
        except DomainError as exc:
            if exc.kind == "not_found":
                return None
            raise
        today = datetime.now(self.tz).date()
        first = _months_back(today, LEDGER_MONTHS - 1)
        ledger = await self._cached(("ledger", partner_id, today),
                                    lambda: enterprise_ledger(partner_id, from_day=first, to_day=today))
        name = partner["name"] if self.language == "zh-CN" else (partner["name_en"] or partner["name"])
        crumbs = [(self.t["home"], self.link("")), (name, self.link("p", str(partner_id)))]
        ctx = self.base(name, crumbs, self.link.switched("p", str(partner_id)))
        months = [{"month": m["month"], "participants": m["participants"],
                   "mg": sum(b["reduction_mg"] for b in m["behaviours"]),
                   "behaviours": [self._behaviour(b["behaviour"], b["category"], b["reduction_mg"], b["credits"])
                                  | {"reversals": b["reversals"]} for b in m["behaviours"]]}
                  for m in reversed(ledger["months"])]
        ctx.update(kind_label=self.t["kind_partner"], ledger=ledger, months=months,
                   lead=self.t["partner_lead"].format(name=name), counted_at=ledger["counted_at"])
        return "pages/partner.html.j2", ctx

    async def methodology_page(self) -> View:
        zh = self.language == "zh-CN"
        groups = []
        for category in CATEGORIES:
            items = []
            for b in behaviours().values():
                if b.category != category:
                    continue
                v = b.current
                items.append({"code": b.code, "name": b.name_zh if zh else b.name_en,
                              "description": b.description_zh if zh else b.description_en,
                              "factor": self.t["factor_value"].format(amount=self.f.grams(v.factor_mg),
                                                                      per=self.f.number(v.per),
                                                                      unit=self.f.unit(b.unit)),
                              "unit": self.f.unit(b.unit), "source": v.source, "source_date": v.source_date,
                              "method": v.method, "note": v.conservative_note,
                              "version": self.t["version"].format(version=v.version, since=v.since)})
            groups.append((self.f.category(category), items))
        changed = {r.version: [b.name_zh if zh else b.name_en for b in behaviours().values()
                               if any(v.since == r.version for v in b.versions)] for r in releases()}
        crumbs = [(self.t["home"], self.link("")), (self.t["methodology_title"], self.link("methodology"))]
        ctx = self.base(self.t["methodology_title"], crumbs, self.link.switched("methodology"))
        ctx.update(groups=groups, current=self.t["current_release"].format(version=CURRENT_RELEASE),
                   releases=[{"version": r.version, "date": r.date, "summary": r.summary_zh if zh else r.summary_en,
                              "changes": r.changes, "behaviours": changed[r.version]} for r in reversed(releases())])
        return "pages/methodology.html.j2", ctx

    async def index_page(self, q: str) -> View:
        prefix = "city:" + q
        cities = [s.removeprefix("city:") for s in await self._cached(
            ("children", prefix), lambda: scopes_like(prefix, limit=CHILDREN_MAX), keep=lambda _: not q)]
        teams = await group_board(self.redis, self.tz, "team", "-", "month", limit=PER_CAPITA_ROWS)
        partners = await self._cached(("partners",), list_partners)
        zh = self.language == "zh-CN"
        ctx = self.base(self.t["index_title"], [(self.t["home"], self.link(""))], self.link.switched("", q=q))
        ctx.update(
            q=q, cities=[(c, self.link("c", c)) for c in cities if c],
            teams=[(s.rank, _team_name(teams.names.get(s.member, {}), zh), self.link("t", s.member), s.mg)
                   for s in teams.read.top],
            partners=[(p["name"] if zh else (p["name_en"] or p["name"]), self.link("p", str(p["id"])))
                      for p in partners if p["status"] == "active"],
        )
        return "pages/index.html.j2", ctx

    def not_found(self) -> tuple[str, dict[str, Any]]:
        ctx = self.base(self.t["not_found_title"], [(self.t["home"], self.link(""))], self.link.switched(""))
        return "pages/error.html.j2", ctx | {"message": self.t["not_found_text"]}


def _counted(summary: Mapping[str, Any]) -> bool:
    """A place exists for the pages once a reduction of its residents has been counted."""
    return bool(summary["participants"] or summary["total_mg"])


def _team_name(names: Mapping[str, Any], zh: bool) -> str:
    return str((names.get("nickname") if zh else names.get("name_en") or names.get("nickname")) or "—")


def _months_back(day: date, months: int) -> date:
    """The first day of the month `months` before `day`'s."""
    index = day.year * 12 + day.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)
