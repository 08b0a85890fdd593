"""The app factory: every resource (database pool, Redis client, key material) is created in the app's
own lifespan, on the event loop that serves requests (Litestar 2's test clients use another loop)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Tag
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.auth.middleware import BearerAuthMiddleware
from api.auth.tokens import AccessTokens
from api.observability import configure_logging, install_request_context
from api.openapi import StrictStructSchemaPlugin
from api.problems import exception_handlers, unavailable
from api.ratelimit import RateLimiter
from api.residents.controllers import AuthController, MeController
from api.settings import Settings, get_settings
from api.system.controllers import SystemController
from wallet.db import close_pool, start_pool
from wallet.holders.passwords import Passwords

__all__ = ["create_app"]

DESCRIPTION = """Carbon Wallet keeps each resident's carbon book (碳账本): verified, explainable records of the
CO2 they avoid, fed by partner platforms. Every error is an RFC 9457 problem document with a stable `code`.
Authenticate with `Authorization: Bearer <access token>` from `POST /v1/auth/login`."""


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await start_pool(settings.database_url, size_min=2, size_max=20)
        redis = Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        app.state.redis = redis
        app.state.rate_limiter = RateLimiter(redis)
        try:
            yield
        finally:
            await redis.aclose()
            await close_pool()

    v1 = Router(path="/", route_handlers=[AuthController, MeController])
    app = Litestar(
        route_handlers=[SystemController, v1],
        lifespan=[lifespan],
        exception_handlers={
            **exception_handlers,
            asyncpg.PostgresConnectionError: unavailable,
            asyncpg.InterfaceError: unavailable,
            asyncpg.TooManyConnectionsError: unavailable,
            RedisConnectionError: unavailable,
            RedisTimeoutError: unavailable,
        },
        middleware=[DefineMiddleware(BearerAuthMiddleware, exclude=["^/schema"])],
        plugins=[StrictStructSchemaPlugin()],
        openapi_config=OpenAPIConfig(
            title="Carbon Wallet API",
            version="0.1.0",
            description=DESCRIPTION,
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
            components=Components(
                security_schemes={
                    "BearerToken": SecurityScheme(
                        type="http", scheme="bearer", bearer_format="JWT",
                        description="Access token from POST /v1/auth/login or /v1/auth/refresh (15 minutes).",
                    )
                }
            ),
            tags=[
                Tag(name="auth", description="Register, log in, rotate and revoke tokens."),
                Tag(name="me", description="The signed-in holder: profile, devices, inbox, export, deletion."),
                Tag(name="operations", description="Liveness, readiness and metrics."),
            ],
            use_handler_docstrings=True,
        ),
        cors_config=CORSConfig(allow_origins=[], allow_headers=["Authorization", "Content-Type", "Idempotency-Key"]),
        request_max_body_size=settings.request_body_max_bytes,
        debug=False,
        logging_config=None,
    )
    app.state.settings = settings
    app.state.access_tokens = AccessTokens(
        settings.jwt_private_key_pem, issuer=settings.jwt_issuer, audience=settings.jwt_audience,
        ttl_s=settings.access_token_ttl_s,
    )
    app.state.passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib)
    install_request_context(app, log_requests=settings.access_log)
    return app
