"""The one rule that calls repetitions different (lab.results.stats): Student's t without scipy, the
minimum-effect test, too few repetitions, the interval, and the family correction, including what it is
for: identical runs mark nothing, a real change is found. Pure functions: no database, no servers."""

from __future__ import annotations

import math
import random

import pytest

from lab.results import stats

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("t", "df", "sf"), [
    (2.776, 4, 0.025),  # the textbook two-sided 5 % point for 4 degrees of freedom
    (1.96, 1e6, 0.025),  # large df: the normal distribution
    (12.706, 1, 0.025),
    (0.0, 3, 0.5),
    (-2.015, 5, 0.95),
])
def test_t_tail_matches_the_tables(t: float, df: float, sf: float) -> None:
    assert stats.t_sf(t, df) == pytest.approx(sf, abs=2e-4)


def test_t_quantile_inverts_the_tail() -> None:
    for df in (1.5, 3, 6.4, 30):
        for q in (0.9, 0.975, 0.999):
            assert 1 - stats.t_sf(stats.t_quantile(q, df), df) == pytest.approx(q, abs=1e-9)


def test_a_clear_change_beyond_the_margin_is_marked_both_ways() -> None:
    up = stats.decide([100, 101, 102, 103], [130, 131, 132, 133], 0.10)
    assert up.changed and up.direction == 1 and up.p is not None and up.p < 0.001
    assert up.ratio == pytest.approx(1.29, abs=0.01) and up.ci is not None and 1.2 < up.ci[0] < up.ci[1] < 1.4
    down = stats.decide([130, 131, 132, 133], [100, 101, 102, 103], 0.10)
    assert down.changed and down.direction == -1


def test_a_consistent_change_inside_the_margin_is_not_a_change() -> None:
    # Every B above every A (a rank test would call it), but 4 % apart under a 10 % margin.
    tiny = stats.decide([100, 101, 102, 103], [104, 105, 106, 107], 0.10)
    assert not tiny.changed and "within the 10% that counts" in tiny.reason


def test_a_change_past_the_margin_needs_the_repetitions_to_show_it() -> None:
    # Medians 24 % apart, but the repetitions scatter by as much: the test cannot say it exceeds 15 %.
    noisy = stats.decide([305, 320, 377, 376], [390, 467, 450, 402], 0.15)
    assert not noisy.changed and noisy.p is not None and noisy.p > 0.05
    assert "do not show the change exceeds 15%" in noisy.reason
    assert noisy.ci is not None and noisy.ci[0] < 1.15 < noisy.ci[1]


def test_zeros_are_compared_on_the_raw_scale() -> None:
    same = stats.decide([0, 0, 0, 0], [0, 0, 0, 0], 0.0)
    assert not same.changed
    worse = stats.decide([0.0, 0.0, 0.001, 0.0], [0.2, 0.21, 0.19, 0.2], 0.0)
    assert worse.changed and worse.direction == 1


def test_too_few_repetitions_are_not_tested() -> None:
    d = stats.decide([100, 101, 102], [200, 201, 202], 0.10)
    assert not d.changed and d.p is None and "a difference needs 4 a side" in d.reason
    assert d.confidence().startswith("not tested (3 repetition(s)")
    assert not stats.decide([], [1, 2, 3, 4], 0.1).changed


def test_confidence_prints_ratio_interval_and_p() -> None:
    d = stats.decide([100, 104, 98, 101], [140, 151, 139, 146], 0.1)
    assert d.confidence().startswith("x1.43 [") and ", p=" in d.confidence()


def test_benjamini_hochberg_keeps_only_what_survives_the_family() -> None:
    def at(p: float) -> stats.Decision:
        return stats.Decision(True, 1, 1.5, p, None, (4, 4), "")
    kept = stats.adjust([at(0.001), at(0.02), None, at(0.04)] + [stats.Decision(False, 0, 1.0, 0.9, None,
                                                                               (4, 4), "x")] * 6)
    # m = 9 tested: 0.001 <= 0.05/9 stays; 0.02 > 2*0.05/9 and 0.04 > 3*0.05/9 go.
    assert [d.changed if d else None for d in kept[:4]] == [True, False, None, False]
    assert kept[1] is not None and "not significant among the 9 figures" in kept[1].reason
    assert all(d is not None and d.changed for d in stats.adjust([at(0.03)]))  # a family of one


def _runs(rng: random.Random, ratios: list[float], cv: float = 0.10) -> list[stats.Decision | None]:
    """One compare of len(ratios) figures (4 repetitions a side), judged as the compare does."""
    sides = [([100 * math.exp(rng.gauss(0, cv)) for _ in range(4)],
              [100 * r * math.exp(rng.gauss(0, cv)) for _ in range(4)]) for r in ratios]
    noise = stats.pooled_noise([g for pair in sides for g in pair])
    return stats.adjust([stats.decide(a, b, 0.15, noise=noise) for a, b in sides])


def test_identical_runs_mark_nothing_and_a_real_change_is_found() -> None:
    """What the rule is for, over simulated runs with the lab machine's noise (a repetition's CPU per
    request scatters by about 10 %, log-normal): 30 A/A comparisons of 100 figures each mark no figure
    in at least 28. A change of one figure among 99 unchanged ones: 3x is found in all 30, 2x in at least 24
(four repetitions a side at 10 % scatter cannot do better after the family correction: that is the
price of marking nothing in identical runs; more repetitions buy more)."""
    rng = random.Random(20261202)
    quiet = sum(not any(d and d.changed for d in _runs(rng, [1.0] * 100)) for _ in range(30))
    assert quiet >= 28
    for ratio, least in ((3.0, 30), (2.0, 24)):
        found = [_runs(rng, [ratio] + [1.0] * 99) for _ in range(30)]
        assert sum(bool(f[0] and f[0].changed) for f in found) >= least
        assert sum(any(d and d.changed for d in f[1:]) for f in found) <= 2  # and nothing else


def test_pooled_noise_is_the_floor_not_the_ceiling() -> None:
    quiet = stats.pooled_noise([[100, 100.1, 99.9, 100], [50, 50.05, 49.95, 50]])
    assert quiet is not None and quiet.df == 6 and quiet.var < 1e-5
    # Own scatter far above the pooled one: the entry's own decides (no false confidence).
    noisy = stats.decide([80, 120, 90, 130], [100, 160, 110, 170], 0.10, noise=quiet)
    assert not noisy.changed
    loud = stats.pooled_noise([[80, 120, 90, 130], [100, 160, 110, 170]])
    assert loud is not None
    # A tight entry among noisy ones is judged with the typical, larger noise.
    tight = stats.decide([100, 100.5, 99.5, 100], [118, 118.5, 117.5, 118], 0.10)
    assert tight.changed
    assert not stats.decide([100, 100.5, 99.5, 100], [118, 118.5, 117.5, 118], 0.10, noise=loud).changed


def test_effect_is_symmetric() -> None:
    assert stats.effect(1.25) == pytest.approx(0.25) and stats.effect(0.8) == pytest.approx(0.25)
    assert stats.effect(0) == math.inf
