"""Setup and workload for bench/intake.py: the bench partner, its linked residents, and what they report.

The workload is chosen so that nearly every activity is *credited*, the full-cost path (verdict, book entry,
chain hash, outbox event): behaviours without an exclusivity group (overlapping transport trips would be
duplicates), quantities far below the daily and monthly caps, occurred_at spread over the last 25 days, a
fresh event id for every activity, and requests rotating over hundreds of residents.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx

from bench.run import PASSWORD

REDIRECT_URI = "https://bench.example/oauth/callback"
SCOPES = ["activities:write"]
ZONE = ZoneInfo("Asia/Shanghai")  # the default time zone of a new holder: caps count in this local day
SPREAD = timedelta(days=25)  # inside the 30-day reporting window, across a month boundary most of the year
POOL_SIZE = 4099  # prime, so request variants and resident rotation do not fall into step

# Behaviour -> (smallest, largest) quantity of one activity: non-transport (no exclusivity group), trust tier
# at most `verified` (the bench partner's), and small enough that a resident can take over a thousand of each a
# month and a hundred a day before a cap bites (`headroom` checks this against the catalogue at start).
MIX: dict[str, tuple[int, int]] = {
    "home_electricity_saved": (10, 100),  # Wh
    "home_water_saved": (1, 10),  # l
    "home_gas_saved": (5, 50),  # l
    "green_electricity_purchase": (50, 500),  # Wh
    "rooftop_solar_generation": (200, 2000),  # Wh
    "waste_sorting": (20, 100),  # g
    "clothes_recycling": (20, 60),  # g
    "freight_empty_mile_reduction": (200, 1500),  # m
    "double_sided_printing": (1, 5),  # sheets
}


@dataclass(frozen=True)
class Resident:
    holder_id: uuid.UUID
    sub_account_id: uuid.UUID
    token: str  # a partner access token acting for this resident ("" for residents only raw PG writes for)


@dataclass(frozen=True, slots=True)
class Item:
    behaviour: str
    quantity: int
    occurred_at: datetime


def item_pool(now: datetime, size: int = POOL_SIZE, seed: int = 4) -> list[Item]:
    """What requests draw their activities from (unit n, item i -> pool[(n x batch + i) mod size]): built once,
    so neither the generator nor the in-process baselines spend time on random numbers while measuring."""
    rng, codes = random.Random(seed), sorted(MIX)
    return [
        Item(code, rng.randint(*MIX[code]), now - timedelta(seconds=rng.randint(600, int(SPREAD.total_seconds()))))
        for code in (rng.choice(codes) for _ in range(size))
    ]


def headroom() -> dict[str, tuple[int, int]]:
    """Per behaviour: how many activities of the largest quantity one resident can be credited a day and a month
    (catalogue's current version). Refuses a mix that would be judged as anything but credited by design."""
    from wallet.methodology.catalogue import current_version

    out = {}
    for code, (_, largest) in MIX.items():
        v = current_version(code)
        if v.exclusivity_group or v.trust_tier == "self_reported" or (v.plausibility.max_quantity or largest) < largest:
            raise ValueError(f"{code} does not fit the bench's mix")
        out[code] = (v.daily_cap // largest if v.daily_cap else 10**9,
                     v.monthly_cap // largest if v.monthly_cap else 10**9)
        if min(out[code]) < 100:
            raise ValueError(f"{code}: caps leave room for only {min(out[code])} activities")
    return out


# -- the partner -------------------------------------------------------------------------------------------


async def call(http: httpx.AsyncClient, method: str, url: str, status: int, **kw: Any) -> httpx.Response:
    r = await http.request(method, url, **kw)
    if r.status_code != status:
        raise RuntimeError(f"{method} {url.split('?')[0]}: {r.status_code} {r.text[:500]}")
    return r


async def create_partner(http: httpx.AsyncClient, stamp: str) -> tuple[dict[str, Any], str]:
    """An operator (role granted in-process, as the CLI does) registers the partner through the admin API: trust
    tier `verified`, every behaviour of the mix allowed, limits so high that neither the per-minute limit nor the
    daily quota ever refuses a benchmark request."""
    from wallet.holders.roles import grant_role

    body = {"email": f"bench-operator-{stamp}@example.com", "password": PASSWORD, "device_name": "bench"}
    operator = (await call(http, "POST", "/v1/auth/register", 201, json=body)).json()
    await grant_role(uuid.UUID(operator["holder_id"]), "operator")
    created = (await call(http, "POST", "/v1/admin/partners", 201, json={
        "name": f"Bench partner {stamp}", "name_en": "Bench partner", "kind": "other", "redirect_uris": [REDIRECT_URI],
        "allowed_scopes": SCOPES, "allowed_behaviours": sorted(MIX), "trust_tier": "verified",
        "rate_limit_per_minute": 10_000_000, "daily_quota": 10_000_000,
    }, headers={"Authorization": f"Bearer {operator['access_token']}"})).json()
    return created["partner"], created["client_secret"]


# -- residents ---------------------------------------------------------------------------------------------


def _field(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    if match is None:
        raise RuntimeError(f"no {name} field in the page")
    return match.group(1)


async def link_in_browser(base_url: str, client_id: str, client_secret: str, email: str) -> Resident:
    """The real flow, for a few residents: sign up, link the way a phone's web view does (log in, approve the
    consent page), then exchange the code as the partner's server would (confidential client, PKCE S256)."""
    verifier = secrets.token_urlsafe(48)[:64]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    authorize = "/oauth/authorize?" + str(httpx.QueryParams({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": " ".join(SCOPES),
        "state": "bench", "code_challenge": challenge, "code_challenge_method": "S256",
    }))
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as web:  # the resident's own cookie jar
        body = {"email": email, "password": PASSWORD, "device_name": "bench"}
        holder_id = (await call(web, "POST", "/v1/auth/register", 201, json=body)).json()["holder_id"]
        page = await call(web, "GET", "/oauth/login", 200, params={"next": authorize})
        form = {"login": email, "password": PASSWORD, "csrf": _field(page.text, "csrf"), "next": authorize}
        logged = await call(web, "POST", "/oauth/login", 303, data=form)
        consent = await call(web, "GET", logged.headers["location"], 200)
        form = {"consent_token": _field(consent.text, "consent_token"), "decision": "approve"}
        decided = await call(web, "POST", "/oauth/authorize", 303, data=form)
        code = parse_qs(urlsplit(decided.headers["location"]).query)["code"][0]
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier}
        token = (await call(web, "POST", "/oauth/token", 200, data=form, auth=(client_id, client_secret))).json()
    return Resident(uuid.UUID(holder_id), uuid.UUID(token["sub_account_id"]), token["access_token"])


async def link_in_process(env: dict[str, str], partner: dict[str, Any], emails: Sequence[str], *,
                          tokens: bool = True, parallel: int = 8) -> list[Resident]:
    """The same rows the browser flow leaves, written through the service functions it ends in: holder (one
    argon2 hash with the production parameters, shared by all: signing up is not what this bench measures),
    sub-account and consent (`link_partner`), code and grant (`issue_code`, `exchange_code`), and an access token
    signed with the API's own key. Hundreds of residents in seconds instead of minutes."""
    from api.app import PARTNER_AUDIENCE
    from api.auth.tokens import PartnerTokens
    from api.oauth.grants import exchange_code, issue_code, pkce_challenge
    from api.settings import load_settings
    from wallet.accounts.service import link_partner
    from wallet.holders.passwords import Passwords
    from wallet.holders.service import Registration, insert_holder

    settings = load_settings(env)
    signer = PartnerTokens(settings.jwt_private_key_pem, issuer=settings.jwt_issuer, audience=PARTNER_AUDIENCE,
                           ttl_s=settings.partner_token_ttl_s)
    password_hash = await Passwords(settings.argon2_time_cost, settings.argon2_memory_kib).hash(PASSWORD)
    partner_id, gate = uuid.UUID(partner["id"]), asyncio.Semaphore(parallel)

    async def one(email: str) -> Resident:
        async with gate:
            holder_id = uuid.uuid4()
            await insert_holder(Registration(holder_id, email, None, password_hash, email.split("@")[0][:40],
                                             str(ZONE), "zh-CN"))
            link = await link_partner(holder_id, partner_id, SCOPES)
            if not tokens:
                return Resident(holder_id, link.sub_account_id, "")
            verifier = secrets.token_urlsafe(48)
            code = await issue_code(partner_id=partner_id, holder_id=holder_id, sub_account_id=link.sub_account_id,
                                    redirect_uri=REDIRECT_URI, scopes=SCOPES, code_challenge=pkce_challenge(verifier),
                                    ttl_s=60)
            grant = await exchange_code(partner_id, code, redirect_uri=REDIRECT_URI, code_verifier=verifier,
                                        refresh_ttl_s=settings.partner_refresh_token_ttl_s)
            token, _ = signer.issue(link.sub_account_id, grant.grant_id, partner["client_id"], grant.scopes)
            return Resident(holder_id, link.sub_account_id, token)

    return list(await asyncio.gather(*(one(e) for e in emails)))
