"""`python -m api.cli verify-books`: recompute every holder's chain and report the first broken link of each."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

__all__ = ["add_commands", "run_command"]


def add_commands(sub: Any) -> None:
    verify = sub.add_parser("verify-books", help="verify every holder's hash chain and totals")
    verify.add_argument("--quiet", action="store_true", help="print only broken books and the summary")


def run_command(args: argparse.Namespace, database_url: str) -> int:
    from wallet.book.service import verify_all
    from wallet.db import close_pool, start_pool

    async def main() -> int:
        await start_pool(database_url, size_min=1, size_max=2)
        started = time.perf_counter()
        books = entries = broken = 0
        try:
            async for v in verify_all():
                books += 1
                entries += v.entries
                if not v.ok:
                    broken += 1
                    print(f"BROKEN {v.holder_id}: entry {v.broken_seq}: {v.reason}")
                elif not args.quiet:
                    print(f"ok     {v.holder_id}: {v.entries} entries, {v.total_mg} mg")
                if books % 1000 == 0:
                    print(f"… {books} books, {entries} entries verified", file=sys.stderr)
        finally:
            await close_pool()
        print(f"{books} books, {entries} entries, {broken} broken, in {time.perf_counter() - started:.1f} s")
        return 1 if broken else 0

    return asyncio.run(main())
