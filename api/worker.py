"""The arq worker: the index of all background work. arq stays behind this one module so it can be swapped.

PostgreSQL's outbox is the record of what must happen; Redis only delivers. `relay_outbox` runs every
second and hands due events to `handle_outbox_event`, which runs each registered handler exactly once.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

import msgspec
from arq import cron
from arq.connections import RedisSettings
from arq.worker import func

from api.events import BOARD_ZONE, EVENT_HANDLERS
from api.observability import configure_logging
from api.settings import get_settings
from gamification.challenges.service import step as challenge_step
from gamification.community.follow import step as community_step
from gamification.leaderboards.follow import follow, rebuild
from gamification.progress.service import follow_book as evaluate_badges
from notifications.channels.base import channel_from_env
from notifications.delivery.send import Sender, Step
from notifications.triggers_scheduled import (
    challenge_ending,
    energy_expiring,
    energy_ripe,
    overtaken,
    streak_at_risk,
    weekly_report,
)
from wallet.db import close_pool, start_pool
from wallet.energy.balls import expire_due
from wallet.energy.policy import configure as configure_energy
from wallet.lease import lease
from wallet.mall.merchant import MerchantClient
from wallet.mall.redeem import sweep_pending
from wallet.outbox.service import handle_event, relay_due_events
from wallet.sealing import SecretBox

__all__ = ["WorkerSettings"]

log = logging.getLogger("carbon_wallet.worker")


async def startup(ctx: dict[str, Any]) -> None:
    configure_logging(os.environ.get("CW_LOG_LEVEL", "INFO").upper())
    # arq logs every job at INFO, and the relay runs every second: keep warnings and failures only.
    logging.getLogger("arq.worker").setLevel(logging.WARNING)
    settings = get_settings()
    configure_energy(settings.energy)
    ctx["merchant"] = MerchantClient(SecretBox(settings.data_key))
    ctx["channels"] = channel_from_env(os.environ)  # fcm/apns when configured; "log" always
    ctx["sender"] = Sender(ctx["channels"], ctx["redis"])
    await start_pool(settings.database_url, size_min=1, size_max=10)


async def shutdown(ctx: dict[str, Any]) -> None:
    for channel in ctx.get("channels", {}).values():
        await channel.aclose()
    await close_pool()


async def handle_outbox_event(ctx: dict[str, Any], event_id: str) -> int:
    return await handle_event(uuid.UUID(event_id), EVENT_HANDLERS)


async def relay_outbox(ctx: dict[str, Any]) -> int:
    redis = ctx["redis"]

    async def enqueue(event_id: uuid.UUID, attempt: int) -> None:
        await redis.enqueue_job("handle_outbox_event", str(event_id), _job_id=f"outbox:{event_id}:{attempt}")

    return await relay_due_events(
        enqueue, redeliver_after_s=float(os.environ.get("CW_OUTBOX_REDELIVER_S", "30")),
        subscribed=frozenset(EVENT_HANDLERS),
    )


async def expire_energy_balls(ctx: dict[str, Any]) -> int:
    """Every minute: balls past their window move to `energy:expiry`. Idempotent; a missed run catches up."""
    expired = await expire_due()
    if expired:
        log.info("energy balls expired", extra={"expired": expired})
    return expired


async def settle_redemptions(ctx: dict[str, Any]) -> dict[str, int]:
    """Every 15 s: fulfil pending redemptions that are due (merchant calls, crashed requests) with backoff,
    and void those pending too long, so no energy stays reserved."""
    return await sweep_pending(ctx["merchant"])


async def follow_book(ctx: dict[str, Any]) -> int:
    """Every second: the boards take the book's new entries (one Redis round trip per 2,000). With no cursor
    (the first start, or Redis was wiped) they are rebuilt from the book first."""
    applied = await follow(ctx["redis"], BOARD_ZONE)
    if applied is None and not await ctx["redis"].hexists("lb:cursor", "done"):
        log.info("leaderboards rebuilt", extra=await rebuild(ctx["redis"], BOARD_ZONE))
        applied = await follow(ctx["redis"], BOARD_ZONE)
    return applied or 0


async def award_badges(ctx: dict[str, Any]) -> int:
    """Every 5 s: residents whose books changed get their badges evaluated (awarded once)."""
    return await evaluate_badges()


async def count_challenges(ctx: dict[str, Any]) -> int:
    """Every second: challenge progress follows the book, and challenges whose window closed get their result
    recorded, once."""
    return (await challenge_step()).entries


SENDER_SHARDS = int(os.environ.get("CW_NOTIFY_SENDERS", "4"))
SENDER_LEASE = "notify:sender:"  # + the shard


async def deliver_notifications(ctx: dict[str, Any]) -> int:
    """Every second: due deliveries go out (live stream, push). arq's `unique` cron still starts a job each
    second while earlier ones run, so residents are split into shards, each drained by one run at a time (a
    Redis lease each, `wallet.lease`): a run goes through the shards it can take, for up to 50 s in all, and
    skips those another run is draining. At most `CW_NOTIFY_SENDERS` senders run across all workers, and never
    two for one resident."""
    sender: Sender = ctx["sender"]
    redis = ctx["redis"]
    total, started = Step(), time.monotonic()
    for shard in range(SENDER_SHARDS):
        async with lease(redis, f"{SENDER_LEASE}{shard}") as held:
            while held and time.monotonic() - started < 50:
                step = await sender.step(shard=shard, shards=SENDER_SHARDS)
                total.add(step)
                if step.claimed < sender.policy.batch:
                    break
    if total.dead:
        log.warning("notifications given up", extra={"dead": total.dead})
    return total.sent


async def count_community(ctx: dict[str, Any]) -> int:
    """Every second: the community aggregates (pages, the city and enterprise ledgers) take the book's new
    entries."""
    return (await community_step()).entries


async def tell_energy_ripe(ctx: dict[str, Any]) -> int:
    """Every 5 minutes: balls ripened in the last hour and still uncollected (one message per resident per 4 h)."""
    return await energy_ripe()


async def tell_energy_expiring(ctx: dict[str, Any]) -> int:
    """Hourly: ripe balls expiring within 12 h (once per resident per local day)."""
    return await energy_expiring()


async def tell_streak_at_risk(ctx: dict[str, Any]) -> int:
    """Every 10 minutes: residents whose local time is 20:xx with a streak at risk (once per local day)."""
    return await streak_at_risk()


async def tell_overtaken(ctx: dict[str, Any]) -> int:
    """Every minute: friends who passed someone on this week's board since the last run."""
    return await overtaken(ctx["redis"], tz=BOARD_ZONE)


async def tell_challenge_ending(ctx: dict[str, Any]) -> int:
    """Every 10 minutes: participants of challenges ending within 24 h (once per challenge)."""
    return await challenge_ending()


async def tell_weekly_report(ctx: dict[str, Any]) -> int:
    """Every 10 minutes: residents whose local time is Monday 09:xx get last week's report (once per ISO week)."""
    return await weekly_report()


async def rebuild_leaderboards(ctx: dict[str, Any]) -> dict[str, int]:
    """Nightly: every current board recreated exactly from the book (and newcomers past 30 days leave)."""
    return await rebuild(ctx["redis"], BOARD_ZONE)


def _redis_settings() -> RedisSettings:
    url = os.environ.get("REDIS_URL")
    if not url:
        raise RuntimeError("REDIS_URL is not set: `make run` starts an embedded Valkey and sets it for you")
    return RedisSettings.from_dsn(url)


class WorkerSettings:
    functions = [func(handle_outbox_event, timeout=30, max_tries=5)]
    cron_jobs = [
        cron(relay_outbox, second=set(range(60)), unique=True, run_at_startup=True, timeout=30, keep_result=0),
        cron(expire_energy_balls, second={7}, unique=True, run_at_startup=True, timeout=300, keep_result=0),
        cron(settle_redemptions, second={3, 18, 33, 48}, unique=True, timeout=120, keep_result=0),
        cron(follow_book, second=set(range(60)), unique=True, run_at_startup=True, timeout=300, keep_result=0),
        cron(award_badges, second=set(range(0, 60, 5)), unique=True, timeout=120, keep_result=0),
        cron(count_challenges, second=set(range(60)), unique=True, timeout=120, keep_result=0),
        cron(count_community, second=set(range(60)), unique=True, run_at_startup=True, timeout=300, keep_result=0),
        cron(deliver_notifications, second=set(range(60)), unique=True, run_at_startup=True, timeout=120,
             keep_result=0),
        # Scheduled notifications: each picks residents by their own local time, so these minutes only stagger.
        cron(tell_energy_ripe, minute=set(range(0, 60, 5)), second={11}, unique=True, timeout=240, keep_result=0),
        cron(tell_energy_expiring, minute={2}, second={13}, unique=True, timeout=600, keep_result=0),
        cron(tell_streak_at_risk, minute=set(range(1, 60, 10)), second={17}, unique=True, timeout=540, keep_result=0),
        cron(tell_weekly_report, minute=set(range(4, 60, 10)), second={19}, unique=True, timeout=540, keep_result=0),
        cron(tell_overtaken, second={23}, unique=True, run_at_startup=True, timeout=55, keep_result=0),
        cron(tell_challenge_ending, minute=set(range(6, 60, 10)), second={29}, unique=True, timeout=540,
             keep_result=0),
        cron(rebuild_leaderboards, hour={3}, minute={30}, second={0}, unique=True, timeout=1800,
             keep_result=0),  # 03:30 in the boards' time zone (below): the quietest hour
    ]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = _redis_settings()
    job_serializer = msgspec.json.encode
    job_deserializer = msgspec.json.decode
    max_jobs = 20
    job_timeout = 30
    keep_result = 3600
    health_check_interval = 30
    timezone = BOARD_ZONE  # cron hours are the boards' local hours, whatever the host's zone
