"""Running one operator command: a small pool for the command's lifetime, and a domain refusal printed as
the sentence it carries (exit 1) instead of a traceback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from wallet.errors import DomainError

__all__ = ["print_json", "read_json_object", "run_with_pool"]


def read_json_object(path: Path) -> dict[str, Any]:
    """A command's input file: one JSON object, or a refusal naming the file."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DomainError("invalid", "unreadable-file", f"{path}: {exc}") from exc
    if not isinstance(value, dict):
        raise DomainError("invalid", "unreadable-file", f"{path} must hold one JSON object.")
    return value


def print_json(value: Any) -> None:
    print(json.dumps(value, default=str, ensure_ascii=False, indent=2))


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
