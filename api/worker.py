"""The arq worker: the index of all background work. arq stays behind this one module so it can be swapped.

PostgreSQL's outbox is the record of what must happen; Redis only delivers. `relay_outbox` runs every
second and hands due events to `handle_outbox_event`, which runs each registered handler exactly once.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

import msgspec
from arq import cron
from arq.connections import RedisSettings
from arq.worker import func

from api.events import EVENT_HANDLERS
from api.observability import configure_logging
from api.settings import get_settings
from wallet.db import close_pool, start_pool
from wallet.energy.balls import expire_due
from wallet.energy.policy import configure as configure_energy
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
    await start_pool(settings.database_url, size_min=1, size_max=10)


async def shutdown(ctx: dict[str, Any]) -> None:
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
