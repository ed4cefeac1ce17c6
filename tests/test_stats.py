"""The one rule that calls repetitions different (lab.results.stats): exact p-values, ties, the minimum
effect, too few repetitions, and the bootstrap interval. Pure functions: no database, no servers."""

from __future__ import annotations

import math
import random

import pytest

from lab.results import stats

pytestmark = pytest.mark.unit


def test_full_separation_of_four_and_four_is_two_in_seventy() -> None:
    # Of the C(8, 4) = 70 ways to split eight values, only "all low" and "all high" are as extreme.
    assert stats.mann_whitney_p([1, 2, 3, 4], [5, 6, 7, 8]) == pytest.approx(2 / 70)
    assert stats.mann_whitney_p([5, 6, 7, 8], [1, 2, 3, 4]) == pytest.approx(2 / 70)
    # Three and three can never go below 2/20 = 0.1: why four repetitions a side is the minimum.
    assert stats.mann_whitney_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)


def test_identical_and_interleaved_samples_are_not_different() -> None:
    assert stats.mann_whitney_p([5, 5, 5, 5], [5, 5, 5, 5]) == 1.0
    assert stats.mann_whitney_p([1, 3, 5, 7], [2, 4, 6, 8]) > 0.5


def test_ties_count_half_and_the_exact_test_handles_them() -> None:
    # One tie at the boundary: less extreme than full separation, so a larger p.
    tied = stats.mann_whitney_p([1, 2, 3, 5], [5, 6, 7, 8])
    assert 2 / 70 < tied < 0.1


def test_normal_approximation_beyond_the_exact_limit() -> None:
    rng = random.Random(1)
    a = [rng.gauss(100, 5) for _ in range(12)]
    b = [rng.gauss(130, 5) for _ in range(12)]
    assert math.comb(24, 12) > stats.EXACT_LIMIT
    assert stats.mann_whitney_p(a, b) < 0.001
    same = [rng.gauss(100, 5) for _ in range(12)]
    assert stats.mann_whitney_p(a, same) > 0.01


def test_a_change_needs_the_test_and_the_minimum_effect() -> None:
    big = stats.decide([100, 101, 102, 103], [130, 131, 132, 133], 0.10)
    assert big.changed and big.direction == 1 and big.ratio == pytest.approx(131.5 / 101.5)
    assert big.p == pytest.approx(2 / 70) and big.ci is not None and big.ci[0] > 1.2
    tiny = stats.decide([100, 101, 102, 103], [104, 105, 106, 107], 0.10)
    assert not tiny.changed and "under the 10% that counts" in tiny.reason
    noisy = stats.decide([80, 120, 90, 130], [100, 140, 95, 150], 0.10)
    assert not noisy.changed and "is not below" in noisy.reason
    lower = stats.decide([130, 131, 132, 133], [100, 101, 102, 103], 0.10)
    assert lower.changed and lower.direction == -1


def test_too_few_repetitions_are_not_tested() -> None:
    d = stats.decide([100, 101, 102], [200, 201, 202], 0.10)
    assert not d.changed and d.p is None and "a difference needs 4 a side" in d.reason
    assert d.confidence().startswith("not tested (3 repetition(s)")
    assert not stats.decide([], [1, 2, 3, 4], 0.1).changed


def test_confidence_is_printed_and_repeatable() -> None:
    a, b = [100, 104, 98, 101], [140, 151, 139, 146]
    first, second = stats.decide(a, b, 0.1), stats.decide(a, b, 0.1)
    assert first.ci == second.ci  # seeded bootstrap: the same inputs print the same interval
    assert first.confidence().startswith("p=0.029, x1.42, [")


def test_effect_is_symmetric() -> None:
    assert stats.effect(1.25) == pytest.approx(0.25) and stats.effect(0.8) == pytest.approx(0.25)
    assert stats.effect(0) == math.inf
