"""Demo data for `make run`: holders, an operator and three partner platforms, loaded idempotently (a
second run changes nothing). The demo partners' secrets are published in the README: local data only."""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from api.challenges.demo import seed_challenges
from api.mall.demo import seed_mall
from api.market.demo import seed_market
from api.teams.demo import seed_friends_and_team
from notifications.devices import register_device
from wallet.accounts.service import active_sub_account, ensure_self_sub_account, link_partner
from wallet.energy.policy import configure, policy
from wallet.errors import DomainError
from wallet.holders.passwords import Passwords
from wallet.holders.roles import grant_role, holder_id_for_login
from wallet.holders.service import register_holder, update_profile
from wallet.intake.judge import SELF_SOURCE, record_reports
from wallet.intake.reports import Report, Source
from wallet.partners.service import RESIDENT_SCOPES, PartnerSpec, get_partner_by_client_id, register_partner
from wallet.sealing import SecretBox

__all__ = ["DEMO_HOLDERS", "DEMO_OPERATOR", "DEMO_PARTNERS", "DEMO_PASSWORD", "seed_demo"]

DEMO_PASSWORD = "green-demo-2026"  # noqa: S105 - published demo login, local data only


@dataclass(frozen=True)
class DemoHolder:
    login: str
    nickname: str
    city: str
    district: str
    community: str
    language: str = "zh-CN"


DEMO_HOLDERS = (
    DemoHolder("lin@demo.carbon-wallet.dev", "林小绿", "北京市", "海淀区", "中关村社区"),
    DemoHolder("13800138000", "王骑行", "北京市", "朝阳区", "望京社区"),
    DemoHolder("chen@demo.carbon-wallet.dev", "陈光盘", "上海市", "浦东新区", "陆家嘴社区"),
    DemoHolder("alex@demo.carbon-wallet.dev", "Alex", "广州市", "天河区", "珠江新城社区", language="en"),
    DemoHolder("ops@demo.carbon-wallet.dev", "运营小周", "北京市", "海淀区", "中关村社区"),
)
DEMO_OPERATOR = "ops@demo.carbon-wallet.dev"
DEMO_REDIRECT_URI = "http://localhost:8765/callback"
# A published PKCE pair for trying the flow by hand (README: For partners); real clients make a fresh one.
DEMO_CODE_VERIFIER = "carbon-wallet-demo-verifier-0123456789-abcdefghij"
DEMO_CODE_CHALLENGE = "qy0wYmDSS6rQuO3UCsnd73fCneLND2MpXs1zsuGVP6w"


@dataclass(frozen=True)
class DemoPartner:
    client_id: str
    client_secret: str | None
    webhook_secret: str
    spec: PartnerSpec


def _webhook_secret(seed: str) -> str:
    return "whsec_" + base64.b64encode(seed.encode().ljust(32, b"!")[:32]).decode()


DEMO_PARTNERS = (
    DemoPartner(
        "demo-food-delivery", "demo-food-delivery-secret", _webhook_secret("demo-food-delivery"),
        PartnerSpec(
            name="绿碗外卖", name_en="GreenBowl Delivery", kind="food_delivery", redirect_uris=[DEMO_REDIRECT_URI],
            allowed_scopes=["activities:write", "book:read", "profile:read", "ledger:read"],
            allowed_behaviours=["no_disposable_cutlery", "clean_plate"],
        ),
    ),
    DemoPartner(
        "demo-logistics", "demo-logistics-secret", _webhook_secret("demo-logistics"),
        PartnerSpec(
            name="速递物流", name_en="SwiftParcel Logistics", kind="logistics", redirect_uris=[DEMO_REDIRECT_URI],
            allowed_scopes=["activities:write", "book:read"],
            allowed_behaviours=["parcel_box_reuse", "freight_empty_mile_reduction"],
        ),
    ),
    DemoPartner(
        "demo-second-hand", None, _webhook_secret("demo-second-hand"),
        PartnerSpec(
            name="闲转", name_en="ReLoop Second-hand", kind="second_hand", client_type="public",
            redirect_uris=["com.reloop.app:/oauth/callback", DEMO_REDIRECT_URI],
            allowed_scopes=["activities:write", "profile:read"],
            allowed_behaviours=["second_hand_sale", "second_hand_purchase", "clothes_recycling"],
        ),
    ),
)


async def seed_demo(passwords: Passwords, box: SecretBox) -> int:
    """Returns how many demo holders were created now."""
    created = 0
    for demo in DEMO_HOLDERS:
        kind = "email" if "@" in demo.login else "phone"
        try:
            holder = await register_holder(
                passwords, password=DEMO_PASSWORD, nickname=demo.nickname, language=demo.language, **{kind: demo.login}
            )
        except DomainError as exc:
            if exc.code != "identity-taken":
                raise
            continue
        await update_profile(
            holder["id"],
            {"city": demo.city, "district": demo.district, "community": demo.community,
             "show_on_public_leaderboards": True},
        )
        created += 1
    await grant_role(await holder_id_for_login(DEMO_OPERATOR), "operator")
    for partner in DEMO_PARTNERS:
        if await get_partner_by_client_id(partner.client_id) is None:
            secrets = (partner.client_secret or "", partner.webhook_secret)
            await register_partner(partner.spec, box, client_id=partner.client_id, known_secrets=secrets)
    # Demo balls are ripe at once, so a fresh `make run` has energy to collect (the settings govern real ones).
    settings_policy = policy()
    configure(replace(settings_policy, ripen_s=0))
    try:
        await _demo_books()
    finally:
        configure(settings_policy)
    residents = [await holder_id_for_login(d.login) for d in DEMO_HOLDERS if d.login != DEMO_OPERATOR]
    await seed_mall(residents, await holder_id_for_login(DEMO_OPERATOR))
    await seed_friends_and_team([await holder_id_for_login(d.login) for d in DEMO_HOLDERS])
    await seed_challenges(residents)
    await seed_market(residents, await holder_id_for_login(DEMO_OPERATOR))
    # The first demo resident's phone, so the worker's log shows pushes on a fresh `make run` (no provider is
    # configured locally: pushes go to the log channel).
    await register_device(residents[0], None, "fcm", "demo-phone-fcm-registration-token-0001", "demo")
    return created


# What each demo resident did (days ago, partner client id or None for a self-report, behaviour, quantity),
# reported once with fixed event ids, so a second seed only replays them.
_DEMO_ACTIONS = (
    (1, "demo-food-delivery", "no_disposable_cutlery", 1), (2, "demo-food-delivery", "no_disposable_cutlery", 1),
    (2, "demo-food-delivery", "clean_plate", 1), (3, "demo-logistics", "parcel_box_reuse", 2),
    (5, "demo-logistics", "parcel_box_reuse", 1), (1, None, "walking_steps", 8_000), (2, None, "walking_steps", 12_500),
    (4, None, "walking_steps", 25_000), (3, "demo-second-hand", "second_hand_sale", 1),
    (6, "demo-second-hand", "clothes_recycling", 1_200), (0, "demo-food-delivery", "no_disposable_cutlery", 1),
)


async def _demo_books() -> None:
    """Demo residents link the demo partners and have a few weeks' worth of judged actions in their books,
    so the app, the verifier and the exports have something to show on a fresh `make run`."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    partners = {p.client_id: await get_partner_by_client_id(p.client_id) for p in DEMO_PARTNERS}
    for n, demo in enumerate(DEMO_HOLDERS):
        if demo.login == DEMO_OPERATOR:
            continue
        holder_id = await holder_id_for_login(demo.login)
        self_id = await ensure_self_sub_account(holder_id)
        sources: dict[str | None, Source] = {
            None: Source(holder_id, self_id, None, "self", "self_reported", SELF_SOURCE)
        }
        for client_id, partner in partners.items():
            assert partner is not None
            sub_account_id = await active_sub_account(holder_id, partner["id"])
            if sub_account_id is None:
                resident_scopes = [x for x in partner["allowed_scopes"] if x in RESIDENT_SCOPES]
                linked = await link_partner(holder_id, partner["id"], resident_scopes)
                sub_account_id = linked.sub_account_id
            sources[client_id] = Source(holder_id, sub_account_id, partner["id"], "token", partner["trust_tier"],
                                        (partner["name"], partner["name_en"]), frozenset(partner["allowed_behaviours"]))
        for i, (days, client_id, behaviour, quantity) in enumerate(_DEMO_ACTIONS):
            occurred = now - timedelta(days=days, hours=(i * 3 + n) % 10)
            report = Report(f"demo-{n}-{i}", behaviour, quantity, occurred)
            await record_reports(sources[client_id], [report])

