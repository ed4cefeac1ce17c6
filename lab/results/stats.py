"""The one rule that calls two sets of repetitions different: a minimum-effect test on the ratio.

A figure differs between A and B only when the data say its true change is larger than the figure's
minimum effect (a ratio of 1.15 for 15 %), not merely different from zero:
- the values are compared on a log scale (a ratio is a difference of logs; CPU time, rates and
  latencies are skewed and positive) by a two-sample t over the repetition-level values (pooled with
  equal repetitions a side, where it is robust to unequal noise; Welch's otherwise);
- the test is one-sided against the margin: H0 "|log(B/A)| <= log(1 + min_effect)". A drift of the
  machine by a few per cent between two runs, however consistent, is not sold as a change, and a
  change is shown only when its whole confidence interval clears the margin (roughly);
- with four repetitions a side, one entry's own scatter is a loose estimate of its noise (three
  degrees of freedom a side), so where a comparison has many entries of the same figure, the larger of
  the entry's own scatter and the figure's typical scatter over all entries (`Noise`, a median) is
  used, with the degrees of freedom of whichever it took: conservative both ways;
- a comparison tests many figures at once (20 entries x 10 figures in a default run), so `adjust`
  applies the Benjamini-Hochberg procedure to the family: when nothing changed, the chance that any
  figure is marked stays under ALPHA, rather than ALPHA per figure.
The confidence a person reads is the ratio of geometric means B/A with its 95 % interval (from the
same t distribution) and the test's p. Values that are not all positive (a failure rate of 0) are
compared on the raw scale, the margin being min_effect of A's mean.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

ALPHA = 0.05
MIN_REPS = 4  # per side: three values give a variance with two degrees of freedom, too loose to test


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

    def confidence(self) -> str:
        """'x1.25 [1.18-1.33], p=0.004' for people."""
        if self.p is None:
            return f"not tested ({self.reason})"
        parts = []
        if self.ratio is not None:
            parts.append(f"x{self.ratio:.3g}" + (f" [{self.ci[0]:.3g}-{self.ci[1]:.3g}]" if self.ci else ""))
        parts.append(f"p={self.p:.2g}")
        return ", ".join(parts)


# --- Student's t, without scipy ------------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        even = m * (b - m) * x / ((qam + m2) * (a + m2))
        odd = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        for num in (even, odd):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1 - tail


@functools.lru_cache(maxsize=1024)
def t_quantile(q: float, df: float) -> float:
    """The t with P(T <= t) = q (bisection; q in (0, 1))."""
    lo, hi = -1e3, 1e3
    for _ in range(64):  # 2000 / 2**64: far below any printed digit
        mid = (lo + hi) / 2
        if 1 - t_sf(mid, df) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


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
    """Welch's t where the sample sizes differ; with equal sizes (the lab's runs) the pooled two-sample t,
    which is then robust to unequal variances and keeps all n_a + n_b - 2 degrees of freedom."""
    na, nb = len(a), len(b)
    va, vb = statistics.variance(a), statistics.variance(b)
    diff = statistics.fmean(b) - statistics.fmean(a)
    if na == nb:
        return Welch(diff, math.sqrt((va + vb) / na), float(na + nb - 2))
    se = math.sqrt(va / na + vb / nb)
    df = se**4 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1)) if se else float(na + nb - 2)
    return Welch(diff, se, df)


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


def decide(a: Sequence[float], b: Sequence[float], min_effect: float, *, alpha: float = ALPHA,
           min_reps: int = MIN_REPS, noise: Noise | None = None) -> Decision:
    """Are B's repetitions different from A's by more than min_effect? `noise`: the figure's pooled
    scatter, used where it exceeds these repetitions' own. (See the module's docstring.)"""
    a, b = [float(x) for x in a], [float(x) for x in b]
    n = (len(a), len(b))
    if not a or not b:
        return Decision(False, 0, None, None, None, n, "no values")
    logs = min(a + b) > 0
    ma, mb = (statistics.geometric_mean(a), statistics.geometric_mean(b)) if logs else (
        statistics.fmean(a), statistics.fmean(b))
    direction = (mb > ma) - (mb < ma)
    ratio = mb / ma if ma else None
    if min(n) < min_reps:
        return Decision(False, direction, ratio, None, None, n,
                        f"{min(n)} repetition(s) on one side; a difference needs {min_reps} a side")
    w = welch([math.log(x) for x in a], [math.log(x) for x in b]) if logs else welch(a, b)
    if logs and noise is not None and (typical := math.sqrt(noise.var * (1 / n[0] + 1 / n[1]))) > w.se:
        w = Welch(w.diff, typical, float(noise.df))
    margin = math.log1p(min_effect) if logs else min_effect * abs(ma)
    beyond = abs(w.diff) - margin  # how far the estimate is past the margin (negative: inside it)
    if w.se == 0:
        p = 0.0 if beyond > 0 else 1.0
        ci = (ratio, ratio) if logs and ratio is not None else None
    else:
        p = t_sf(beyond / w.se, w.df)
        half = t_quantile(0.975, w.df) * w.se
        ci = (math.exp(w.diff - half), math.exp(w.diff + half)) if logs else None
    if beyond <= 0:
        apart = f"{effect(ratio):.1%}" if logs and ratio is not None else f"{abs(w.diff):.3g}"
        return Decision(False, direction, ratio, p, ci, n,
                        f"{apart} apart, within the {min_effect:.0%} that counts as a change")
    if p >= alpha:
        return Decision(False, direction, ratio, p, ci, n,
                        f"p={p:.2g}: the repetitions do not show the change exceeds {min_effect:.0%}")
    return Decision(True, direction, ratio, p, ci, n, "")


def adjust(decisions: Sequence[Decision | None], alpha: float = ALPHA) -> list[Decision | None]:
    """Benjamini-Hochberg over a family of tests: keep a change only where its p is at most k/m * alpha
    for the largest such rank k among the m tested figures. Untested entries (None, p None) pass
    through, and so does every decision when only one figure was tested."""
    tested = sorted((d.p, i) for i, d in enumerate(decisions) if d is not None and d.p is not None)
    m = len(tested)
    cut = max((k for k, (p, _) in enumerate(tested, 1) if p <= k / m * alpha), default=0)
    keep = {i for _, i in tested[:cut]}
    out: list[Decision | None] = []
    for i, d in enumerate(decisions):
        if d is not None and d.changed and i not in keep:
            d = replace(d, changed=False, reason=f"p={d.p:.2g} is not significant among the {m} figures "
                                                 f"tested together (Benjamini-Hochberg, {alpha:g})")
        out.append(d)
    return out
