"""Operator commands for partners and staff roles (`python -m api.cli partner …`, `… grant-role …`)."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from api.clirun import print_json
from wallet.errors import DomainError
from wallet.sealing import SecretBox

__all__ = ["add_commands", "run_command"]


def add_commands(sub: Any) -> None:
    partner = sub.add_parser("partner", help="register and manage partner platforms")
    ops = partner.add_subparsers(dest="partner_command", required=True)
    create = ops.add_parser("create", help="register a partner; prints its client id and secrets once")
    create.add_argument("--name", required=True)
    create.add_argument("--name-en", default="")
    create.add_argument("--kind", required=True,
                        help="food_delivery, logistics, second_hand, bike_share, transit, maps, employer, other")
    create.add_argument("--public", action="store_true", help="a public client (app only, PKCE, no client secret)")
    create.add_argument("--redirect-uri", action="append", required=True, help="exact match; repeat for several")
    create.add_argument("--scope", action="append", required=True,
                        help="activities:write, book:read, profile:read; ledger:read (its own client token)")
    create.add_argument("--behaviour", action="append", default=[], help="a behaviour code it may report; repeat")
    create.add_argument("--trust-tier", default="verified", help="verified, device or self_reported")
    create.add_argument("--rate-limit-per-minute", type=int, default=600)
    create.add_argument("--daily-quota", type=int, default=100_000)
    ops.add_parser("list", help="list partners")
    for name, text in (("suspend", "refuse the partner's tokens and pushes now"), ("activate", "lift a suspension")):
        cmd = ops.add_parser(name, help=text)
        cmd.add_argument("client_id")
        cmd.add_argument("--reason", default="")
    rotate = ops.add_parser("rotate-secret", help="issue a new client or webhook secret; old ones overlap")
    rotate.add_argument("client_id")
    rotate.add_argument("purpose", choices=["client", "webhook"])
    rotate.add_argument("--overlap-s", type=int, default=None, help="how long current secrets keep working")
    for name in ("grant-role", "revoke-role"):
        cmd = sub.add_parser(name, help=f"{name.split('-')[0]} a staff role for a holder's login")
        cmd.add_argument("login", help="the holder's e-mail or phone number")
        cmd.add_argument("role", choices=["operator", "programme_staff"])
        cmd.add_argument("--city", default="", help="programme_staff: the city whose ledger they read")


def _box() -> SecretBox:
    from api.settings import resolve_data_key

    data_dir = Path(os.environ.get("CW_DATA_DIR") or Path(__file__).resolve().parents[2] / ".data").resolve()
    return SecretBox(resolve_data_key(dict(os.environ), os.environ.get("CW_ENV") == "production", data_dir))


async def _partner_by_client_id(client_id: str) -> dict[str, Any]:
    from wallet.partners.service import get_partner_by_client_id

    partner = await get_partner_by_client_id(client_id)
    if partner is None:
        raise DomainError("not_found", "partner-not-found", f"No partner has client id {client_id!r}.")
    return partner


async def _run(args: argparse.Namespace) -> None:
    from wallet.holders.roles import grant_role, holder_id_for_login, revoke_role
    from wallet.partners import service

    if args.command in ("grant-role", "revoke-role"):
        holder_id = await holder_id_for_login(args.login)
        change = grant_role if args.command == "grant-role" else revoke_role
        changed = await change(holder_id, args.role, args.city)
        where = f" ({args.city})" if args.city else ""
        print(f"{args.command}: {args.login} {args.role}{where}: {'done' if changed else 'no change'}")
        return
    command = args.partner_command
    if command == "create":
        new = await service.register_partner(
            service.PartnerSpec(
                name=args.name, name_en=args.name_en, kind=args.kind,
                client_type="public" if args.public else "confidential", redirect_uris=args.redirect_uri,
                allowed_scopes=args.scope, allowed_behaviours=args.behaviour, trust_tier=args.trust_tier,
                rate_limit_per_minute=args.rate_limit_per_minute, daily_quota=args.daily_quota,
            ),
            _box(),
        )
        print_json({"partner": new.partner, "client_secret": new.client_secret, "webhook_secret": new.webhook_secret,
                "note": "The secrets are shown this once; store them now."})
    elif command == "list":
        for p in await service.list_partners():
            print(f"{p['client_id']:<28} {p['status']:<10} {p['kind']:<14} {p['name']} / {p['name_en']}")
    elif command in ("suspend", "activate"):
        partner = await _partner_by_client_id(args.client_id)
        status = "suspended" if command == "suspend" else "active"
        done = await service.set_partner_status(partner["id"], status, args.reason)
        print(f"{done['client_id']}: {done['status']}")
    elif command == "rotate-secret":
        partner = await _partner_by_client_id(args.client_id)
        overlap = args.overlap_s if args.overlap_s is not None else int(
            os.environ.get("CW_SECRET_ROTATION_OVERLAP_S", 7 * 86400)
        )
        secret = await service.rotate_secret(partner["id"], args.purpose, overlap_s=overlap, box=_box())
        print_json({"purpose": args.purpose, "secret": secret, "previous_valid_for_s": overlap})


def run_command(args: argparse.Namespace, database_url: str) -> int:
    from wallet.db import close_pool, start_pool

    async def main() -> None:
        await start_pool(database_url, size_min=1, size_max=2)
        try:
            await _run(args)
        finally:
            await close_pool()

    try:
        asyncio.run(main())
    except DomainError as exc:
        print(f"carbon-wallet: {exc.detail}")
        return 1
    return 0


