"""Piccolo's entry point: one PostgreSQL engine from DATABASE_URL and the apps that own tables."""

from __future__ import annotations

import os

from piccolo.conf.apps import AppRegistry
from piccolo.engine.postgres import PostgresEngine

DB = PostgresEngine(
    config={"dsn": os.environ.get("DATABASE_URL", "postgresql://postgres@localhost/carbon_wallet")},
    extensions=(),
)

APP_REGISTRY = AppRegistry(
    apps=[
        "wallet.piccolo_app",
        "notifications.piccolo_app",
        "gamification.piccolo_app",
        "api.auth.piccolo_app",
        "api.oauth.piccolo_app",
    ]
)
