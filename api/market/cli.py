"""Operator commands for the carbon market: `carbon-wallet market programme-create FILE.json | programmes |
eligible | lot-create | lots | manifest | lot-cancel | sale-record | sale-settle | sale-cancel`. The same services as
`/v1/admin/market/…`; what a command records carries no operator id (the API records who did it)."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import Any

from api.clirun import print_json, read_json_object, run_with_pool

__all__ = ["COMMANDS", "add_commands", "run_command"]

COMMANDS = ("market",)


def add_commands(sub: Any) -> None:
    market = sub.add_parser("market", help="carbon-market programmes, lots and sales")
    ops = market.add_subparsers(dest="market_command", required=True)
    create = ops.add_parser("programme-create", help="publish a programme from a JSON file (the fields of "
                                                     "POST /v1/admin/market/programmes; dates as YYYY-MM-DD)")
    create.add_argument("file", type=Path)
    ops.add_parser("programmes", help="every programme and its rules")
    eligible = ops.add_parser("eligible", help="what a new lot of a programme could take now")
    eligible.add_argument("programme")
    lot = ops.add_parser("lot-create", help="pool eligible entries into a lot")
    lot.add_argument("programme")
    lot.add_argument("target_mg", type=int, help="the lot's size in mg CO2e (1 t = 1000000000)")
    lot.add_argument("--from", dest="day_from", type=date.fromisoformat)
    lot.add_argument("--to", dest="day_to", type=date.fromisoformat)
    ops.add_parser("lots", help="the latest 100 lots")
    manifest = ops.add_parser("manifest", help="write a lot's manifest (JSON, or CSV with --csv) for the exchange")
    manifest.add_argument("lot", type=int)
    manifest.add_argument("--csv", action="store_true")
    manifest.add_argument("-o", "--out", type=Path, help="a file (default: standard output)")
    cancel = ops.add_parser("lot-cancel", help="cancel an unsold lot and release its entries")
    cancel.add_argument("lot", type=int)
    cancel.add_argument("reason")
    sale = ops.add_parser("sale-record", help="record a sale agreed on the exchange (pending)")
    sale.add_argument("lot", type=int)
    sale.add_argument("--buyer", required=True)
    sale.add_argument("--ref", required=True, help="the exchange's trade reference")
    sale.add_argument("--date", required=True, type=date.fromisoformat)
    sale.add_argument("--price", required=True, type=int, help="price per tonne CO2e in fen (¥85 = 8500)")
    settle = ops.add_parser("sale-settle", help="the exchange paid: split and pay the proceeds")
    settle.add_argument("sale", type=int)
    drop = ops.add_parser("sale-cancel", help="a pending sale fell through (the lot is open again)")
    drop.add_argument("sale", type=int)
    drop.add_argument("reason")


def _lot_line(lot: dict[str, Any]) -> str:
    mg = lot["total_mg"]
    tonnes = f"{mg // 10**9:,}.{mg % 10**9 // 1000:06d} t"  # to the gram, without floats
    return (f"lot {lot['id']:>5}  {lot['state']:<9} {lot['programme_code']:<28} {tonnes:>16}  {lot['entries']:>7} "
            f"entries  {lot['holders']:>6} contributors  sha256 {bytes(lot['manifest_hash']).hex()}")


async def _market(args: argparse.Namespace) -> int:
    from wallet.market import lots, programmes, sales
    from wallet.market.manifest import manifest_csv

    command = args.market_command
    if command == "programme-create":
        fields = read_json_object(args.file)
        for key in ("period_from", "period_to"):
            if isinstance(fields.get(key), str):
                fields[key] = date.fromisoformat(fields[key])
        print_json((await programmes.create_programme(fields)).as_rules())
    elif command == "programmes":
        for p in await programmes.list_programmes():
            print_json({**p.as_rules(), "name": p.name_en, "status": p.status})
    elif command == "eligible":
        print_json(await lots.eligible_summary(args.programme))
    elif command == "lot-create":
        made, _ = await lots.create_lot(None, args.programme, args.target_mg, day_from=args.day_from,
                                        day_to=args.day_to)
        print(_lot_line(made))
    elif command == "lots":
        for lot in await lots.list_lots(limit=100):
            print(_lot_line(lot))
    elif command == "manifest":
        lot, manifest = await lots.lot_manifest(args.lot)
        body = manifest_csv(lot["id"], manifest).encode() if args.csv else manifest.body
        if args.out:
            args.out.write_bytes(body)
            print(f"lot {lot['id']}: {len(body):,} bytes to {args.out}; manifest sha256 {manifest.sha256.hex()}",
                  file=sys.stderr)
        else:
            sys.stdout.buffer.write(body)
    elif command == "lot-cancel":
        print(_lot_line(await lots.cancel_lot(args.lot, args.reason)))
    elif command == "sale-record":
        made, _ = await sales.record_sale(None, args.lot, buyer=args.buyer, exchange_ref=args.ref,
                                          sale_date=args.date, price_per_tonne_fen=args.price)
        print_json(made)
    elif command == "sale-settle":
        print_json((await sales.settle_sale(args.sale))[0])
    else:
        print_json((await sales.cancel_sale(args.sale, args.reason))[0])
    return 0


def run_command(args: argparse.Namespace, database_url: str) -> int:
    return run_with_pool(database_url, lambda: _market(args))
