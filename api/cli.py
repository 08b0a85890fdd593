"""`carbon-wallet`: the operator CLI (run, migrate, seed-demo, partner …, grant-role, revoke-role,
verify-books, reward …, project …, ledger check, energy expire|award, team …, market …)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from api.book.cli import add_commands as add_book_commands
from api.book.cli import run_command as run_book_command
from api.mall.cli import COMMANDS as MALL_COMMANDS
from api.mall.cli import add_commands as add_mall_commands
from api.mall.cli import run_command as run_mall_command
from api.market.cli import COMMANDS as MARKET_COMMANDS
from api.market.cli import add_commands as add_market_commands
from api.market.cli import run_command as run_market_command
from api.partners.cli import add_commands, run_command
from api.teams.cli import COMMANDS as TEAM_COMMANDS
from api.teams.cli import add_commands as add_team_commands
from api.teams.cli import run_command as run_team_command

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="carbon-wallet", description="Carbon Wallet operator commands.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start embedded servers if needed, migrate, seed, serve API and worker")
    run.add_argument("--host", default=os.environ.get("CW_HOST", "127.0.0.1"))
    run.add_argument("--port", type=int, default=int(os.environ.get("CW_PORT", "8000")))
    run.add_argument("--web-workers", type=int, default=int(os.environ.get("CW_WEB_WORKERS", "1")))
    run.add_argument("--no-demo", action="store_true", help="do not load demo data")
    sub.add_parser("migrate", help="apply Piccolo migrations to DATABASE_URL")
    sub.add_parser("seed-demo", help="load demo data into DATABASE_URL (idempotent)")
    add_commands(sub)
    add_book_commands(sub)
    add_mall_commands(sub)
    add_team_commands(sub)
    add_market_commands(sub)
    args = parser.parse_args(argv)

    if args.command == "run":
        from api.local.run import run as run_all

        production = os.environ.get("CW_ENV") == "production"
        seed = not args.no_demo and not production
        return run_all(host=args.host, port=args.port, web_workers=args.web_workers, seed=seed)

    from api.local.run import _prepare

    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url:
        print("carbon-wallet: set DATABASE_URL to the PostgreSQL server to use", file=sys.stderr)
        return 2
    if args.command in ("partner", "grant-role", "revoke-role"):
        return run_command(args, database_url)
    if args.command in MALL_COMMANDS:
        return run_mall_command(args, database_url)
    if args.command in TEAM_COMMANDS:
        return run_team_command(args, database_url)
    if args.command in MARKET_COMMANDS:
        return run_market_command(args, database_url)
    if args.command == "verify-books":
        return run_book_command(args, database_url)
    if args.command == "seed-demo" and os.environ.get("CW_ENV") == "production":
        print("carbon-wallet: demo data is never loaded when CW_ENV=production", file=sys.stderr)
        return 2
    created = asyncio.run(_prepare(database_url, seed=args.command == "seed-demo"))
    print(f"done ({created} demo holders created)" if args.command == "seed-demo" else "migrations applied")
    return 0


if __name__ == "__main__":
    sys.exit(main())
