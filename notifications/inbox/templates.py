"""Inbox templates loaded from `templates.toml` once, validated at import so a missing language fails fast."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["LANGUAGES", "render", "templates"]

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
