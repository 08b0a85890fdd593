"""Operator commands for the mall, donation projects and the energy ledger:
`carbon-wallet reward …`, `… project …`, `… ledger check`, `… energy expire|award`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from api.clirun import print_json, read_json_object, run_with_pool

__all__ = ["COMMANDS", "add_commands", "run_command"]

COMMANDS = ("reward", "project", "ledger", "energy")


def add_commands(sub: Any) -> None:
    reward = sub.add_parser("reward", help="manage the redemption mall's rewards")
    ops = reward.add_subparsers(dest="reward_command", required=True)
    create = ops.add_parser("create", help="add a reward from a JSON file (the fields of POST /v1/admin/rewards)")
    create.add_argument("file", type=Path)
    ops.add_parser("list", help="every reward with its stock")
    stock = ops.add_parser("stock", help="add (or, negative, withdraw) stock")
    stock.add_argument("reward_id", type=int)
    stock.add_argument("delta", type=int)
    vouchers = ops.add_parser("vouchers", help="load a merchant's voucher codes (one per line) for a pool reward")
    vouchers.add_argument("reward_id", type=int)
    vouchers.add_argument("file", type=Path)
    status = ops.add_parser("status", help="pause, re-activate or retire a reward")
    status.add_argument("reward_id", type=int)
    status.add_argument("status", choices=["active", "paused", "retired"])

    project = sub.add_parser("project", help="manage donation projects")
    pops = project.add_subparsers(dest="project_command", required=True)
    pcreate = pops.add_parser("create", help="open a project from a JSON file (the fields of POST /v1/admin/projects)")
    pcreate.add_argument("file", type=Path)
    pops.add_parser("list", help="every project with its progress")

    ledger = sub.add_parser("ledger", help="the energy ledger")
    lops = ledger.add_subparsers(dest="ledger_command", required=True)
    lops.add_parser("check", help="reconcile: sums, balances, pendings, balls, certificates (exit 1 if broken)")

    energy = sub.add_parser("energy", help="energy balls and awards")
    eops = energy.add_subparsers(dest="energy_command", required=True)
    eops.add_parser("expire", help="expire every ball past its window now (the worker does this every minute)")
    award = eops.add_parser("award", help="award energy to a holder (by login), with the reason they read")
    award.add_argument("login")
    award.add_argument("amount", type=int)
    award.add_argument("--reason", required=True)
    award.add_argument("--operator", required=True, help="your own login (recorded with the award)")
    award.add_argument("--key", default=None, help="an idempotency key: running the command again awards once")


async def _reward(args: argparse.Namespace) -> int:
    from wallet.mall import catalogue

    command = args.reward_command
    if command == "create":
        local = os.environ.get("CW_ENV") != "production"
        print_json(await catalogue.create_reward(read_json_object(args.file), local=local))
    elif command == "list":
        for r in await catalogue.list_rewards(offered_only=False):
            stock = "unlimited" if r["stock"] is None else r["stock"]
            print(f"{r['id']:>5} {r['code']:<28} {r['status']:<8} {r['price']:>8} energy  stock {stock:<10} "
                  f"{r['title_zh']} / {r['title_en']}")
    elif command == "stock":
        done = await catalogue.adjust_stock(args.reward_id, args.delta)
        print(f"{done['code']}: stock {done['stock']}")
    elif command == "vouchers":
        codes = args.file.read_text(encoding="utf-8").splitlines()
        done = await catalogue.load_vouchers(args.reward_id, codes)
        print(f"loaded {done['loaded']} codes ({done['repeated']} repeated); stock {done['reward']['stock']}")
    elif command == "status":
        done = await catalogue.update_reward(args.reward_id, {"status": args.status},
                                             local=os.environ.get("CW_ENV") != "production")
        print(f"{done['code']}: {done['status']}")
    return 0


async def _project(args: argparse.Namespace) -> int:
    from wallet.donations import service

    if args.project_command == "create":
        print_json(await service.create_project(read_json_object(args.file)))
    else:
        for p in await service.list_projects(include_closed=True):
            print(f"{p['id']:>5} {p['code']:<28} {p['status']:<10} {p['raised']:>12} / {p['goal']:<12} energy  "
                  f"{p['donors']} donors  {p['title_zh']} / {p['title_en']}")
    return 0


async def _ledger(args: argparse.Namespace) -> int:
    from wallet.ledger.check import check_ledger

    report = await check_ledger()
    for f in report.findings:
        print(f"{'ok ' if f.ok else 'BROKEN'} {f.name}" + ("" if f.ok else f": {f.offenders} offenders"))
        for example in f.examples:
            print(f"         {example}")
    print("the ledger reconciles" if report.ok else "the ledger does NOT reconcile")
    return 0 if report.ok else 1


async def _energy(args: argparse.Namespace) -> int:
    from wallet.energy.awards import award
    from wallet.energy.balls import expire_due
    from wallet.holders.roles import holder_id_for_login

    if args.energy_command == "expire":
        print(f"{await expire_due()} energy balls expired")
        return 0
    done = await award(await holder_id_for_login(args.login), args.amount, reason=args.reason,
                       operator_id=await holder_id_for_login(args.operator), key=args.key)
    print(f"awarded {done['awarded']} energy; available now {done['available']}"
          + (" (this key was used before: nothing new)" if done["replayed"] else ""))
    return 0


def run_command(args: argparse.Namespace, database_url: str) -> int:
    runner = {"reward": _reward, "project": _project, "ledger": _ledger, "energy": _energy}[args.command]
    return run_with_pool(database_url, lambda: runner(args))
