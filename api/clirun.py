"""Running one operator command: a small pool for the command's lifetime, and a domain refusal printed as
the sentence it carries (exit 1) instead of a traceback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from wallet.errors import DomainError

__all__ = ["run_with_pool"]


def run_with_pool(database_url: str, command: Callable[[], Awaitable[int]]) -> int:
    from wallet.db import close_pool, start_pool

    async def main() -> int:
        await start_pool(database_url, size_min=1, size_max=2)
        try:
            return await command()
        finally:
            await close_pool()

    try:
        return asyncio.run(main())
    except DomainError as exc:
        print(f"carbon-wallet: {exc.detail}")
        return 1
