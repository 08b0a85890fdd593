"""Settings, read once from the environment; the README's configuration table mirrors this file."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wallet.energy.policy import EnergyPolicy
from wallet.holders.passwords import ARGON2_MEMORY_KIB_DEFAULT, ARGON2_TIME_COST_DEFAULT

__all__ = ["RateLimit", "Settings", "SettingsError", "board_zone", "get_settings", "load_settings", "resolve_data_key"]

ROOT = Path(__file__).resolve().parent.parent


class SettingsError(RuntimeError):
    """A setting is missing or malformed; the message names the variable to fix."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `count` attempts per `window_s` seconds, parsed from `"count/window_s"`."""

    count: int
    window_s: int

    @classmethod
    def parse(cls, name: str, raw: str) -> RateLimit:
        try:
            count_s, window_s = raw.split("/", 1)
            limit = cls(int(count_s), int(window_s))
        except ValueError as exc:
            raise SettingsError(f"{name} must look like COUNT/SECONDS, e.g. 10/300 (got {raw!r})") from exc
        if limit.count < 1 or limit.window_s < 1:
            raise SettingsError(f"{name} needs a positive count and window (got {raw!r})")
        return limit


@dataclass(frozen=True, slots=True)
class Settings:
    env: str
    database_url: str
    redis_url: str
    data_dir: Path
    jwt_private_key_pem: bytes = field(repr=False)
    jwt_issuer: str = "carbon-wallet"
    jwt_audience: str = "carbon-wallet:app"
    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 30 * 86400
    request_body_max_bytes: int = 64 * 1024
    login_limit_per_account: RateLimit = RateLimit(10, 300)
    login_limit_per_ip: RateLimit = RateLimit(60, 300)
    register_limit_per_ip: RateLimit = RateLimit(20, 3600)
    trust_forwarded_for: bool = False
    argon2_time_cost: int = ARGON2_TIME_COST_DEFAULT
    argon2_memory_kib: int = ARGON2_MEMORY_KIB_DEFAULT
    log_level: str = "INFO"
    access_log: bool = True
    data_key: bytes = field(default=b"", repr=False)
    partner_token_ttl_s: int = 3600
    partner_refresh_token_ttl_s: int = 90 * 86400
    authorization_code_ttl_s: int = 60
    public_url: str = ""
    secret_rotation_overlap_s: int = 7 * 86400
    energy: EnergyPolicy = field(default_factory=EnergyPolicy)
    leaderboard_time_zone: str = "Asia/Shanghai"

    @property
    def leaderboard_zone(self) -> ZoneInfo:
        return ZoneInfo(self.leaderboard_time_zone)

    @property
    def production(self) -> bool:
        return self.env == "production"


ENERGY = EnergyPolicy()  # the published defaults


def _int(env: dict[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer (got {raw!r})") from exc
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum} (got {value})")
    return value


def _zone(env: dict[str, str], name: str, default: str) -> str:
    raw = (env.get(name) or "").strip() or default
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SettingsError(f"{name} must be an IANA time zone such as Asia/Shanghai (got {raw!r})") from exc
    return raw


def board_zone(environ: dict[str, str] | None = None) -> ZoneInfo:
    """The boards' time zone alone, for modules wired at import (the worker's cron hours, outbox handlers);
    the same reading `load_settings` makes."""
    return ZoneInfo(_zone(dict(os.environ if environ is None else environ), "CW_LEADERBOARD_TIME_ZONE",
                          "Asia/Shanghai"))


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be true or false (got {raw!r})")


def _jwt_key(env: dict[str, str], production: bool, data_dir: Path) -> bytes:
    """Production must bring its key; a local run generates one Ed25519 key into the data folder once."""
    pem = env.get("CW_JWT_PRIVATE_KEY", "").strip()
    if pem:
        return pem.encode()
    if production:
        raise SettingsError("CW_JWT_PRIVATE_KEY (an Ed25519 private key in PEM) is required when CW_ENV=production")
    from api.auth.keys import ensure_local_signing_key

    return ensure_local_signing_key(data_dir / "secrets" / "jwt-ed25519.pem")


def resolve_data_key(env: dict[str, str], production: bool, data_dir: Path) -> bytes:
    """CW_DATA_KEY, or in a local run the key generated once into the data folder."""
    from wallet.sealing import ensure_local_data_key, parse_data_key

    raw = env.get("CW_DATA_KEY", "").strip()
    if raw:
        try:
            return parse_data_key(raw)
        except ValueError as exc:
            raise SettingsError(f"CW_DATA_KEY: {exc}") from exc
    if production:
        raise SettingsError("CW_DATA_KEY (base64 of 32 random bytes) is required when CW_ENV=production")
    return ensure_local_data_key(data_dir / "secrets" / "data-key")


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if environ is None else environ)
    mode = env.get("CW_ENV", "local").strip() or "local"
    if mode not in {"local", "test", "production"}:
        raise SettingsError(f"CW_ENV must be local, test or production (got {mode!r})")
    production = mode == "production"
    database_url = env.get("DATABASE_URL", "").strip()
    redis_url = env.get("REDIS_URL", "").strip()
    if not database_url:
        raise SettingsError("DATABASE_URL is not set: `make run` starts an embedded PostgreSQL and sets it for you")
    if not redis_url:
        raise SettingsError("REDIS_URL is not set: `make run` starts an embedded Valkey and sets it for you")
    public_url = (env.get("CW_PUBLIC_URL") or "").strip().rstrip("/")
    if public_url and not public_url.startswith(("https://", "http://")):
        raise SettingsError(f"CW_PUBLIC_URL must be an absolute http(s) URL (got {public_url!r})")
    if production and not public_url.startswith("https://"):
        raise SettingsError("CW_PUBLIC_URL (the https URL residents and partners reach) is required in production")
    data_dir = Path(env.get("CW_DATA_DIR") or ROOT / ".data").resolve()
    limits = {
        name: RateLimit.parse(name, env[name])
        for name in ("CW_LOGIN_LIMIT_PER_ACCOUNT", "CW_LOGIN_LIMIT_PER_IP", "CW_REGISTER_LIMIT_PER_IP")
        if env.get(name)
    }
    defaults = Settings.__dataclass_fields__
    return Settings(
        env=mode,
        database_url=database_url,
        redis_url=redis_url,
        data_dir=data_dir,
        jwt_private_key_pem=_jwt_key(env, production, data_dir),
        jwt_issuer=env.get("CW_JWT_ISSUER") or defaults["jwt_issuer"].default,
        access_token_ttl_s=_int(env, "CW_ACCESS_TOKEN_TTL_S", 900, minimum=30),
        refresh_token_ttl_s=_int(env, "CW_REFRESH_TOKEN_TTL_S", 30 * 86400, minimum=60),
        request_body_max_bytes=_int(env, "CW_REQUEST_BODY_MAX_BYTES", 64 * 1024, minimum=1024),
        login_limit_per_account=limits.get("CW_LOGIN_LIMIT_PER_ACCOUNT", RateLimit(10, 300)),
        login_limit_per_ip=limits.get("CW_LOGIN_LIMIT_PER_IP", RateLimit(60, 300)),
        register_limit_per_ip=limits.get("CW_REGISTER_LIMIT_PER_IP", RateLimit(20, 3600)),
        trust_forwarded_for=_bool(env, "CW_TRUST_FORWARDED_FOR", False),
        argon2_time_cost=_int(env, "CW_ARGON2_TIME_COST", ARGON2_TIME_COST_DEFAULT),
        argon2_memory_kib=_int(
            env, "CW_ARGON2_MEMORY_KIB", ARGON2_MEMORY_KIB_DEFAULT, minimum=8 * 1024 if production else 64
        ),
        log_level=(env.get("CW_LOG_LEVEL") or "INFO").upper(),
        access_log=_bool(env, "CW_ACCESS_LOG", True),
        data_key=resolve_data_key(env, production, data_dir),
        partner_token_ttl_s=_int(env, "CW_PARTNER_TOKEN_TTL_S", 3600, minimum=30),
        partner_refresh_token_ttl_s=_int(env, "CW_PARTNER_REFRESH_TOKEN_TTL_S", 90 * 86400, minimum=60),
        authorization_code_ttl_s=_int(env, "CW_AUTHORIZATION_CODE_TTL_S", 60, minimum=5),
        public_url=public_url,
        secret_rotation_overlap_s=_int(env, "CW_SECRET_ROTATION_OVERLAP_S", 7 * 86400, minimum=0),
        leaderboard_time_zone=_zone(env, "CW_LEADERBOARD_TIME_ZONE", "Asia/Shanghai"),
        energy=EnergyPolicy(
            ripen_s=_int(env, "CW_ENERGY_RIPEN_S", ENERGY.ripen_s, minimum=0),
            window_s=_int(env, "CW_ENERGY_WINDOW_S", ENERGY.window_s, minimum=60),
            friend_help_daily_cap=_int(env, "CW_ENERGY_FRIEND_HELP_DAILY_CAP", ENERGY.friend_help_daily_cap,
                                       minimum=0),
        ),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
