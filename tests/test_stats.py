"""The one rule that calls repetitions different (lab.results.stats): scipy's t-test against the margin,
statsmodels' power behind the detectable effect (and that its stated power holds in simulation), too few
repetitions, the interval, the margin knobs and the family correction, including what it is for:
identical runs mark nothing, a real change is found. Pure functions: no database, no servers."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.power import tt_ind_solve_power

from lab.results import stats

pytestmark = pytest.mark.unit


def test_the_test_is_scipys_two_sample_t_against_the_margin() -> None:
    """p and interval equal scipy.stats.ttest_ind's on the logs, B shifted by the margin (one-sided)."""
    a, b = [100, 104, 98, 101], [121, 118, 127, 119]
    la, lb = np.log(a), np.log(b)
    d = stats.decide(a, b, 0.10)
    ref = sps.ttest_ind(lb - math.log1p(0.10), la, alternative="greater")
    assert d.p == pytest.approx(ref.pvalue, rel=1e-9) and d.changed
    lo, hi = sps.ttest_ind(lb, la).confidence_interval(0.95)
    assert d.ci == pytest.approx((math.exp(lo), math.exp(hi)), rel=1e-9)
    # Unequal sizes: Welch's.
    d = stats.decide(a, [*b, 122], 0.10)
    ref = sps.ttest_ind(np.log([*b, 122]) - math.log1p(0.10), la, equal_var=False, alternative="greater")
    assert d.p == pytest.approx(ref.pvalue, rel=1e-9)
    # B lower: the test runs the other way.
    d = stats.decide(b, a, 0.10)
    ref = sps.ttest_ind(la + math.log1p(0.10), lb, alternative="less")
    assert d.p == pytest.approx(ref.pvalue, rel=1e-9) and d.direction == -1


def test_the_detectable_effect_is_statsmodels_power_solved() -> None:
    """The standardized effect at 80 % power matches statsmodels' own solver where its df applies, and
    the stated effect is the margin plus that many repetition sds (never below the margin)."""
    for n in (4, 6, 10):
        ours = stats.standardized_mde(n, n, 2 * n - 2, 0.05)
        theirs = tt_ind_solve_power(effect_size=None, nobs1=n, alpha=0.05, power=0.8, ratio=1.0,
                                    alternative="larger")
        assert ours == pytest.approx(theirs, rel=1e-4)
    d = stats.decide([100, 101, 102, 103], [104, 105, 106, 107], 0.10)
    assert d.sigma is not None and d.mde is not None
    want = math.expm1(math.log1p(0.10) + stats.standardized_mde(4, 4, 6.0, 0.05) * d.sigma)
    assert d.mde == pytest.approx(want) and d.mde > 0.10
    assert d.reps_for_target is None and "inside the margin" in d.sensitivity()
    flat = stats.decide([100] * 4, [100] * 4, 0.03)
    assert flat.mde == pytest.approx(0.03) and flat.reps_for_target == stats.MIN_REPS


def test_the_stated_power_holds_in_simulation() -> None:
    """A true change equal to the stated detectable effect is marked about 80 % of the time, and a true
    change at the margin about alpha of the time (fixed seed; 1,500 simulated comparisons each)."""
    rng = np.random.default_rng(20261207)
    sigma, n, margin, tries = 0.08, 6, 0.03, 1500
    true = math.log1p(margin) + stats.standardized_mde(n, n, 2 * n - 2, stats.ALPHA) * sigma
    for shift, low, high in ((true, 0.76, 0.84), (math.log1p(margin), 0.03, 0.07)):
        a = rng.normal(0.0, sigma, (tries, n))
        b = rng.normal(shift, sigma, (tries, n))
        hits = sum(stats.decide(np.exp(x).tolist(), np.exp(y).tolist(), margin).changed
                   for x, y in zip(a, b, strict=True))
        assert low <= hits / tries <= high


def test_repetitions_for_five_percent_reach_it() -> None:
    """The repetitions stated for 5 % give a detectable effect of at most 5 % at that scatter, and one
    fewer would not."""
    sigma, margin = 0.06, 0.02
    n = stats.reps_for(0.05, sigma, margin)
    assert n is not None and n > stats.MIN_REPS

    def mde(k: int) -> float:
        return math.expm1(math.log1p(margin) + stats.standardized_mde(k, k, 2 * k - 2, stats.ALPHA) * sigma)
    assert mde(n) <= 0.05 < mde(n - 1)
    assert stats.reps_for(0.05, sigma, 0.05) is None  # inside the margin: never


def test_margins_are_knobs_per_kind() -> None:
    assert stats.margin(stats.WITHIN, env={}) == stats.DEFAULT_MARGINS[stats.WITHIN]
    assert stats.margin(stats.ACROSS, env={"LAB_MARGIN_ACROSS": "0.07"}) == 0.07
    assert stats.margin(stats.ACROSS, "0.02", env={"LAB_MARGIN_ACROSS": "0.07"}) == 0.02  # the flag wins
    with pytest.raises(ValueError, match="LAB_MARGIN_WITHIN must be from 0 to 1"):
        stats.margin(stats.WITHIN, env={"LAB_MARGIN_WITHIN": "5"})
    rule = stats.settings(stats.ACROSS, 0.07)
    assert rule["margin"] == 0.07 and rule["kind"] == "across" and rule["power"] == stats.POWER


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
    assert kept[0] is not None and kept[0].alpha == pytest.approx(0.05 / 9)  # sensitivity at the family's
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


def test_within_a_run_the_test_is_scipys_paired_t_round_by_round() -> None:
    """Between servers of one run: p and interval equal scipy.stats.ttest_rel's on the logs, B shifted by
    the margin. A round that hit both servers alike cancels: the same values judged as two samples tie."""
    a, b = [100, 130, 90, 115, 104], [110, 142, 100, 126, 113]  # each round moved both; B ~10 % above
    la, lb = np.log(a), np.log(b)
    d = stats.decide(a, b, 0.03, paired=True)
    ref = sps.ttest_rel(lb - math.log1p(0.03), la, alternative="greater")
    assert d.paired and d.df == 4 and d.changed
    assert d.p == pytest.approx(ref.pvalue, rel=1e-9)
    lo, hi = sps.ttest_rel(lb, la).confidence_interval(0.95)
    assert d.ci == pytest.approx((math.exp(lo), math.exp(hi)), rel=1e-9)
    assert not stats.decide(a, b, 0.03).changed  # as two samples, the rounds' moves hide it
    with pytest.raises(ValueError, match="one value a side per round"):
        stats.decide(a, b[:4], 0.03, paired=True)


def test_the_paired_detectable_effect_holds_in_simulation() -> None:
    """The paired test's stated detectable effect (one value of scatter per server and round, on top of
    what the round shares) is marked about 80 % of the time, and a change at the margin about alpha of
    the time; the repetitions stated for 5 % reach it (fixed seed; 1,500 simulated comparisons each)."""
    rng = np.random.default_rng(20261208)
    sigma, n, margin, tries = 0.05, 6, 0.03, 1500
    sample = stats.decide(np.exp(rng.normal(0, sigma, n)).tolist(), np.exp(rng.normal(0, sigma, n)).tolist(),
                          margin, paired=True)
    assert sample.sigma is not None and sample.mde is not None
    true = math.log1p(margin) + stats.standardized_mde(n, n, n - 1, stats.ALPHA) * sigma
    for shift, low, high in ((true, 0.76, 0.84), (math.log1p(margin), 0.03, 0.07)):
        rounds = rng.normal(0.0, 0.2, (tries, n))  # a large common move per round: it must cancel
        a = rounds + rng.normal(0.0, sigma, (tries, n))
        b = rounds + rng.normal(shift, sigma, (tries, n))
        hits = sum(stats.decide(np.exp(x).tolist(), np.exp(y).tolist(), margin, paired=True).changed
                   for x, y in zip(a, b, strict=True))
        assert low <= hits / tries <= high
    k = stats.reps_for(0.08, sigma, margin, paired=True)
    assert k is not None

    def mde(m: int) -> float:
        return math.expm1(math.log1p(margin) + stats.standardized_mde(m, m, m - 1, stats.ALPHA) * sigma)
    assert mde(k) <= 0.08 < mde(k - 1)
