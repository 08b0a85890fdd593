from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Controller, MediaType, Response, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from wallet.db import connection

__all__ = ["SystemController"]


class Health(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct):
    status: str
    checks: dict[str, str]


class SystemController(Controller):
    tags = ["operations"]
    opt = {"exclude_from_auth": True}

    @get("/health", operation_id="health", summary="Liveness", cache=False)
    async def health(self) -> Health:
        """200 while the process serves requests; it checks nothing else, so orchestrators do not restart
        a healthy process because a dependency is slow."""
        return Health(status="ok")

    @get(
        "/ready", operation_id="ready", summary="Readiness", cache=False,
        responses={503: ResponseSpec(Readiness, description="PostgreSQL or Redis is down; `checks` says which.")},
    )
    async def ready(self, state: State) -> Response[Readiness]:
        """200 when PostgreSQL and Redis both answer within a second; 503 naming the one that does not."""

        async def postgres() -> str:
            async with connection() as conn:
                await conn.fetchval("SELECT 1")
            return "ok"

        async def redis() -> str:
            await state.redis.ping()
            return "ok"

        checks: dict[str, str] = {}
        for name, probe in (("postgres", postgres), ("redis", redis)):
            try:
                checks[name] = await asyncio.wait_for(probe(), timeout=1.0)
            except Exception as exc:  # any failure means not ready; the check's name says which
                checks[name] = f"unavailable: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        return Response(Readiness(status="ok" if ok else "unavailable", checks=checks), status_code=200 if ok else 503)

    @get("/metrics", operation_id="metrics", summary="Prometheus metrics", media_type=MediaType.TEXT, cache=False)
    async def metrics(self) -> Response[Any]:
        """Request counts and latencies by route and status, in the Prometheus text format."""
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
