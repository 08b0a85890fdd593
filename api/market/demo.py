"""Demo carbon market for `make run`: a programme pooling the demo partners' verified reports, three demo residents
who opted in (Alex did not), one lot sold at ¥85 a tonne with a 10% public-benefit share, and one lot still open for
an operator to try a sale. Idempotent: nothing is made when the programme exists."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from wallet.errors import DomainError
from wallet.market.lots import create_lot, eligible_summary
from wallet.market.programmes import create_programme, get_programme
from wallet.market.sales import record_sale, settle_sale
from wallet.market.statements import set_consent

__all__ = ["DEMO_PROGRAMME", "seed_market"]

DEMO_PROGRAMME = "demo-green-life-2026"


async def seed_market(residents: list[uuid.UUID], operator: uuid.UUID) -> None:
    try:
        await get_programme(DEMO_PROGRAMME)
        return
    except DomainError:
        pass
    today = date.today()
    await create_programme({
        "code": DEMO_PROGRAMME, "name_zh": "绿色生活碳普惠（演示）", "name_en": "Green life carbon inclusion (demo)",
        "exchange_zh": "北京绿色交易所", "exchange_en": "China Beijing Green Exchange",
        "behaviours": ["no_disposable_cutlery", "parcel_box_reuse", "second_hand_sale", "clothes_recycling"],
        "trust_tiers": ["verified"], "period_from": today - timedelta(days=60), "period_to": today + timedelta(days=30),
        "settle_days": 0, "benefit_ppm": 100_000, "benefit_name_zh": "社区植树计划",
        "benefit_name_en": "Community tree planting", "benefit_url": "https://demo.carbon-wallet.dev/trees",
    })
    for holder in residents[:3]:
        await set_consent(holder, True)
    pool = (await eligible_summary(DEMO_PROGRAMME))["reduction_mg"]
    if pool < 2:
        return
    sold, _ = await create_lot(operator, DEMO_PROGRAMME, pool * 2 // 3, note="演示：已售出 / demo: sold",
                               idempotency_key="demo-lot-1")
    sale, _ = await record_sale(operator, sold["id"], buyer="绿色出行科技有限公司 (demo buyer)",
                                exchange_ref="DEMO-CBEEX-0001", sale_date=today, price_per_tonne_fen=8_500)
    await settle_sale(sale["id"])
    rest = (await eligible_summary(DEMO_PROGRAMME))["reduction_mg"]
    if rest:
        await create_lot(operator, DEMO_PROGRAMME, rest, note="演示：待售 / demo: for sale",
                         idempotency_key="demo-lot-2")
