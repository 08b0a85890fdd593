"""Inbox templates loaded from `templates.toml` once, validated at import so a missing language fails fast."""

from __future__ import annotations

import logging
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["LANGUAGES", "render", "render_stored", "templates"]

LANGUAGES = ("zh-CN", "en")


@cache
def templates() -> dict[str, dict[str, Any]]:
    data = tomllib.loads((Path(__file__).parent / "templates.toml").read_text(encoding="utf-8"))
    for kind, by_language in data.items():
        for language in LANGUAGES:
            entry = by_language.get(language)
            if not entry or not entry.get("title") or not entry.get("body"):
                raise ValueError(f"inbox template {kind!r} lacks a title and body in {language}")
    return data


def render(kind: str, language: str, params: dict[str, Any]) -> tuple[str, str]:
    entry = templates()[kind].get(language) or templates()[kind]["zh-CN"]
    return entry["title"].format_map(params), entry["body"].format_map(params)


log = logging.getLogger("carbon_wallet.notifications")


def render_stored(kind: str, language: str, params: Any) -> tuple[str, str] | None:
    """A stored message (its params as the database returns them) in `language`, or None when the templates
    can no longer fill it (a kind removed, a placeholder its params lack): each reader decides what that means
    (the inbox shows a plain title, the stream leaves it out, the sender gives the delivery up)."""
    try:
        if isinstance(params, str | bytes):
            params = msgspec.json.decode(params)
        return render(kind, language, params if isinstance(params, dict) else {})
    except (KeyError, IndexError, ValueError, msgspec.DecodeError):
        log.warning("a stored %s message cannot be rendered", kind)
        return None
