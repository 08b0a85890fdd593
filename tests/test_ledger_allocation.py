"""Largest-remainder allocation (LEDGER L9), the split behind donation certificates' shares: the parts sum to
exactly the total, each stays within one unit of its exact share, the result is deterministic, leftover units
go to the largest remainders with ties to the earlier weight, and a zero weight gets nothing."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet.ledger.allocation import largest_remainder

WEIGHTS = st.lists(st.integers(0, 10**6), min_size=1, max_size=12).filter(lambda w: sum(w) > 0)
TOTALS = st.integers(0, 10**9)


@given(total=TOTALS, weights=WEIGHTS)
def test_parts_sum_exactly_to_the_total_and_stay_within_one_of_the_exact_share(total: int,
                                                                                weights: list[int]) -> None:
    parts = largest_remainder(total, weights)
    assert sum(parts) == total and len(parts) == len(weights)
    for part, weight in zip(parts, weights, strict=True):
        exact = Fraction(total * weight, sum(weights))
        assert abs(part - exact) < 1
        assert part >= 0


@given(total=TOTALS, weights=WEIGHTS)
def test_the_split_is_deterministic(total: int, weights: list[int]) -> None:
    assert largest_remainder(total, weights) == largest_remainder(total, list(weights))


@given(total=TOTALS, weights=WEIGHTS)
def test_a_larger_remainder_never_gets_less_and_ties_go_to_the_earlier_weight(total: int,
                                                                                weights: list[int]) -> None:
    parts = largest_remainder(total, weights)
    whole = sum(weights)
    extra = [p - total * w // whole for p, w in zip(parts, weights, strict=True)]
    remainder = [total * w % whole for w in weights]
    assert set(extra) <= {0, 1}
    for i in range(len(weights)):
        for j in range(i + 1, len(weights)):
            if remainder[i] == remainder[j]:
                assert extra[i] >= extra[j], (i, j)  # the earlier weight wins a tie
            elif remainder[i] > remainder[j]:
                assert extra[i] >= extra[j], (i, j)
            else:
                assert extra[i] <= extra[j], (i, j)


@given(total=TOTALS, n=st.integers(2, 6))
def test_equal_weights_split_evenly_with_the_leftover_to_the_first(total: int, n: int) -> None:
    parts = largest_remainder(total, [7] * n)
    assert parts == [total // n + (1 if i < total % n else 0) for i in range(n)]


@given(total=TOTALS, weights=WEIGHTS, zeros=st.sets(st.integers(0, 11), max_size=6))
def test_zero_weights_get_nothing(total: int, weights: list[int], zeros: set[int]) -> None:
    mixed = [0 if i in zeros else w for i, w in enumerate(weights)]
    if sum(mixed) == 0:
        mixed[-1] = 1
    parts = largest_remainder(total, mixed)
    assert all(p == 0 for p, w in zip(parts, mixed, strict=True) if w == 0)
    assert sum(parts) == total


@given(n=st.integers(0, 5))
def test_nothing_to_split_is_all_zeros_and_impossible_splits_are_refused(n: int) -> None:
    assert largest_remainder(0, [0] * n) == [0] * n
    with pytest.raises(ValueError):
        largest_remainder(1, [0] * n)
    with pytest.raises(ValueError):
        largest_remainder(-1, [1] * (n + 1))
    with pytest.raises(ValueError):
        largest_remainder(5, [1, -1, 3])
