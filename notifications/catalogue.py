"""The triggers residents choose from (`triggers.toml`) and what each inbox kind belongs to (its `trigger` and
deep `link` in `inbox/templates.toml`), loaded once and checked at import: a kind without a known trigger or a
language fails start-up, not a delivery at night."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from notifications.inbox.templates import templates

__all__ = ["CHANNELS", "Trigger", "kind_meta", "link_for", "trigger_of", "triggers"]

CHANNELS = ("push", "live")


@dataclass(frozen=True, slots=True)
class Trigger:
    key: str
    name_zh: str
    name_en: str
    push: bool  # on by default
    quiet: bool  # deferred during quiet hours
    capped: bool  # counts toward the daily push cap
    locked: bool  # push cannot be turned off


@cache
def triggers() -> dict[str, Trigger]:
    data = tomllib.loads((Path(__file__).parent / "triggers.toml").read_text(encoding="utf-8"))
    out = {}
    for key, t in data.items():
        try:
            out[key] = Trigger(key, t["zh"], t["en"], bool(t["push"]), bool(t["quiet"]), bool(t["capped"]),
                               bool(t.get("locked", False)))
        except KeyError as exc:
            raise ValueError(f"trigger {key!r} in triggers.toml lacks {exc.args[0]!r}") from exc
    for kind, entry in templates().items():
        if entry.get("trigger") not in out:
            raise ValueError(f"inbox kind {kind!r} names no known trigger (triggers.toml): {entry.get('trigger')!r}")
        if not str(entry.get("link", "")).startswith("carbonwallet://"):
            raise ValueError(f"inbox kind {kind!r} needs a deep link starting with carbonwallet://")
    return out


def kind_meta(kind: str) -> dict[str, Any]:
    entry = templates().get(kind)
    if entry is None:
        raise KeyError(f"no inbox template for kind {kind!r}")
    return entry


def trigger_of(kind: str) -> Trigger:
    return triggers()[kind_meta(kind)["trigger"]]


def link_for(kind: str, params: dict[str, Any]) -> str:
    """The deep link with the message's parameters filled in (e.g. carbonwallet://challenges/7)."""
    return str(kind_meta(kind)["link"]).format_map(params)
