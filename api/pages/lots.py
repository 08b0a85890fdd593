"""The carbon market's public pages: every lot, newest first, and one lot's account (its programme's rules, its
totals, the sale once settled, where the public-benefit share went, the manifest's hash and how proceeds are
split). From the market's public reads only (wallet.market.statements): they carry counts, never who contributed.

A view returns (template, context), or None for a lot or a cursor that does not exist (the controller answers
404): so the pages' cache holds at most one listing page per real lot, whatever a reader puts in `?before=`."""

from __future__ import annotations

from typing import Any

from api.pages.views import View, Views
from wallet.errors import DomainError
from wallet.market.programmes import Programme, get_programme
from wallet.market.statements import public_lot, public_lots
from wallet.methodology.catalogue import behaviours

__all__ = ["LOTS_PER_PAGE", "lot_page", "lots_page"]

LOTS_PER_PAGE = 20
VERIFY_COMMAND = "(printf 'carbon-lot/v1\\n'; cat manifest.json) | sha256sum"  # as wallet/market/manifest.py hashes


def _summary(views: Views, lot: dict[str, Any]) -> dict[str, Any]:
    """What both pages show of a lot: its name, state, programme, exchange, mass and contributors, and the price and
    date once its sale is settled (a pending sale's figures are not public until the exchange has paid)."""
    zh = views.language == "zh-CN"
    sale = lot.get("sale")
    settled = sale if sale is not None and sale["state"] == "settled" and lot["state"] == "settled" else None
    return {
        "id": lot["id"], "name": views.t["lot_name"].format(id=lot["id"]), "href": views.link("lots", lot["id"]),
        "state": lot["state"], "state_label": views.t[f"lot_state_{lot['state']}"],
        "programme": lot["programme_name_zh"] if zh else lot["programme_name_en"],
        "exchange": lot["exchange_zh"] if zh else lot["exchange_en"],
        "total_mg": lot["total_mg"], "entries": lot["entries"], "contributors": lot["holders"],
        "created": views.f.day(lot["created_at"]), "day_from": lot["day_from"], "day_to": lot["day_to"],
        "sale": settled,
    }


async def _lots_before(before: int) -> list[dict[str, Any]]:
    """The lots after `before` (a lot that must exist: it is read too, `id < before + 1`, then dropped). An
    unknown cursor raises, so neither cache keeps anything for it."""
    rows = await public_lots(before=before + 1, limit=LOTS_PER_PAGE + 2)
    if not rows or rows[0]["id"] != before:
        raise DomainError("not_found", "lot-not-found", "No lot has this id.")
    return rows[1:]


async def lots_page(views: Views, before: int | None) -> View:
    """One page of lots, newest first; `before` is the id of the last lot of the previous page."""
    try:
        rows = await views.data.get(("lots", before), lambda: (
            public_lots(limit=LOTS_PER_PAGE + 1) if before is None else _lots_before(before)))
    except DomainError as exc:
        if exc.kind == "not_found":
            return None
        raise
    shown = rows[:LOTS_PER_PAGE]
    title = views.t["lots_title"]
    crumbs = [(views.t["home"], views.link("")), (title, views.link("lots"))]
    cursor = str(before) if before is not None else None
    ctx = views.base(title, crumbs, views.link.switched("lots", before=cursor))
    ctx.update(lots=[_summary(views, r) for r in shown], first_href=views.link("lots") if before else None,
               older_href=views.link("lots", before=str(shown[-1]["id"])) if len(rows) > LOTS_PER_PAGE else None)
    return "pages/lots.html.j2", ctx


async def _lot_and_programme(lot_id: int) -> tuple[dict[str, Any], Programme]:
    lot = await public_lot(lot_id)  # DomainError not_found for an unknown lot: nothing is cached for it
    return lot, await get_programme(lot["programme"])


async def lot_page(views: Views, lot_id: int) -> View:
    try:
        lot, programme = await views.data.get(("lot", lot_id), lambda: _lot_and_programme(lot_id))
    except DomainError as exc:
        if exc.kind == "not_found":
            return None
        raise
    zh = views.language == "zh-CN"
    t, f = views.t, views.f
    summary = _summary(views, lot)
    crumbs = [(t["home"], views.link("")), (t["lots_title"], views.link("lots")), (summary["name"], summary["href"])]
    ctx = views.base(summary["name"], crumbs, views.link.switched("lots", lot_id))
    accepted = []
    for rule in programme.behaviours:
        code, _, version = rule.partition("@")
        known = behaviours().get(code)
        name = (known.name_zh if zh else known.name_en) if known else code
        accepted.append((t["behaviour_version"].format(name=name, version=version),
                         views.link("methodology") + "#" + code))
    benefit = None
    if programme.benefit_ppm:
        benefit = {"name": programme.benefit_name_zh if zh else programme.benefit_name_en,
                   "url": programme.benefit_url, "share": f.percent(programme.benefit_ppm)}
    sale = summary["sale"]
    energy = None
    if sale is not None and programme.payout == "energy" and programme.energy_per_fen:
        energy = sale["residents_fen"] * programme.energy_per_fen
    ctx.update(
        lot=summary, paid_contributors=sale["paid"] if sale is not None else 0, sale=sale,
        pending=lot["state"] == "pending",
        cancelled_on=f.day(lot["cancelled_at"]) if lot["state"] == "cancelled" else None,
        accepted=accepted, tiers=[t["tier"].get(x, x) for x in programme.trust_tiers],
        releases=", ".join(programme.methodology_releases), period=(programme.period_from, programme.period_to),
        settle_days=programme.settle_days, payout=programme.payout, energy_per_fen=programme.energy_per_fen,
        energy=energy, benefit=benefit, manifest_sha256=bytes(lot["manifest_hash"]).hex(),
        verify_command=VERIFY_COMMAND, kind_label=t["kind_lot"],
    )
    return "pages/lot.html.j2", ctx
