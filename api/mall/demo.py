"""Demo mall and projects for `make run`: rewards a resident of a Chinese city would recognise, two projects
with a collective goal and one already met, and demo residents who collected energy, redeemed and donated.
Idempotent: codes and idempotency keys are fixed, so a second seed changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

from wallet.db import connection
from wallet.donations.service import complete_if_met, create_project, donate
from wallet.energy.awards import award
from wallet.energy.balls import collect
from wallet.errors import DomainError
from wallet.mall.catalogue import create_reward, load_vouchers
from wallet.mall.redeem import fulfil, reserve

__all__ = ["seed_mall"]

_IMG = "https://static.demo.carbon-wallet.dev/mall/"

DEMO_REWARDS: tuple[dict[str, Any], ...] = (
    {"code": "metro-ride-2", "title_zh": "地铁乘车券 2元", "title_en": "Metro ride voucher, ¥2",
     "description_zh": "乘地铁时抵扣2元车费，30天内有效。",
     "description_en": "Takes ¥2 off a metro fare; valid 30 days.",
     "merchant_zh": "城市轨道交通", "merchant_en": "City Metro", "category": "transit", "price": 200, "stock": 5000,
     "per_day_limit": 2, "images": [_IMG + "metro.png"]},
    {"code": "bike-month-pass", "title_zh": "共享单车月卡", "title_en": "Bike-share monthly pass",
     "description_zh": "30天内每次骑行前30分钟免费。",
     "description_en": "The first 30 minutes of every ride free for 30 days.",
     "merchant_zh": "青骑单车", "merchant_en": "GreenRide Bikes", "category": "bike", "price": 1500, "stock": 1000,
     "lifetime_limit": 3, "per_day_limit": 1, "images": [_IMG + "bike.png"]},
    {"code": "americano", "title_zh": "美式咖啡券", "title_en": "Americano voucher",
     "description_zh": "门店出示券码兑换一杯中杯美式，自带杯再减2元。",
     "description_en": "One medium americano at the counter; ¥2 off more if you bring your own cup.",
     "merchant_zh": "绿豆咖啡", "merchant_en": "Green Bean Coffee", "category": "coffee", "price": 800, "stock": 300,
     "per_day_limit": 1, "images": [_IMG + "coffee.png"]},
    {"code": "parking-1h", "title_zh": "1小时停车券", "title_en": "One hour of parking",
     "description_zh": "市内合作停车场通用。", "description_en": "At partner car parks across the city.",
     "merchant_zh": "城市停车", "merchant_en": "City Parking", "category": "parking", "price": 600, "stock": None,
     "per_day_limit": 1, "images": [_IMG + "parking.png"]},
    {"code": "ev-charging-10kwh", "title_zh": "充电10度券", "title_en": "10 kWh of EV charging",
     "description_zh": "公共充电桩充电抵扣10度电。", "description_en": "10 kWh at public charging points.",
     "merchant_zh": "绿电充电", "merchant_en": "GreenVolt Charging", "category": "charging", "price": 2500,
     "fulfilment": "pool", "lifetime_limit": 2, "images": [_IMG + "charging.png"]},
    {"code": "canvas-bag", "title_zh": "帆布购物袋", "title_en": "Canvas shopping bag",
     "description_zh": "告别一次性塑料袋，快递到家。",
     "description_en": "Say goodbye to single-use bags; delivered home.",
     "merchant_zh": "绿碗外卖", "merchant_en": "Green Bowl Delivery", "category": "goods", "price": 2000,
     "stock": 10, "lifetime_limit": 1, "images": [_IMG + "bag.png"]},
    {"code": "bamboo-toothbrush", "title_zh": "竹柄牙刷", "title_en": "Bamboo toothbrush",
     "merchant_zh": "闲转好物", "merchant_en": "Xianzhuan Goods", "category": "goods", "price": 500, "stock": 0,
     "images": [_IMG + "toothbrush.png"]},
)
_CHARGING_CODES = [f"GV-DEMO-{n:04d}" for n in range(1, 21)]

DEMO_PROJECTS: tuple[dict[str, Any], ...] = (
    {"code": "community-wind-turbine", "title_zh": "社区风力发电机", "title_en": "A community wind turbine",
     "description_zh": "居民们一起攒能量，为社区建一台小型风力发电机，为路灯和充电桩供电。",
     "description_en": "Residents pool energy to build a small wind turbine powering street lights and chargers.",
     "outcome_zh": "建成一台2千瓦社区风机", "outcome_en": "A 2 kW community wind turbine is built",
     "goal": 100_000_000, "images": [_IMG + "turbine.png"]},
    {"code": "saxaul-tree", "title_zh": "在阿拉善种一棵梭梭树", "title_en": "Plant a saxaul tree in Alxa",
     "description_zh": "梭梭树能固沙防风，一棵需要17,900能量。",
     "description_en": "Saxaul holds the sand; one tree takes 17,900 energy.",
     "outcome_zh": "种下一棵梭梭树", "outcome_en": "One saxaul tree is planted", "goal": 17_900,
     "images": [_IMG + "saxaul.png"]},
    {"code": "school-solar-lamp", "title_zh": "为乡村小学点亮一盏太阳能灯",
     "title_en": "A solar lamp for a village school",
     "outcome_zh": "一盏太阳能路灯已安装", "outcome_en": "A solar street lamp is installed", "goal": 1_000,
     "images": [_IMG + "lamp.png"]},
)


async def _ensure_catalogue() -> tuple[dict[str, int], dict[str, int]]:
    async with connection() as conn:
        rewards = {r["code"]: r["id"] for r in await conn.fetch("SELECT id, code FROM reward")}
        projects = {r["code"]: r["id"] for r in await conn.fetch("SELECT id, code FROM donation_project")}
    for spec in DEMO_REWARDS:
        if spec["code"] not in rewards:
            rewards[spec["code"]] = (await create_reward(dict(spec)))["id"]
            if spec.get("fulfilment") == "pool":
                await load_vouchers(rewards[spec["code"]], _CHARGING_CODES)
    for spec in DEMO_PROJECTS:
        if spec["code"] not in projects:
            projects[spec["code"]] = (await create_project(dict(spec)))["id"]
    return rewards, projects


async def _ripe_balls(holder_id: uuid.UUID) -> list[tuple[int, Any]]:
    async with connection() as conn:
        rows = await conn.fetch(
            """SELECT b.id, e.local_day FROM energy_ball b JOIN book_entry e ON e.id = b.entry
               WHERE b.holder = $1 AND b.state = 'growing' AND b.ripens_at <= now() ORDER BY b.id""",
            holder_id,
        )
    return [(r["id"], r["local_day"]) for r in rows]


async def seed_mall(residents: list[uuid.UUID], operator_id: uuid.UUID) -> None:
    """Every demo resident collects all but their newest balls (some stay ripe to collect in the app), gets a
    welcome award, redeems a metro ride and gives to the school lamp, which meets its goal."""
    rewards, projects = await _ensure_catalogue()
    for n, holder_id in enumerate(residents):
        balls = await _ripe_balls(holder_id)
        newest = max((day for _, day in balls), default=None)
        for ball_id, day in balls:
            if day != newest:
                await collect(holder_id, ball_id)
        await award(holder_id, 3000, reason="新用户欢迎礼 · Welcome gift", operator_id=operator_id, key="demo-welcome")
        try:
            redemption, created = await reserve(holder_id, rewards["metro-ride-2"], idempotency_key="demo-metro")
            if created:
                await fulfil(redemption["id"], None)
            await donate(holder_id, projects["community-wind-turbine"], 500, idempotency_key="demo-turbine")
            await donate(holder_id, projects["school-solar-lamp"], 250 + 50 * n, idempotency_key="demo-lamp")
        except DomainError as exc:  # the lamp may be complete already on a later seed; nothing else is expected
            if exc.code != "project-completed":
                raise
    await complete_if_met(projects["school-solar-lamp"])
