from __future__ import annotations

from pathlib import Path

from piccolo.conf.apps import AppConfig

from wallet.accounts.tables import Consent, SubAccount
from wallet.book.tables import BookEntry, BookHead
from wallet.donations.tables import DonationCertificate, DonationProject
from wallet.energy.tables import EnergyBall, EnergyPreference
from wallet.holders.tables import Holder, HolderRole
from wallet.intake.tables import Activity, PushReceipt
from wallet.ledger.tables import LedgerAccount, LedgerTransfer
from wallet.mall.tables import Redemption, Reward, RewardVoucher
from wallet.market.tables import (
    MarketConsent,
    MarketLot,
    MarketLotHolder,
    MarketLotItem,
    MarketPayout,
    MarketProgramme,
    MarketSale,
)
from wallet.outbox.tables import HandledEvent, OutboxEvent
from wallet.partners.tables import Partner, PartnerSecret

APP_CONFIG = AppConfig(
    app_name="wallet",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[Holder, HolderRole, OutboxEvent, HandledEvent, Partner, PartnerSecret, SubAccount, Consent,
                   Activity, PushReceipt, BookHead, BookEntry, LedgerAccount, LedgerTransfer, EnergyBall,
                   EnergyPreference, Reward, RewardVoucher, Redemption, DonationProject, DonationCertificate,
                   MarketProgramme, MarketConsent, MarketLot, MarketLotItem, MarketLotHolder, MarketSale,
                   MarketPayout],
    migration_dependencies=[],
    commands=[],
)
