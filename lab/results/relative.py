"""Between two runs, each server judged against its scenario's other servers, so the machine's move cancels.

Two runs minutes apart on the lab VM move coherently per scenario (identical default runs: CPU per
request x0.80-0.86 for every /json server, x1.23-1.32 for every /writes server; docs/method.md). In a
scenario with at least MIN_SERVERS servers in both runs, a figure of RELATIVE is judged for each server
relative to its peers: its B/A over the median B/A of the scenario's other servers (leave-one-out), by
the one rule of lab.results.stats (a one-sided t-test on logs against the margin). The test's standard
error adds the uncertainty of the peers' median to the server's own: each server's B/A is drawn DRAWS
times from its repetitions' scatter (a parametric bootstrap over the repetitions of every server of the
scenario in both runs), and the variance of the leave-one-out median over the draws is added. The median
B/A of all the scenario's servers is the scenario's common move, reported with its interval: the
machine's, or anything shared by every server (a kernel, a Python), which no server is credited with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from lab.results import headline, stats
from lab.results.headline import Figure

MIN_SERVERS = 3  # a server and at least two peers: a median of one peer is that peer's own noise
RELATIVE = ("cpu_per_req", "rps", "ok_rps", "p50", "p90", "p99")  # what a machine's speed moves
RPS = frozenset({"rps", "ok_rps"})
DRAWS = 4000
AT_SPEED = " at each run's reference speed"
SEED = 21  # the draws are the same on every call: a comparison reads the same twice

Entry = dict[str, Any]


@dataclass(frozen=True)
class Common:
    """A scenario's common move of one figure: the median B/A over its servers, with a 95 % interval."""

    scenario: str
    key: str  # the figure's key (headline.FIGURES)
    figure: str  # its label, as the move was measured
    ratio: float
    ci: tuple[float, float]
    servers: int

    def text(self) -> str:
        return f"x{self.ratio:.3g} [{self.ci[0]:.3g}-{self.ci[1]:.3g}] (median of {self.servers} servers)"


@dataclass(frozen=True)
class Scenario:
    """One figure of one scenario: each judgeable server's move B/A on logs, and the draws of them."""

    figure: Figure
    servers: list[str]
    moves: list[stats.Welch]
    n: list[tuple[int, int]]
    draws: Any  # numpy array, DRAWS x servers: each server's B/A (logs) drawn from its scatter

    def common(self, scenario: str) -> Common:
        import numpy as np

        med = float(np.median([w.diff for w in self.moves]))
        sd = float(np.std(np.median(self.draws, axis=1), ddof=1))
        half = _t(min(w.df for w in self.moves)) * sd
        label = self.figure.label + (AT_SPEED if self.figure is headline.CPU_AT_SPEED else "")
        return Common(scenario, self.figure.key, label, math.exp(med),
                      (math.exp(med - half), math.exp(med + half)), len(self.servers))

    def decision(self, server: str, min_effect: float, alpha: float = stats.ALPHA) -> stats.Decision:
        """The server's B/A over its peers' median B/A, tested against `min_effect`."""
        import numpy as np

        i = self.servers.index(server)
        others = [k for k in range(len(self.servers)) if k != i]
        peers = float(np.median([self.moves[k].diff for k in others]))
        var_peers = float(np.var(np.median(self.draws[:, others], axis=1), ddof=1))
        own = self.moves[i]
        se = math.sqrt(own.se**2 + var_peers)
        df_peers = min(self.moves[k].df for k in others)
        # Welch-Satterthwaite: the degrees of freedom of a sum of two variance estimates
        df = se**4 / (own.se**4 / own.df + var_peers**2 / df_peers) if se else own.df
        return stats.decide_logs(stats.Welch(own.diff - peers, se, df), self.n[i], min_effect, alpha)


def _t(df: float) -> float:
    from scipy import stats as sps

    return float(sps.t.ppf(1 - stats.ALPHA / 2, df))


def usable(fig: Figure, a: Entry, b: Entry) -> bool:
    """Can this entry's figure take part (as a judged server or a peer)? Positive values, MIN_REPS a side,
    enough requests behind a percentile, throughput not limited by the generator."""
    va, vb = fig.values(a), fig.values(b)
    if min(len(va), len(vb)) < stats.MIN_REPS or min(va + vb) <= 0:
        return False
    if fig.key in RPS and (a.get("generator_bound") or b.get("generator_bound")):
        return False
    return not (fig.key in headline.MIN_COUNT
                and min(headline.rep_counts(a) + headline.rep_counts(b)) < headline.MIN_COUNT[fig.key])


def scenario(fig: Figure, pairs: Sequence[tuple[Entry, Entry]],
             noise: stats.Noise | None = None) -> Scenario | None:
    """The scenario's moves of `fig` over the (A, B) entries of its servers, or None when fewer than
    MIN_SERVERS can take part (then today's rule judges each entry alone)."""
    import numpy as np

    ok = [(a, b) for a, b in pairs if usable(fig, a, b)]
    if len(ok) < MIN_SERVERS:
        return None
    moves = [stats.log_welch(fig.values(a), fig.values(b), noise) for a, b in ok]
    rng = np.random.default_rng(SEED)
    # normal draws at each server's standard error: the variance of a median of them is what the test adds
    # (the t-test's degrees of freedom then carry the uncertainty of the standard errors themselves)
    draws = np.array([w.diff + w.se * rng.standard_normal(DRAWS) for w in moves]).T
    return Scenario(fig, [a["server"] for a, _ in ok], moves,
                    [(len(fig.values(a)), len(fig.values(b))) for a, b in ok], draws)


def judge(s: Scenario, a: Entry, b: Entry, margin: float) -> tuple[str, float | None, stats.Decision]:
    """(mark, relative change, decision) of one server relative to its peers, with the gates of
    headline.judge: the figure's own floor, and a latency move of under two quota periods is none."""
    fig = s.figure
    decision = s.decision(a["server"], max(margin, fig.min_effect))
    change = decision.ratio - 1 if decision.ratio is not None else None  # the tested ratio's, as B net
    va = fig.value(a)
    changed = decision.changed
    if changed and fig.key in headline.MIN_COUNT and va is not None and change is not None \
            and abs(va * change) < headline.quantum_ms(a, b):
        changed = False
        decision = replace(decision, changed=False, reason="inside two quota periods")
    return headline.mark(fig, decision, changed), change, decision
