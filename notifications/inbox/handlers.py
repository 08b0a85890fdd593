"""Event handlers that write the inbox. They run inside the outbox's per-handler transaction, and the
UNIQUE (holder_id, event_id, kind) key makes a second delivery a no-op even without that guard.

Events of one holder may be handled out of order (the relay hands them to parallel jobs), so a handler
never writes for a holder who is no longer active: a late `holder.registered` after `holder.deleted`
must not bring personal messages back."""

from __future__ import annotations

from typing import Any

from notifications.notify import notify, notify_many
from wallet.db import connection
from wallet.outbox.service import Event, EventHandler

__all__ = ["HANDLERS"]

async def _post(event: Event, kind: str, params: dict[str, Any] | None = None) -> None:
    """The inbox message and its deliveries (notifications/notify.py), in the handler's transaction."""
    assert event.holder_id is not None
    async with connection() as conn:
        await notify(conn, event.holder_id, kind, params or {}, event_id=event.event_id, at=event.created_at)


async def _partner_names(partner_id: str) -> dict[str, str]:
    """Both names are stored, so the message reads right in whichever language the holder picks later."""
    async with connection() as conn:
        row = await conn.fetchrow("SELECT name, name_en FROM partner WHERE id = $1::uuid", partner_id)
    name = row["name"] if row else "?"
    return {"partner": name, "partner_en": (row["name_en"] if row else "") or name}


async def tell_partner_linked(event: Event) -> None:
    await _post(event, "partner_linked", await _partner_names(event.payload["partner_id"]))


async def tell_partner_unlinked(event: Event) -> None:
    await _post(event, "partner_unlinked", await _partner_names(event.payload["partner_id"]))


async def welcome_new_holder(event: Event) -> None:
    await _post(event, "welcome")


async def warn_password_changed(event: Event) -> None:
    await _post(event, "password_changed")


async def erase_inbox_of_deleted_holder(event: Event) -> None:
    assert event.holder_id is not None
    async with connection() as conn:
        await conn.execute("DELETE FROM inbox_message WHERE holder_id = $1", event.holder_id)


async def tell_friend_helped(event: Event) -> None:
    async with connection() as conn:
        helper = await conn.fetchval("SELECT nickname FROM holder WHERE id = $1::uuid", event.payload["helper_id"])
    await _post(event, "energy_helped", {"helper": helper or "?", "amount": event.payload["amount"]})


async def tell_energy_awarded(event: Event) -> None:
    await _post(event, "energy_awarded", {"amount": event.payload["amount"], "reason": event.payload["reason"]})


async def _reward_names(reward_id: int) -> dict[str, str]:
    async with connection() as conn:
        row = await conn.fetchrow("SELECT title_zh, title_en FROM reward WHERE id = $1", reward_id)
    return {"reward": row["title_zh"] if row else "?", "reward_en": row["title_en"] if row else "?"}


async def tell_redemption_fulfilled(event: Event) -> None:
    await _post(event, "redemption_fulfilled",
                {**await _reward_names(event.payload["reward_id"]), "price": event.payload["price"]})


async def tell_redemption_voided(event: Event) -> None:
    async with connection() as conn:
        price = await conn.fetchval("SELECT price FROM redemption WHERE id = $1", event.payload["redemption_id"])
    await _post(event, "redemption_voided", {**await _reward_names(event.payload["reward_id"]), "price": price or 0})


async def tell_donation_certified(event: Event) -> None:
    async with connection() as conn:
        row = await conn.fetchrow("SELECT title_zh, title_en FROM donation_project WHERE id = $1",
                                  event.payload["project_id"])
    await _post(event, "donation_certified", {"project": row["title_zh"] if row else "?",
                                              "project_en": row["title_en"] if row else "?",
                                              "amount": event.payload["amount"]})


async def _nickname(holder_id: str) -> str:
    async with connection() as conn:
        nickname = await conn.fetchval("SELECT nickname FROM holder WHERE id = $1::uuid AND status = 'active'",
                                       holder_id)
    return nickname or "?"


async def tell_friend_requested(event: Event) -> None:
    """Not for a request withdrawn, declined or ended by a block before this ran (accepted ones still tell)."""
    async with connection() as conn:
        live = await conn.fetchval("SELECT status IN ('pending', 'accepted') FROM friend_request WHERE id = $1",
                                   event.payload["request_id"])
    if live:
        await _post(event, "friend_requested", {"friend": await _nickname(event.payload["from_holder_id"])})


async def tell_friend_accepted(event: Event) -> None:
    await _post(event, "friend_accepted", {"friend": await _nickname(event.payload["friend_id"])})


async def tell_friend_added(event: Event) -> None:
    """Adds by invite code tell both sides (requests have `friend.accepted`; direct adds say nothing)."""
    if event.payload.get("via") == "invite_code":
        kind = "friend_added" if event.payload.get("initiated") else "friend_added_you"
        await _post(event, kind, {"friend": await _nickname(event.payload["friend_id"])})


async def tell_badge_earned(event: Event) -> None:
    await _post(event, "badge_earned", {"badge": event.payload["name_zh"], "badge_en": event.payload["name_en"]})


async def tell_level_reached(event: Event) -> None:
    await _post(event, "level_up", {"level": event.payload["name_zh"], "level_en": event.payload["name_en"]})


async def tell_activity_held(event: Event) -> None:
    await _post(event, "activity_held", {"activity_id": event.payload["activity_id"]})


async def tell_review_outcome(event: Event) -> None:
    kind = "review_credited" if event.payload["verdict"] == "credited" else "review_rejected"
    await _post(event, kind, {"activity_id": event.payload["activity_id"], "code": event.payload.get("code") or ""})


def _amount(goal_kind: str, progress: int) -> tuple[str, str]:
    """A challenge's progress as the message says it, in zh-CN and en."""
    if goal_kind == "grams":
        return (f"{progress / 1000:,.1f} 千克减排", f"{progress / 1000:,.1f} kg CO2e avoided") if progress >= 1000 \
            else (f"{progress} 克减排", f"{progress} g CO2e avoided")
    if goal_kind == "energy":
        return f"{progress:,} 能量", f"{progress:,} energy"
    return f"{progress:,} 次绿色行动", f"{progress:,} green actions"


async def tell_challenge_finished(event: Event) -> None:
    """Every participant, in batches of one statement each (a city challenge may have 100,000): one message
    per participant and event, whatever happens to this job."""
    async with connection() as conn:
        c = await conn.fetchrow("SELECT id, title_zh, title_en, goal_kind FROM challenge WHERE id = $1",
                                event.payload["challenge_id"])
        if c is None:
            return
        holders = [r["holder"] for r in await conn.fetch(
            "SELECT holder FROM challenge_participant WHERE challenge = $1 ORDER BY holder", c["id"])]
        progress_zh, progress_en = _amount(c["goal_kind"], int(event.payload["progress"]))
        kind = "challenge_met" if event.payload["result"] == "met" else "challenge_missed"
        await notify_many(conn, holders, kind, {
            "challenge_id": c["id"], "challenge": c["title_zh"], "challenge_en": c["title_en"],
            "progress": progress_zh, "progress_en": progress_en}, event_id=event.event_id, at=event.created_at)


def _yuan(fen: int) -> str:
    return f"{fen // 100:,}.{fen % 100:02d}"


def _grams(mg: int) -> tuple[str, str]:
    kg = mg // 1_000_000
    if kg >= 1:
        return f"{kg:,} 千克二氧化碳当量", f"{kg:,} kg CO2e"
    return f"{mg // 1000:,} 克二氧化碳当量", f"{mg // 1000:,} g CO2e"


async def tell_market_paid(event: Event) -> None:
    """Every contributor of a settled lot, with their own share; one statement per 5,000 of them."""
    async with connection() as conn:
        sale = await conn.fetchrow(
            """SELECT s.id, s.lot, s.price_per_tonne_fen, p.exchange_zh, p.exchange_en, p.payout FROM market_sale s
               JOIN market_lot l ON l.id = s.lot JOIN market_programme p ON p.id = l.programme
               WHERE s.id = $1 AND s.state = 'settled'""", event.payload["sale"])
        if sale is None:
            return
        rows = await conn.fetch("SELECT holder, reduction_mg, fen, energy FROM market_payout WHERE sale = $1 "
                                "ORDER BY holder", sale["id"])
        kind = "market_paid_fen" if sale["payout"] == "fen" else "market_paid_energy"
        params = []
        for r in rows:
            grams, grams_en = _grams(r["reduction_mg"])
            params.append({"lot_id": sale["lot"], "exchange": sale["exchange_zh"], "exchange_en": sale["exchange_en"],
                           "price": _yuan(sale["price_per_tonne_fen"]), "grams": grams, "grams_en": grams_en,
                           "amount": _yuan(r["fen"]), "energy": f"{r['energy']:,}"})
        await notify_many(conn, [r["holder"] for r in rows], kind, params, event_id=event.event_id,
                          at=event.created_at)


HANDLERS: dict[str, list[EventHandler]] = {
    "holder.registered": [welcome_new_holder],
    "holder.password_changed": [warn_password_changed],
    "holder.deleted": [erase_inbox_of_deleted_holder],
    "partner.linked": [tell_partner_linked],
    "partner.unlinked": [tell_partner_unlinked],
    "energy.helped": [tell_friend_helped],
    "energy.awarded": [tell_energy_awarded],
    "redemption.fulfilled": [tell_redemption_fulfilled],
    "redemption.voided": [tell_redemption_voided],
    "donation.certified": [tell_donation_certified],
    "badge.earned": [tell_badge_earned],
    "level.reached": [tell_level_reached],
    "activity.held": [tell_activity_held],
    "activity.reviewed": [tell_review_outcome],
    "challenge.finished": [tell_challenge_finished],
    "market.sale_settled": [tell_market_paid],
    "friend.requested": [tell_friend_requested],
    "friend.accepted": [tell_friend_accepted],
    "friend.added": [tell_friend_added],
}
