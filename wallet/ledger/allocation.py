"""Splitting an integer total pro rata without losing or inventing a unit (LEDGER L9)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["largest_remainder"]


def largest_remainder(total: int, weights: Sequence[int]) -> list[int]:
    """Parts of `total` proportional to `weights` that sum to exactly `total`: everyone gets the floor of their
    exact share, and the units left over go one each to the largest remainders; equal remainders go to the
    earlier weight, so the result is deterministic for the same ordered input."""
    if total < 0 or any(w < 0 for w in weights):
        raise ValueError("total and weights must not be negative")
    whole = sum(weights)
    if not weights or whole == 0:
        if total:
            raise ValueError("a positive total needs at least one positive weight")
        return [0] * len(weights)
    parts = [total * w // whole for w in weights]
    remainders = [total * w % whole for w in weights]
    left = total - sum(parts)
    for i in sorted(range(len(weights)), key=lambda i: (-remainders[i], i))[:left]:
        parts[i] += 1
    assert sum(parts) == total
    return parts
