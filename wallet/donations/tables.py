from __future__ import annotations

from piccolo.columns import JSONB, BigInt, BigSerial, ForeignKey, Integer, Text, Timestamptz, Varchar
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from wallet.holders.tables import Holder
from wallet.ledger.tables import LedgerAccount


class DonationProject(Table, tablename="donation_project"):
    """A collective goal residents give energy to (trees, a community wind turbine). Its progress is the sum
    of transfers into its ledger account, never a counter every donor would lock."""

    id = BigSerial(primary_key=True)
    code = Varchar(length=64, unique=True)
    title_zh = Varchar(length=120)
    title_en = Varchar(length=120)
    description_zh = Text(default="")
    description_en = Text(default="")
    outcome_zh = Varchar(length=200, default="")
    outcome_en = Varchar(length=200, default="")
    images = JSONB(default=[])
    goal = BigInt()
    account = ForeignKey(references=LedgerAccount, on_delete=OnDelete.restrict, unique=True)
    status = Varchar(length=16, default="open")  # open | completed | closed
    opens_at = Timestamptz(default=TimestamptzNow())
    closes_at = Timestamptz(null=True, default=None)
    completed_at = Timestamptz(null=True, default=None)
    raised_at_completion = BigInt(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())


class DonationCertificate(Table, tablename="donation_certificate"):
    """One per donor when a project meets its goal: what they gave and their share of the whole, in parts
    per million (integers, like every number residents see)."""

    id = BigSerial(primary_key=True)
    number = Varchar(length=40, unique=True)
    project = ForeignKey(references=DonationProject, on_delete=OnDelete.restrict)
    holder = ForeignKey(references=Holder, on_delete=OnDelete.restrict)
    amount = BigInt()
    share_ppm = Integer()
    donors = Integer()
    issued_at = Timestamptz(default=TimestamptzNow())
