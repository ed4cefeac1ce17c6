"""The one rule that calls two sets of repetitions different, and the smallest change it could see.

A figure differs between A and B only when the data say its true change is larger than a margin, not
merely different from zero:
- the values are compared on a log scale (a ratio is a difference of logs; CPU time, rates and
  latencies are skewed and positive) by a t-test over the repetition-level values, computed from its
  Student's t directly (scipy.stats.t; scipy's own tests cost milliseconds a call, and self-checks call
  the rule thousands of times). Between the servers of one run, whose repetitions run in rounds (each
  server once per round, within seconds of each other), it is scipy.stats.ttest_rel's paired test on
  the differences within each round: what the machine did to a whole round cancels, and the test holds
  whatever each server's own scatter. Between runs it is scipy.stats.ttest_ind's two-sample test
  (pooled with equal repetitions a side, where it is robust to unequal noise; Welch's otherwise);
- the test is one-sided against the margin: H0 "|log(B/A)| <= log(1 + margin)". The margin is what
  the repetitions cannot see: a bias shared by all of one side's repetitions. Its size depends on the
  kind of comparison (`margin`): WITHIN one run, repetitions are interleaved across the servers, so the
  machine's drift hits every server alike and a small margin suffices; ACROSS two runs, the machine
  itself moves between them (+7 to +25 % on identical runs seen here); PEERS, two runs with each server
  judged relative to its scenario's other servers (lab.results.relative), where the machine's move
  cancels and a server's own drift between runs remains. A figure may add a floor of its own (a
  percentile's tail); the larger applies;
- with four repetitions a side, one entry's own scatter is a loose estimate of its noise (three
  degrees of freedom a side), so where a comparison has many entries of the same figure, the larger of
  the entry's own scatter and the figure's typical scatter over all entries (`Noise`, a median) is
  used, with the degrees of freedom of whichever it took: conservative both ways;
- a comparison tests many figures at once, so `adjust` applies the Benjamini-Hochberg procedure to the
  family: when nothing changed, the chance that any figure is marked stays under ALPHA.
What a person reads: the ratio of geometric means B/A with its 95 % interval, the test's p, and for a
tie its sensitivity: the minimum detectable effect (the true change this test marks with POWER, from
the scatter it used, at its alpha and margin; statsmodels' noncentral-t power of the two-sample t-test)
and the repetitions a side it would take to see TARGET. The detectable effect is never below the
margin: no number of repetitions marks a change inside it. Intervals are Student's t, not a
bootstrap: with four to eight values a side a bootstrap interval is too narrow. Values that are not
all positive (memory per connection can come out below 0) are compared on the raw scale, the margin
and the detectable effect being fractions of A's mean (none when A's mean is 0).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from lab import knobs

ALPHA = 0.05
POWER = 0.80  # the detectable effect is the true change the test marks this often
TARGET = 0.05  # the change people tune for: each tie says how many repetitions it would take to see it
MIN_REPS = 4  # per side: three values give a variance with two degrees of freedom, too loose to test

Kind = Literal["within", "across", "peers"]
WITHIN: Kind = "within"
ACROSS: Kind = "across"
PEERS: Kind = "peers"  # across two runs, each server relative to its scenario's others (lab.results.relative)
DEFAULT_MARGINS: dict[Kind, float] = {WITHIN: 0.03, ACROSS: 0.10, PEERS: 0.03}
MARGIN_VARS: dict[Kind, str] = {WITHIN: "LAB_MARGIN_WITHIN", ACROSS: "LAB_MARGIN_ACROSS",
                                 PEERS: "LAB_MARGIN_PEERS"}
MARGIN_FLAGS: dict[Kind, str] = {WITHIN: "--margin-within", ACROSS: "--margin-across",
                                 PEERS: "--margin-peers"}
MARGIN_HELP: dict[Kind, str] = {
    WITHIN: "the least change between servers of one run that counts (0.03 = 3 %): repetitions are "
            "interleaved across servers, so the machine's drift hits all alike",
    ACROSS: "the least change between two runs that counts (0.10 = 10 %): the machine drifts between runs",
    PEERS: "the least change between two runs, relative to the scenario's other servers, that counts (0.03 = "
           "3 %): the machine's move cancels, a server's own drift between runs remains",
}


def margin(kind: Kind, raw: object = None, env: Mapping[str, str] = os.environ) -> float:
    """The margin of a comparison kind: `raw` (a flag's value) if given, else its LAB_MARGIN_* variable,
    else the default; a ValueError naming the knob when out of range."""
    var = MARGIN_VARS[kind]
    value = knobs.number(raw if raw not in (None, "") else env.get(var), var, 0.0, 1.0)
    return DEFAULT_MARGINS[kind] if value is None else value


def add_margin_flag(parser: argparse.ArgumentParser, kind: Kind) -> None:
    """The flag of a kind's margin, its default from LAB_MARGIN_* (checked by `margin`)."""
    knobs.env_flag(parser, MARGIN_FLAGS[kind], MARGIN_VARS[kind], "",
                   f"{MARGIN_HELP[kind]}; default {DEFAULT_MARGINS[kind]:g}".replace("%", "%%"))


def settings(kind: Kind, margin_value: float) -> dict[str, Any]:
    """What results.json and a comparison record of the rule they were judged by."""
    return {"kind": kind, "margin": margin_value, "alpha": ALPHA, "power": POWER, "target": TARGET,
            "min_reps": MIN_REPS, "knob": MARGIN_VARS[kind]}


@dataclass(frozen=True)
class Decision:
    """How B's values compare with A's: `changed` when the minimum-effect test says so."""

    changed: bool
    direction: int  # +1: B higher, -1: B lower, 0: equal
    ratio: float | None  # B / A (geometric means; plain means on the raw scale); None when A's is 0
    p: float | None  # the minimum-effect test's p; None: too few values to test
    ci: tuple[float, float] | None  # 95 % interval of the ratio (None on the raw scale)
    n: tuple[int, int]
    reason: str  # why not changed ("" when changed)
    margin: float = 0.0  # the relative change the test treated as none
    alpha: float = ALPHA  # the level the change had to pass (the family's, after `adjust`)
    sigma: float | None = None  # one repetition's scatter (sd of the logs) the test used
    df: float | None = None
    mde: float | None = None  # the change marked with POWER (relative, either way); None: not on logs
    reps_for_target: int | None = None  # repetitions a side to see TARGET; None: inside the margin
    logs: bool = True  # tested on the log scale; False: the raw values (sigma relative to A's mean)
    paired: bool = False  # tested round by round (the difference within each round; sigma: its sd / sqrt 2)

    def confidence(self) -> str:
        """'x1.25 [1.18-1.33], p=0.004' for people."""
        if self.p is None:
            return f"not tested ({self.reason})"
        parts = []
        if self.ratio is not None:
            parts.append(f"x{self.ratio:.3g}" + (f" [{self.ci[0]:.3g}-{self.ci[1]:.3g}]" if self.ci else ""))
        parts.append(f"p={self.p:.2g}")
        return ", ".join(parts)

    def could_see(self) -> str:
        """'±12 %' (the detectable effect, rounded up), or '' when there is none."""
        if self.mde is None:
            return ""
        return f"±{math.ceil(self.mde * 100 - 1e-9):.0f}%" if self.mde < 9 else "only beyond 10x"

    def sensitivity(self) -> str:
        """What a tie could have seen: 'could see ±12% (80% power, alpha 0.05, margin 3%); 5% needs 14
        repetitions a side'."""
        if self.mde is None:
            return ""
        text = (f"could see {self.could_see()} ({POWER:.0%} power, alpha {self.alpha:.2g}, "
                f"margin {self.margin:.0%})")
        if self.reps_for_target is not None:
            return f"{text}; {TARGET:.0%} needs {self.reps_for_target} repetitions a side"
        return f"{text}; {TARGET:.0%} is inside the margin"

    def said(self) -> str:
        """The confidence and, where the test ran and states one, what it could see: for a sentence."""
        return f"{self.confidence()}; {self.sensitivity()}" if self.p is not None and self.mde is not None \
            else self.confidence()

    def as_dict(self) -> dict[str, Any]:
        """The decision as results.json records it."""
        return {"changed": self.changed, "direction": self.direction, "ratio": _round(self.ratio),
                "ci": [_round(x) for x in self.ci] if self.ci else None, "p": _round(self.p),
                "n": list(self.n), "margin": self.margin, "alpha": _round(self.alpha),
                "sigma": _round(self.sigma), "mde": _round(self.mde),
                "reps_for_target": self.reps_for_target, "logs": self.logs, "paired": self.paired,
                "reason": self.reason}


def _round(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.4g}")


# --- power: the smallest change the test sees ---------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def standardized_mde(n_a: int, n_b: int, df: float, alpha: float, power: float = POWER) -> float:
    """The true shift past the margin, in units of one repetition's sd, that a one-sided two-sample
    t-test with these sizes, degrees of freedom and alpha detects with `power` (statsmodels'
    noncentral-t power, solved for the effect)."""
    from scipy import optimize
    from statsmodels.stats.power import TTestIndPower  # imported when needed: it pulls in pandas (seconds)

    calc = TTestIndPower()

    def short(d: float) -> float:
        got = float(calc.power(d, n_a, alpha, ratio=n_b / n_a, df=df, alternative="larger"))
        return 1.0 - power if math.isnan(got) else got - power  # NaN: overflow where power is ~1
    hi = 1.0
    while short(hi) < 0 and hi < 1e6:
        hi *= 2
    return float(optimize.brentq(short, 0.0, hi, xtol=1e-6))


def twin_mde(sigma: float, n: int, margin_value: float, alpha: float = ALPHA) -> float:
    """The change a verdict between an entry and a twin of it (n repetitions a side, this scatter of the
    logs on both sides) detects with POWER: what the entry itself can resolve, as a ratio less one."""
    shift = standardized_mde(n, n, 2 * n - 2, alpha) * sigma
    return math.expm1(math.log1p(margin_value) + shift)


def reps_for(change: float, sigma: float, margin_value: float, alpha: float = ALPHA,
             power: float = POWER, logs: bool = True, paired: bool = False) -> int | None:
    """Repetitions a side that would mark a true `change` (0.05 = 5 %) with `power` at this scatter;
    None when the change is inside the margin (no number of repetitions shows it). `logs`: sigma is the
    scatter of the logs (else of the values, relative to A's mean, on the raw scale)."""
    shift = math.log1p(change) - math.log1p(margin_value) if logs else change - margin_value
    if shift <= 0:
        return None
    if sigma <= 0:
        return MIN_REPS
    return _reps(float(f"{shift / sigma:.3g}"), alpha, power, paired)


@functools.lru_cache(maxsize=4096)
def _reps(effect_size: float, alpha: float, power: float, paired: bool = False) -> int:
    """The fewest repetitions a side (at least MIN_REPS) at which statsmodels' power of the one-sided
    two-sample t-test reaches `power`: a search over whole repetitions (its own solver gives up on the
    large effects that need fewer than MIN_REPS)."""
    from statsmodels.stats.power import TTestIndPower

    calc = TTestIndPower()

    def enough(n: int) -> bool:  # paired: n rounds, n - 1 degrees of freedom
        df = n - 1 if paired else None
        got = float(calc.power(effect_size, n, alpha, ratio=1.0, df=df, alternative="larger"))
        return math.isnan(got) or got >= power  # NaN: statsmodels' noncentral t overflows, power ~1
    lo, hi = MIN_REPS - 1, MIN_REPS  # not enough at lo (or below the floor), try hi
    while not enough(hi) and hi < 1_000_000:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


def with_sensitivity(d: Decision, alpha: float) -> Decision:
    """The decision with its detectable effect and repetitions for TARGET at this alpha (the test's own,
    or the family's where a comparison corrects for many figures)."""
    if d.sigma is None or d.df is None:
        return replace(d, alpha=alpha)
    na, nb = d.n
    shift = standardized_mde(na, nb, d.df, alpha) * d.sigma
    mde = math.expm1(math.log1p(d.margin) + shift) if d.logs else d.margin + shift
    return replace(d, alpha=alpha, mde=mde,
                   reps_for_target=reps_for(TARGET, d.sigma, d.margin, alpha, logs=d.logs, paired=d.paired))


# --- the rule ---------------------------------------------------------------------------------------------


def effect(ratio: float) -> float:
    """How far a ratio is from no change, the same both ways: 1.25 and 0.8 are both 0.25."""
    return max(ratio, 1 / ratio) - 1 if ratio > 0 else math.inf


@dataclass(frozen=True)
class Welch:
    diff: float  # mean(B) - mean(A), on the scale tested
    se: float
    df: float


def welch(a: Sequence[float], b: Sequence[float]) -> Welch:
    """The standard error and degrees of freedom scipy.stats.ttest_ind uses: pooled with equal sizes
    (the lab's runs; then robust to unequal variances, n_a + n_b - 2 degrees of freedom), Welch's
    otherwise. Needed to weigh an entry's own scatter against the figure's typical one."""
    na, nb = len(a), len(b)
    va, vb = statistics.variance(a), statistics.variance(b)
    diff = statistics.fmean(b) - statistics.fmean(a)
    if na == nb:
        return Welch(diff, math.sqrt((va + vb) / na), float(na + nb - 2))
    se = math.sqrt(va / na + vb / nb)
    df = se**4 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1)) if se else float(na + nb - 2)
    return Welch(diff, se, df)


def paired_diff(a: Sequence[float], b: Sequence[float]) -> Welch:
    """The mean of the round-by-round differences b - a, its standard error and n - 1 degrees of freedom
    (scipy.stats.ttest_rel's): what the rounds shared cancels in each difference."""
    d = [y - x for x, y in zip(a, b, strict=True)]
    return Welch(statistics.fmean(d), statistics.stdev(d) / math.sqrt(len(d)), float(len(d) - 1))


@dataclass(frozen=True)
class Noise:
    """A figure's typical scatter between repetitions, pooled over many entries: the variance of one
    repetition's log value, and its degrees of freedom."""

    var: float
    df: int


def pooled_noise(groups: Sequence[Sequence[float]]) -> Noise | None:
    """The typical variance of the logs within a group (an entry's repetitions): the median over the
    groups, each divided by the median of its chi-square (Wilson-Hilferty), so that one broken entry
    with a wild scatter does not set everyone's noise. Groups of one value, or with a value that is not
    positive, are left out; None when nothing is left."""
    scaled, df = [], 0
    for g in groups:
        if len(g) >= 2 and min(g) > 0:
            k = len(g) - 1
            scaled.append(statistics.variance([math.log(x) for x in g]) / (1 - 2 / (9 * k)) ** 3)
            df += k
    return Noise(statistics.median(scaled), df) if scaled else None


def log_welch(a: Sequence[float], b: Sequence[float], noise: Noise | None = None) -> Welch:
    """The difference of the mean logs of positive values, its standard error and degrees of freedom:
    from the repetitions' own scatter, or from the figure's pooled `noise` where that is larger."""
    w = welch([math.log(x) for x in a], [math.log(x) for x in b])
    if noise is not None and (typical := math.sqrt(noise.var * (1 / len(a) + 1 / len(b)))) > w.se:
        w = Welch(w.diff, typical, float(noise.df))
    return w


def decide_logs(w: Welch, n: tuple[int, int], min_effect: float, alpha: float = ALPHA) -> Decision:
    """The rule on a difference of logs already estimated (its standard error and degrees of freedom
    given): for a ratio built from more than two sets of repetitions (lab.results.relative)."""
    ratio = math.exp(w.diff)
    direction = (w.diff > 0) - (w.diff < 0)
    margin_abs = math.log1p(min_effect)
    beyond = abs(w.diff) - margin_abs
    if w.se == 0:
        p, ci = (0.0 if beyond > 0 else 1.0), (ratio, ratio)
    else:
        p, (lo, hi) = _test(w, margin_abs)
        ci = (math.exp(lo), math.exp(hi))
    sigma = w.se / math.sqrt(1 / n[0] + 1 / n[1])
    d = with_sensitivity(Decision(False, direction, ratio, p, ci, n, "", min_effect, alpha, sigma, w.df),
                         alpha)
    if beyond <= 0:
        return replace(d, reason=f"{effect(ratio):.1%} apart, within the {min_effect:.0%} that counts as a "
                                 "change")
    if p >= alpha:
        return replace(d, reason=f"p={p:.2g}: the repetitions do not show the change exceeds "
                                 f"{min_effect:.0%}")
    return replace(d, changed=True)


def _test(w: Welch, margin_abs: float) -> tuple[float, tuple[float, float]]:
    """(p of 'the change exceeds the margin' in the estimate's direction, 95 % interval of the difference)
    from Student's t (scipy.stats.t): with the entry's own scatter, the same p and interval as
    scipy.stats.ttest_ind on B shifted by the margin (a test checks it), at a fraction of its cost."""
    from scipy import stats as sps  # imported when needed: a second's start-up for every lab command

    half = float(sps.t.ppf(1 - ALPHA / 2, w.df)) * w.se
    return float(sps.t.sf((abs(w.diff) - margin_abs) / w.se, w.df)), (w.diff - half, w.diff + half)


def decide(a: Sequence[float], b: Sequence[float], min_effect: float, *, alpha: float = ALPHA,
           min_reps: int = MIN_REPS, noise: Noise | None = None, paired: bool = False) -> Decision:
    """Are B's repetitions different from A's by more than the margin `min_effect`? `noise`: the
    figure's pooled scatter, used where it exceeds these repetitions' own. `paired`: a[i] and b[i] ran in
    the same round (servers of one run, interleaved), so the test takes the difference within each round
    (the noise is not used). (See the module's docstring.)"""
    a, b = [float(x) for x in a], [float(x) for x in b]
    n = (len(a), len(b))
    if paired and n[0] != n[1]:
        raise ValueError(f"a paired test needs one value a side per round, got {n[0]} and {n[1]}")
    if not a or not b:
        return Decision(False, 0, None, None, None, n, "no values", min_effect, alpha)
    logs = min(a + b) > 0
    ma, mb = (statistics.geometric_mean(a), statistics.geometric_mean(b)) if logs else (
        statistics.fmean(a), statistics.fmean(b))
    direction = (mb > ma) - (mb < ma)
    ratio = mb / ma if ma else None
    if min(n) < min_reps:
        return Decision(False, direction, ratio, None, None, n,
                        f"{min(n)} repetition(s) on one side; a difference needs {min_reps} a side",
                        min_effect, alpha)
    if paired:
        w = paired_diff([math.log(x) for x in a], [math.log(x) for x in b]) if logs else paired_diff(a, b)
    else:
        w = log_welch(a, b, noise) if logs else welch(a, b)
    margin_abs = math.log1p(min_effect) if logs else min_effect * abs(ma)
    beyond = abs(w.diff) - margin_abs  # how far the estimate is past the margin (negative: inside it)
    if w.se == 0:
        p = 0.0 if beyond > 0 else 1.0
        ci = (ratio, ratio) if logs and ratio is not None else None
    else:
        p, (lo, hi) = _test(w, margin_abs)
        ci = (math.exp(lo), math.exp(hi)) if logs else None
    unit = w.se / math.sqrt(1 / n[0] + 1 / n[1])
    # On the raw scale, relative to A's mean; none when that is 0 (a failure rate of 0: no relative change).
    sigma = unit if logs else unit / abs(ma) if ma else None
    d = with_sensitivity(Decision(False, direction, ratio, p, ci, n, "", min_effect, alpha, sigma, w.df,
                                  logs=logs, paired=paired), alpha)
    if beyond <= 0:
        apart = f"{effect(ratio):.1%}" if logs and ratio is not None else f"{abs(w.diff):.3g}"
        return replace(d, reason=f"{apart} apart, within the {min_effect:.0%} that counts as a change")
    if p >= alpha:
        return replace(d, reason=f"p={p:.2g}: the repetitions do not show the change exceeds "
                                 f"{min_effect:.0%}")
    return replace(d, changed=True)


def adjust(decisions: Sequence[Decision | None], alpha: float = ALPHA) -> list[Decision | None]:
    """Benjamini-Hochberg over a family of tests: keep a change only where its p is at most k/m * alpha
    for the largest such rank k among the m tested figures. Untested entries (None, p None) pass
    through, and so does every decision when only one figure was tested. Each tested decision's
    detectable effect is restated at alpha/m: what one change among m unchanged figures must pass."""
    tested = sorted((d.p, i) for i, d in enumerate(decisions) if d is not None and d.p is not None)
    m = len(tested)
    cut = max((k for k, (p, _) in enumerate(tested, 1) if p <= k / m * alpha), default=0)
    keep = {i for _, i in tested[:cut]}
    out: list[Decision | None] = []
    for i, d in enumerate(decisions):
        if d is not None and d.p is not None and m > 1:
            d = with_sensitivity(d, alpha / m)
        if d is not None and d.changed and i not in keep:
            d = replace(d, changed=False, reason=f"p={d.p:.2g} is not significant among the {m} figures "
                                                 f"tested together (Benjamini-Hochberg, {alpha:g})")
        out.append(d)
    return out
