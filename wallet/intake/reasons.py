"""Turning a verdict's code and parameters into the sentence a resident reads, in their language.

Verdicts store the code and parameters, never rendered text, so a reason reads right in whichever
language the resident picks later, and a wording fix reaches old verdicts too.
"""

from __future__ import annotations

import tomllib
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from wallet.methodology.catalogue import behaviours

__all__ = ["LANGUAGES", "reason", "reasons_both"]

LANGUAGES = ("zh-CN", "en")


@cache
def _templates() -> dict[str, dict[str, str]]:
    with Path(__file__).with_name("reasons.toml").open("rb") as fh:
        data = tomllib.load(fh)
    for code, texts in data.items():
        missing = [lang for lang in LANGUAGES if not texts.get(lang)]
        if missing:
            raise ValueError(f"reason {code!r} lacks {', '.join(missing)}")
    return data


# How a quantity in each catalogue unit reads: (zh-CN, en).
UNIT_NAMES = {
    "g": ("克", "g"), "m": ("米", "m"), "l": ("升", "L"), "wh": ("瓦时", "Wh"), "step": ("步", "steps"),
    "trip": ("次", "trips"), "order": ("单", "orders"), "meal": ("餐", "meals"), "box": ("个", "boxes"),
    "item": ("件", "items"), "appliance": ("台", "appliances"), "bill": ("份", "bills"),
    "receipt": ("张", "receipts"), "payment": ("笔", "payments"), "transaction": ("笔", "transactions"),
    "ticket": ("张", "tickets"), "meeting": ("次", "meetings"), "day": ("天", "days"), "sheet": ("张", "sheets"),
    "document": ("份", "documents"), "invoice": ("张", "invoices"),
}
_QUANTITIES = ("cap", "credited", "max")


class _Params(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


def reason(code: str, params: dict[str, Any], language: str, *, behaviour: str, time_zone: str) -> str:
    texts = _templates().get(code) or {"zh-CN": code, "en": code}
    known = behaviours().get(behaviour)
    values = _Params(params)
    values.setdefault("code", behaviour)
    unit = UNIT_NAMES.get(known.unit, (known.unit, known.unit)) if known else ("", "")
    values["unit"] = unit[0] if language == "zh-CN" else unit[1]
    for key in _QUANTITIES:
        if isinstance(params.get(key), int):
            values[key] = f"{params[key]:,}"
    values["behaviour"] = (known.name_zh if language == "zh-CN" else known.name_en) if known else behaviour
    at = params.get("at")
    if isinstance(at, str):
        values["time"] = datetime.fromisoformat(at).astimezone(ZoneInfo(time_zone)).strftime("%m-%d %H:%M")
    return texts.get(language, texts["en"]).format_map(values).strip()


def reasons_both(code: str, params: dict[str, Any], *, behaviour: str, time_zone: str) -> dict[str, str]:
    """Both languages, for partners (who show the resident whichever their app speaks)."""
    return {lang: reason(code, params, lang, behaviour=behaviour, time_zone=time_zone) for lang in LANGUAGES}
