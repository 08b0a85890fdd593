"""The app factory: every resource (database pool, Redis client, key material) is created in the app's
own lifespan, on the event loop that serves requests (Litestar 2's test clients use another loop)."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, OAuthFlow, OAuthFlows, SecurityScheme, Tag
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template import TemplateConfig
from redis.asyncio import Redis

from api.accounts.controllers import AccountsController
from api.auth.middleware import BearerAuthMiddleware
from api.auth.tokens import AccessTokens, PartnerTokens
from api.book.controllers import BookController
from api.challenges.controllers import ChallengeAdminController, ChallengesController, MyChallengesController
from api.donations.controllers import DonationsController, MyDonationsController
from api.energy.controllers import EnergyController, FriendEnergyController
from api.friends.controllers import BlocksController, FriendsController
from api.leaderboards.controllers import (
    LeaderboardAdminController,
    MyLeaderboardsController,
    PublicLeaderboardsController,
)
from api.ledgers.controllers import LedgersController, PartnerLedgerController
from api.mall.admin import LedgerAdminController, MallAdminController, ProjectAdminController
from api.mall.controllers import MallController, RedemptionsController
from api.market.admin import MarketAdminController
from api.market.controllers import MarketController, MyMarketController
from api.methodology.controllers import MethodologyController
from api.notifications.controllers import DeadLetterController, NotificationsController
from api.notifications.stream import LiveController, live_plugin
from api.oauth.controllers import MetadataController, OAuthController
from api.oauth.web import WEB_SESSION_TTL_S, ConsentTokens
from api.observability import configure_logging, install_request_context
from api.openapi import StrictStructSchemaPlugin
from api.pages.controllers import PagesController
from api.partners.admin import PartnerAdminController
from api.partners.controllers import PartnerApiController, PushController
from api.problems import BACKING_ERRORS, exception_handlers, unavailable
from api.progress.controllers import ProgressController
from api.ratelimit import RateLimiter
from api.residents.controllers import AuthController, MeController
from api.review.controllers import CorrectionsController, ReviewController
from api.settings import Settings, get_settings
from api.system.controllers import SystemController
from api.teams.admin import TeamAdminController
from api.teams.controllers import TeamController
from wallet.db import close_pool, start_pool
from wallet.energy.policy import configure as configure_energy
from wallet.holders.passwords import Passwords
from wallet.mall.merchant import MerchantClient
from wallet.sealing import SecretBox

__all__ = ["create_app"]

TEMPLATES = Path(__file__).parent / "oauth" / "templates"
PAGE_TEMPLATES = Path(__file__).parent / "templates"  # the public pages: templates/pages/*.html.j2
PARTNER_AUDIENCE = "carbon-wallet:partner-api"
WEB_AUDIENCE = "carbon-wallet:web"
SCOPE_SUMMARIES = {
    "activities:write": "Report this resident's green actions",
    "book:read": "Read this resident's totals from your platform",
    "profile:read": "Read this resident's nickname",
}

DESCRIPTION = """Carbon Wallet keeps each resident's carbon book (碳账本): verified, explainable records of the
CO2 they avoid, fed by partner platforms. Every error is an RFC 9457 problem document with a stable `code`.
Residents authenticate with `Authorization: Bearer <access token>` from `POST /v1/auth/login`; partner
platforms with an OAuth 2 token (authorization code + PKCE S256, metadata at
`/.well-known/oauth-authorization-server`)."""


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        configure_energy(settings.energy)
        await start_pool(settings.database_url, size_min=2, size_max=20)
        redis = Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        app.state.redis = redis
        app.state.rate_limiter = RateLimiter(redis)
        # Everything built so far (the app, its routes and schemas, imported modules: ~110,000 objects) lives
        # as long as the process. Frozen, the collector stops walking it: a full collection took 30-40 ms, a
        # pause every request waiting behind it shared (the leaderboard benchmark's p99).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await redis.aclose()
            await close_pool()

    v1 = Router(
        path="/",
        route_handlers=[AuthController, MeController, AccountsController, BookController, MethodologyController],
    )
    partners = Router(
        path="/", route_handlers=[PartnerApiController, PushController, PartnerAdminController, ReviewController,
                        CorrectionsController]
    )
    energy = Router(
        path="/", route_handlers=[EnergyController, FriendEnergyController, MallController, RedemptionsController,
                                  DonationsController, MyDonationsController, MallAdminController,
                                  ProjectAdminController, LedgerAdminController, MyLeaderboardsController,
                                  PublicLeaderboardsController, LeaderboardAdminController, ProgressController,
                                  ChallengesController, MyChallengesController, ChallengeAdminController]
    )
    oauth = Router(path="/", route_handlers=[MetadataController, OAuthController])
    social = Router(path="/", route_handlers=[FriendsController, BlocksController, TeamController, TeamAdminController])
    notifications = Router(path="/", route_handlers=[NotificationsController, DeadLetterController, LiveController,
                                                     LedgersController, PartnerLedgerController])
    market = Router(path="/", route_handlers=[MarketController, MyMarketController, MarketAdminController])
    app = Litestar(
        route_handlers=[SystemController, PagesController, v1, partners, energy, oauth, social, notifications,
                        market],
        lifespan=[lifespan],
        exception_handlers={
            **exception_handlers,
            **dict.fromkeys(BACKING_ERRORS, unavailable),
        },
        middleware=[DefineMiddleware(BearerAuthMiddleware, exclude=["^/schema"])],
        # The live stream's pub/sub gets a Redis client of its own: plugins exist before the lifespan runs.
        plugins=[StrictStructSchemaPlugin(), live_plugin(Redis.from_url(settings.redis_url, socket_connect_timeout=2))],
        openapi_config=OpenAPIConfig(
            title="Carbon Wallet API",
            version="0.8.0",
            description=DESCRIPTION,
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
            components=Components(
                security_schemes={
                    "BearerToken": SecurityScheme(
                        type="http", scheme="bearer", bearer_format="JWT",
                        description="Access token from POST /v1/auth/login or /v1/auth/refresh (15 minutes).",
                    ),
                    "PartnerToken": SecurityScheme(
                        type="oauth2",
                        description="A partner's access token from POST /oauth/token: for a resident (authorization "
                                    "code + PKCE), or the partner's own (client credentials, ledger:read).",
                        flows=OAuthFlows(
                            authorization_code=OAuthFlow(
                                authorization_url="/oauth/authorize", token_url="/oauth/token",  # noqa: S106 - a path
                                refresh_url="/oauth/token", scopes=dict(SCOPE_SUMMARIES),
                            ),
                            client_credentials=OAuthFlow(
                                token_url="/oauth/token",  # noqa: S106 - a path
                                scopes={"ledger:read": "Read your platform's enterprise ledger (your own token)"},
                            ),
                        ),
                    ),
                }
            ),
            tags=[
                Tag(name="auth", description="Register, log in, rotate and revoke tokens."),
                Tag(name="me", description="The signed-in holder: profile, devices, inbox, export, deletion."),
                Tag(name="book", description="My carbon book: totals, charts, entries, verdicts, verification."),
                Tag(name="methodology", description="The published behaviour catalogue."),
                Tag(name="energy", description="My green energy: balances, energy balls, friends helping, statement."),
                Tag(name="mall", description="Rewards to redeem energy for, and my redemptions (two-phase)."),
                Tag(name="donations", description="Projects residents give energy to, and their certificates."),
                Tag(name="market", description="The carbon market: programmes, lots sold on an exchange, my choice to "
                                               "have my reductions sold, my statement; operators run lots and sales."),
                Tag(name="challenges", description="Collective goals for a team, community or city."),
                Tag(name="progress", description="My level, daily green streak and badges."),
                Tag(name="leaderboards", description="Boards by period and scope, my rank, friends, per capita."),
                Tag(name="friends", description="My friends: invite codes, requests by phone or e-mail, blocks."),
                Tag(name="teams", description="My team (a company or organisation) and department."),
                Tag(name="partner API", description="Partners acting for residents who linked them (OAuth 2)."),
                Tag(name="oauth", description="The OAuth 2 authorization server partners link through."),
                Tag(name="admin", description="Operators: partners, review queue, mall, projects, ledger check."),
                Tag(name="operations", description="Liveness, readiness and metrics."),
            ],
            use_handler_docstrings=True,
        ),
        cors_config=CORSConfig(allow_origins=[], allow_headers=["Authorization", "Content-Type", "Idempotency-Key"]),
        request_max_body_size=settings.request_body_max_bytes,
        template_config=TemplateConfig(directory=[TEMPLATES, PAGE_TEMPLATES], engine=JinjaTemplateEngine),
        debug=False,
        logging_config=None,
    )
    app.state.settings = settings
    app.state.access_tokens = AccessTokens(
        settings.jwt_private_key_pem, issuer=settings.jwt_issuer, audience=settings.jwt_audience,
        ttl_s=settings.access_token_ttl_s,
    )
    app.state.partner_tokens = PartnerTokens(
        settings.jwt_private_key_pem, issuer=settings.jwt_issuer, audience=PARTNER_AUDIENCE,
        ttl_s=settings.partner_token_ttl_s,
    )
    app.state.web_tokens = AccessTokens(
        settings.jwt_private_key_pem, issuer=settings.jwt_issuer, audience=WEB_AUDIENCE, ttl_s=WEB_SESSION_TTL_S
    )
    app.state.consent_tokens = ConsentTokens(settings.jwt_private_key_pem, settings.jwt_issuer)
    app.state.secret_box = SecretBox(settings.data_key)
    app.state.merchant = MerchantClient(app.state.secret_box)
    app.state.passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib)
    install_request_context(app, log_requests=settings.access_log)
    return app
