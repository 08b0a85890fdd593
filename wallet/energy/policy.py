"""How energy balls behave, set once per process from settings (API and worker start-up); the defaults
are the product's published ones."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EnergyPolicy", "configure", "policy"]


@dataclass(frozen=True, slots=True)
class EnergyPolicy:
    ripen_s: int = 3600  # a ball can be collected this long after its reduction is credited
    window_s: int = 72 * 3600  # and must be collected within this window, or it expires
    friend_help_daily_cap: int = 5  # balls one friend may collect for one resident per day


_current = EnergyPolicy()


def configure(value: EnergyPolicy) -> None:
    global _current
    _current = value


def policy() -> EnergyPolicy:
    return _current
