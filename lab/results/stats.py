"""The one rule that calls two sets of repetitions different: a rank test plus a minimum effect size.

A figure differs between A and B only when both hold:
- the two-sided Mann-Whitney U test over the repetition-level values gives p < ALPHA (exact over all
  splits of the pooled values for small samples, ties included; normal approximation beyond), and
- the medians differ by at least the figure's minimum effect (a ratio of 1.10 for 10 %), so that a
  statistically clear but practically tiny drift of the machine is not sold as a change.
With four repetitions a side the smallest possible p is 0.029, with three it is 0.1: fewer than four
repetitions can never show a difference, which the verdict says rather than guesses. The 95 %
confidence interval of the ratio of medians (percentile bootstrap, seeded, so the same inputs always
print the same interval) is reported beside, as the confidence a person reads.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

ALPHA = 0.05
MIN_REPS = 4  # below this per side a rank test cannot reach p < ALPHA
EXACT_LIMIT = 3_500  # splits enumerated exactly (7 v 7 is 3,432); beyond, the normal approximation
BOOTSTRAP = 1_000
SEED = 20261201


@dataclass(frozen=True)
class Decision:
    """How B's values compare with A's: `changed` when the test and the minimum effect both say so."""

    changed: bool
    direction: int  # +1: B higher, -1: B lower, 0: equal medians
    ratio: float | None  # median(B) / median(A); None when A's median is 0
    p: float | None  # None: too few values to test
    ci: tuple[float, float] | None  # 95 % interval of the ratio
    n: tuple[int, int]
    reason: str  # why not changed ("" when changed)

    def confidence(self) -> str:
        """'p=0.029, x1.25 [1.18-1.33]' for people."""
        if self.p is None:
            return f"not tested ({self.reason})"
        parts = [f"p={self.p:.2g}"]
        if self.ratio is not None:
            parts.append(f"x{self.ratio:.3g}")
            if self.ci is not None:
                parts.append(f"[{self.ci[0]:.3g}-{self.ci[1]:.3g}]")
        return ", ".join(parts)


def _u(a: Sequence[float], b: Sequence[float]) -> float:
    """U of sample a: pairs (x in a, y in b) with x > y, ties counting one half."""
    return sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in a for y in b)


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test."""
    n, m = len(a), len(b)
    if not n or not m:
        return 1.0
    observed = _u(a, b)
    center = n * m / 2
    extreme = abs(observed - center)
    pooled = list(a) + list(b)
    splits = math.comb(n + m, n)
    if splits <= EXACT_LIMIT:  # every way of splitting the pooled values: exact, ties included
        hits = 0
        for chosen in itertools.combinations(range(n + m), n):
            picked = set(chosen)
            xa = [pooled[i] for i in chosen]
            xb = [pooled[i] for i in range(n + m) if i not in picked]
            if abs(_u(xa, xb) - center) >= extreme - 1e-9:
                hits += 1
        return hits / splits
    # Normal approximation with the tie correction and a continuity correction.
    ranks = _midranks(pooled)
    ties = sum(t**3 - t for t in _tie_sizes(pooled))
    sigma = math.sqrt(n * m / 12 * ((n + m + 1) - ties / ((n + m) * (n + m - 1))))
    if sigma == 0:
        return 1.0
    rank_sum = sum(ranks[:n])
    u = rank_sum - n * (n + 1) / 2
    z = (abs(u - center) - 0.5) / sigma
    return min(1.0, math.erfc(max(0.0, z) / math.sqrt(2)))


def _midranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _tie_sizes(values: Sequence[float]) -> list[int]:
    counts: dict[float, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return [c for c in counts.values() if c > 1]


def ratio_ci(a: Sequence[float], b: Sequence[float]) -> tuple[float, float] | None:
    """95 % percentile-bootstrap interval of median(B) / median(A); None when A's median can be 0."""
    rng = random.Random(SEED)
    ratios = []
    for _ in range(BOOTSTRAP):
        ma = statistics.median(rng.choices(a, k=len(a)))
        mb = statistics.median(rng.choices(b, k=len(b)))
        if ma == 0:
            return None
        ratios.append(mb / ma)
    ratios.sort()
    return ratios[int(0.025 * BOOTSTRAP)], ratios[int(0.975 * BOOTSTRAP) - 1]


def effect(ratio: float) -> float:
    """How far a ratio is from no change, the same both ways: 1.25 and 0.8 are both 0.25."""
    return max(ratio, 1 / ratio) - 1 if ratio > 0 else math.inf


def decide(a: Sequence[float], b: Sequence[float], min_effect: float, *, alpha: float = ALPHA,
           min_reps: int = MIN_REPS) -> Decision:
    """Are B's repetitions different from A's? (The one rule: see the module's docstring.)"""
    a, b = [float(x) for x in a], [float(x) for x in b]
    n = (len(a), len(b))
    if not a or not b:
        return Decision(False, 0, None, None, None, n, "no values")
    ma, mb = statistics.median(a), statistics.median(b)
    direction = (mb > ma) - (mb < ma)
    ratio = mb / ma if ma else None
    if min(n) < min_reps:
        return Decision(False, direction, ratio, None, None, n,
                        f"{min(n)} repetition(s) on one side; a difference needs {min_reps} a side")
    p = mann_whitney_p(a, b)
    ci = ratio_ci(a, b)
    size = effect(ratio) if ratio is not None else (0.0 if mb == ma else math.inf)
    if p >= alpha:
        return Decision(False, direction, ratio, p, ci, n, f"p={p:.2g} is not below {alpha:g}")
    if size < min_effect:
        return Decision(False, direction, ratio, p, ci, n,
                        f"{size:.1%} apart, under the {min_effect:.0%} that counts as a change")
    return Decision(True, direction, ratio, p, ci, n, "")
