"""Demo data for `make run`: a few holders, loaded idempotently (a second run changes nothing)."""

from __future__ import annotations

from dataclasses import dataclass

from wallet.errors import DomainError
from wallet.holders.passwords import Passwords
from wallet.holders.service import register_holder, update_profile

__all__ = ["DEMO_HOLDERS", "DEMO_PASSWORD", "seed_demo"]

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
)


async def seed_demo(passwords: Passwords) -> int:
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
    return created
