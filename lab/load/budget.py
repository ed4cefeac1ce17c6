"""The sampler's CPU budget: defaults, each costly part's share, and the stride that keeps a part in it."""

from __future__ import annotations

import math

DEFAULT_INTERVAL = 0.25
DEFAULT_BUDGET_PERCENT = 1.5  # of one core, for the sampler's own CPU
# Expensive parts run every n-th sample, n adapted to keep each within its share of the budget
# (the rest, about 0.3 of it, is what every sample costs: /proc/<pid>/stat, database, /metrics):
TCP_SHARE, TCP_MOST = 0.40, 8  # tcp: every sample while cheap, at least every 8th (2 s)
USS_SHARE, USS_MOST = 0.25, 40  # USS/PSS: every uss_every-th sample at most, at least every 40th
DEEP_SHARE, DEEP_LEAST, DEEP_MOST = 0.05, 8, 400  # all threads' children files (see ProcessTree.pids)
DEFAULT_BUDGET_SECONDS = DEFAULT_INTERVAL * DEFAULT_BUDGET_PERCENT / 100  # CPU per sample


class Stride:
    """Runs an expensive part every n-th sample, n chosen so that its mean CPU cost per sample stays
    within `share` seconds: never more often than every `least`-th sample, never rarer than `most`."""

    def __init__(self, least: int, most: int, share: float) -> None:
        self.least, self.most, self.share = least, max(least, most), share
        self.every = least
        self.runs = 0
        self._left = 0
        self._cost = 0.0

    def due(self) -> bool:
        self._left -= 1
        if self._left > 0:
            return False
        self._left = self.every
        return True

    def took(self, seconds: float) -> None:
        self.runs += 1
        self._cost = seconds if self.runs == 1 else 0.7 * self._cost + 0.3 * seconds
        wanted = math.ceil(self._cost / self.share) if self.share > 0 else self.least
        self.every = min(self.most, max(self.least, wanted))

