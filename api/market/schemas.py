"""The carbon market's request and response shapes. Grams are mg CO2e, money is fen (¥1 = 100 fen), all integers."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

import msgspec

from api.residents.schemas import Input
from wallet.market.programmes import Programme
from wallet.methodology.catalogue import TrustTier

__all__ = [
    "ConsentIn", "ConsentOut", "EligibleOut", "LotCancel", "LotCreate", "LotOut", "MyLotEntry", "MyLotOut",
    "MyMarketOut", "ProgrammeCreate", "ProgrammeOut", "PublicLotOut", "SaleCancel", "SaleCreate", "SaleOut",
    "lot_out", "programme_out", "public_lot_out", "sale_out",
]

Text120 = Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
Behaviour = Annotated[str, msgspec.Meta(max_length=80, examples=["metro_ride@1"])]


class ProgrammeCreate(Input, kw_only=True):
    """Rules never change once created. `behaviours` lists `code@version` (a bare code takes every version the
    methodology has now); `methodology_releases` defaults to all published releases, `trust_tiers` to verified."""

    code: Annotated[str, msgspec.Meta(max_length=64, examples=["beijing-maas-2026"])]
    name_zh: Text120
    name_en: Text120
    exchange_zh: Annotated[str, msgspec.Meta(min_length=1, max_length=120, examples=["北京绿色交易所"])]
    exchange_en: Annotated[str, msgspec.Meta(min_length=1, max_length=120, examples=["China Beijing Green Exchange"])]
    behaviours: Annotated[list[Behaviour], msgspec.Meta(min_length=1, max_length=200)]
    methodology_releases: Annotated[list[Annotated[str, msgspec.Meta(max_length=16)]], msgspec.Meta(max_length=50)] = \
        msgspec.field(default_factory=list)
    trust_tiers: Annotated[list[TrustTier], msgspec.Meta(max_length=3)] = msgspec.field(default_factory=list)
    period_from: date
    period_to: date
    settle_days: int = 7
    payout: Literal["fen", "energy"] = "fen"
    energy_per_fen: int | None = None
    benefit_ppm: int = 0
    benefit_name_zh: Annotated[str, msgspec.Meta(max_length=120)] = ""
    benefit_name_en: Annotated[str, msgspec.Meta(max_length=120)] = ""
    benefit_url: Annotated[str, msgspec.Meta(max_length=500)] = ""


class Benefit(msgspec.Struct, kw_only=True):
    share_ppm: int
    name: dict[str, str]
    url: str


class ProgrammeOut(msgspec.Struct, kw_only=True):
    """Who may be pooled (`behaviours` at exact versions, releases, trust tiers, local days, at least `settle_days`
    after recording) and how proceeds are paid (`payout`: fen, or energy at `energy_per_fen`)."""

    code: str
    name: dict[str, str]
    exchange: dict[str, str]
    behaviours: list[str]
    methodology_releases: list[str]
    trust_tiers: list[str]
    period_from: date
    period_to: date
    settle_days: int
    payout: Literal["fen", "energy"]
    energy_per_fen: int | None
    public_benefit: Benefit | None
    status: Literal["open", "closed"]


def _benefit(ppm: int, zh: str, en: str, url: str) -> Benefit | None:
    return Benefit(share_ppm=ppm, name={"zh-CN": zh, "en": en}, url=url) if ppm else None


def programme_out(p: Programme) -> ProgrammeOut:
    return ProgrammeOut(
        code=p.code, name={"zh-CN": p.name_zh, "en": p.name_en}, exchange={"zh-CN": p.exchange_zh, "en": p.exchange_en},
        behaviours=p.behaviours, methodology_releases=p.methodology_releases, trust_tiers=p.trust_tiers,
        period_from=p.period_from, period_to=p.period_to, settle_days=p.settle_days, payout=p.payout,  # type: ignore[arg-type]
        energy_per_fen=p.energy_per_fen,
        public_benefit=_benefit(p.benefit_ppm, p.benefit_name_zh, p.benefit_name_en, p.benefit_url),
        status=p.status,  # type: ignore[arg-type]
    )


class ConsentIn(Input, kw_only=True):
    opted_in: bool


class ConsentOut(msgspec.Struct, kw_only=True):
    """`opted_in` false until you say yes; `changed_at`: when I first chose, or last changed my mind.
    `unsold_lots`: lots still holding your entries (they stay if you opt out,
    and you are paid when they sell)."""

    opted_in: bool
    changed_at: datetime | None
    unsold_lots: int


class EligibleOut(msgspec.Struct, kw_only=True):
    programme: str
    day_from: date
    day_to: date
    reduction_mg: int
    entries: int
    holders: int


class LotCreate(Input, kw_only=True):
    """`target_mg`: the lot's size (1 t CO2e = 1,000,000,000 mg); the lot takes whole entries, so it ends up at the
    target plus less than one entry. `day_from`/`day_to` narrow the programme's period."""

    programme: Annotated[str, msgspec.Meta(max_length=64)]
    target_mg: Annotated[int, msgspec.Meta(ge=1, examples=[1_000_000_000])]
    day_from: date | None = None
    day_to: date | None = None
    note: Annotated[str, msgspec.Meta(max_length=500)] = ""


class LotCancel(Input, kw_only=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class SaleCreate(Input, kw_only=True):
    buyer: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    exchange_ref: Annotated[str, msgspec.Meta(min_length=1, max_length=120, examples=["CBEEX-2026-11-000123"])]
    sale_date: date
    price_per_tonne_fen: Annotated[int, msgspec.Meta(ge=1, examples=[8_500])]
    note: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class SaleCancel(Input, kw_only=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class SaleOut(msgspec.Struct, kw_only=True):
    """`gross_fen` = floor(lot total_mg × price_per_tonne_fen / 10^9). Settled: `benefit_fen` (floor of the
    programme's share) + `residents_fen` (split among contributors) = `gross_fen`."""

    id: int
    lot_id: int
    state: Literal["pending", "settled", "cancelled"]
    buyer: str
    exchange_ref: str
    sale_date: date
    price_per_tonne_fen: int
    gross_fen: int
    benefit_fen: int | None
    residents_fen: int | None
    paid_contributors: int | None
    recorded_at: datetime
    settled_at: datetime | None
    cancelled_at: datetime | None
    cancel_reason: str | None


def sale_out(s: dict[str, Any]) -> SaleOut:
    return SaleOut(id=s["id"], lot_id=s["lot"], state=s["state"], buyer=s["buyer"], exchange_ref=s["exchange_ref"],
                   sale_date=s["sale_date"], price_per_tonne_fen=s["price_per_tonne_fen"], gross_fen=s["gross_fen"],
                   benefit_fen=s["benefit_fen"], residents_fen=s["residents_fen"], paid_contributors=s["paid"],
                   recorded_at=s["recorded_at"],
                   settled_at=s["settled_at"], cancelled_at=s["cancelled_at"], cancel_reason=s["cancel_reason"])


class LotOut(msgspec.Struct, kw_only=True):
    """`manifest_sha256` = SHA-256("carbon-lot/v1\\n" ‖ the JSON manifest's bytes). `reversed_mg`: grams of this
    lot that partners reversed after pooling (a lot with any cannot be sold: cancel it and make a new one)."""

    id: int
    programme: str
    programme_name: dict[str, str]
    state: Literal["open", "pending", "settled", "cancelled"]
    target_mg: int
    total_mg: int
    entries: int
    contributors: int
    day_from: date
    day_to: date
    manifest_sha256: str
    reversed_mg: int
    note: str
    created_at: datetime
    cancelled_at: datetime | None
    cancel_reason: str | None


def lot_out(lot: dict[str, Any]) -> LotOut:
    return LotOut(
        id=lot["id"], programme=lot["programme_code"],
        programme_name={"zh-CN": lot["programme_name_zh"], "en": lot["programme_name_en"]}, state=lot["state"],
        target_mg=lot["target_mg"], total_mg=lot["total_mg"], entries=lot["entries"], contributors=lot["holders"],
        day_from=lot["day_from"], day_to=lot["day_to"], manifest_sha256=bytes(lot["manifest_hash"]).hex(),
        reversed_mg=lot["reversed_mg"], note=lot["note"], created_at=lot["created_at"],
        cancelled_at=lot["cancelled_at"], cancel_reason=lot["cancel_reason"])


class PublicSale(msgspec.Struct, kw_only=True):
    """Shown once settled; a pending sale shows only its state."""

    state: Literal["pending", "settled"]
    buyer: str | None = None
    exchange_ref: str | None = None
    sale_date: date | None = None
    price_per_tonne_fen: int | None = None
    gross_fen: int | None = None
    residents_fen: int | None = None
    benefit_fen: int | None = None
    settled_at: datetime | None = None


class PublicLotOut(msgspec.Struct, kw_only=True):
    """Totals, price, how many contributed and where the public-benefit share went; never who contributed."""

    id: int
    programme: str
    programme_name: dict[str, str]
    exchange: dict[str, str]
    state: Literal["open", "pending", "settled", "cancelled"]
    total_mg: int
    entries: int
    contributors: int
    paid_contributors: int
    day_from: date
    day_to: date
    manifest_sha256: str
    payout: Literal["fen", "energy"]
    energy_per_fen: int | None
    public_benefit: Benefit | None
    sale: PublicSale | None
    created_at: datetime


def public_lot_out(lot: dict[str, Any]) -> PublicLotOut:
    sale = lot.get("sale")
    public_sale = None
    if sale is not None and sale["state"] == "settled":
        public_sale = PublicSale(
            state="settled", buyer=sale["buyer"], exchange_ref=sale["exchange_ref"], sale_date=sale["sale_date"],
            price_per_tonne_fen=sale["price_per_tonne_fen"], gross_fen=sale["gross_fen"],
            residents_fen=sale["residents_fen"], benefit_fen=sale["benefit_fen"], settled_at=sale["settled_at"])
    elif sale is not None:
        public_sale = PublicSale(state="pending")
    return PublicLotOut(
        id=lot["id"], programme=lot["programme_code"],
        programme_name={"zh-CN": lot["programme_name_zh"], "en": lot["programme_name_en"]},
        exchange={"zh-CN": lot["exchange_zh"], "en": lot["exchange_en"]}, state=lot["state"],
        total_mg=lot["total_mg"], entries=lot["entries"], contributors=lot["holders"],
        paid_contributors=sale["paid"] if sale is not None and sale["state"] == "settled" else 0,
        day_from=lot["day_from"], day_to=lot["day_to"],
        manifest_sha256=bytes(lot["manifest_hash"]).hex(), payout=lot["payout"], energy_per_fen=lot["energy_per_fen"],
        public_benefit=_benefit(lot["benefit_ppm"], lot["benefit_name_zh"], lot["benefit_name_en"], lot["benefit_url"]),
        sale=public_sale, created_at=lot["created_at"])


class MyLotSummary(msgspec.Struct, kw_only=True):
    """My part of a lot: `my_mg` over `my_entries`; once sold, the price and my share in `fen`. Where the programme
    pays in energy (`payout`), those fen were converted and `energy` is what I received."""

    lot: LotOut
    my_mg: int
    my_entries: int
    sale_id: int | None
    price_per_tonne_fen: int | None
    sale_date: date | None
    settled_at: datetime | None
    payout: Literal["fen", "energy"]
    fen: int | None
    energy: int | None


def my_lot_summary(r: dict[str, Any]) -> MyLotSummary:
    return MyLotSummary(lot=lot_out(r), my_mg=r["my_mg"], my_entries=r["my_entries"], sale_id=r["sale_id"],
                        price_per_tonne_fen=r["price_per_tonne_fen"], sale_date=r["sale_date"],
                        settled_at=r["settled_at"], payout=r["payout"], fen=r["my_fen"], energy=r["my_energy"])


class MyMarketOut(msgspec.Struct, kw_only=True):
    """`balance_fen`: my money account. `received_fen`: what lots paid into it; `converted_fen`: my shares of lots
    whose programme pays in energy, converted at its published rate into `received_energy`."""

    consent: ConsentOut
    balance_fen: int
    received_fen: int
    converted_fen: int
    received_energy: int
    lots: list[MyLotSummary]


class MyLotEntry(msgspec.Struct, kw_only=True):
    """One of my book entries in the lot; `fen`/`energy`: its part of what I received (largest remainder by
    grams, ties to the earlier entry, so my entries' parts sum exactly to my payout)."""

    entry_id: int
    local_day: date
    behaviour: str
    behaviour_version: int
    methodology_release: str
    category: str
    reduction_mg: int
    entry_hash: str
    reversed: bool
    fen: int
    energy: int


class MyLotOut(MyLotSummary, kw_only=True):
    entries: list[MyLotEntry]
