"""`make bench --against REV`: each server beside the same server at another git revision, to price a change.

Per server, on the bench's endpoints: this checkout's server and the one of revision REV (its servers/
package exported with `git archive` into a temporary folder and run from there, with this checkout's
Python and packages), with the server's floor and peers unless --references no. They are started
together afresh each repetition, pinned to the server CPUs and measured round-robin, as --ablation
measures (lab/bench/ablation.py), so the drift of a shared machine falls on both alike. The report gives
each one's CPU per request and this checkout's over REV's: the ratio of geometric means with its 95 %
interval and p, by the lab's one rule for a difference (lab/results/stats.py, its margin within a run).
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from lab.bench import peers
from lab.bench.ablation import FLOOR, Row
from lab.bench.fleet import REFERENCE_OF
from lab.results import stats

THIS = "this checkout"


def export(rev: str, repo: Path) -> tuple[str, Path]:
    """(the revision's short hash, a temporary folder holding its servers/ package); ValueError naming
    what to do when `rev` is not a commit of the repository."""
    found = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--short", f"{rev}^{{commit}}"],
                           capture_output=True, text=True, check=False)
    if found.returncode != 0:
        raise ValueError(f"--against {rev!r} is not a commit here; give a hash, a branch or e.g. HEAD~1 "
                         "(LAB_BENCH_AGAINST)")
    short = found.stdout.strip()
    folder = Path(tempfile.mkdtemp(prefix=f"serverlab-{short}-"))
    archive = subprocess.run(["git", "-C", str(repo), "archive", short, "servers"], capture_output=True,
                             check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return short, folder


def rows(model: str, short: str, folder: Path, references: bool) -> list[Row]:
    """This checkout's server, the revision's, then (references) its floor and peers."""
    out = [Row(THIS, "server", ""), Row(f"at {short}", "revision", str(folder))]
    if references:
        out.append(Row(FLOOR, "floor", REFERENCE_OF[model]))
        out += [Row(peers.PEERS[k][0], "peer", k) for k in peers.PEERS_OF[model]]
    return out


def report(samples: dict[str, dict[str, dict[str, list[Any]]]], short: str, paths: list[str],
           margin: float) -> tuple[list[str], dict[str, Any]]:
    """Markdown lines and data: per server and path, every target's median CPU µs per request and this
    checkout's over the revision's (ratio, interval, p); then each reference's over this checkout's."""
    rev = f"at {short}"
    lines = ["", f"## This checkout against {short}", "",
             f"CPU µs per request, medians (spread); `this / {short}` is the ratio of geometric means with "
             f"its 95 % interval and p (a change when it passes the {margin:.0%} margin); a reference's "
             "ratio is its median over this checkout's (at least 1.0 against a peer, 0.8 against a floor "
             "is the target).", "",
             "| server | path | this checkout | " + f"{rev} | this / {short} | references |",
             "|---|---|--:|--:|---|---|"]
    data: dict[str, Any] = {}
    for model, by_label in samples.items():
        for path in paths:
            values = {label: [s.cpu_us for s in per_path[path]] for label, per_path in by_label.items()}
            medians = {label: statistics.median(v) for label, v in values.items() if v}
            d = stats.decide(values[rev], values[THIS], margin)
            refs = [label for label in values if label not in (THIS, rev)]
            shown = ", ".join(f"{label} {medians[label]:.1f} ({medians[label] / medians[THIS]:.2f})"
                              for label in refs if label in medians)
            verdict = d.said() if d.changed or d.p is None else f"no change: {d.said()}"
            lines.append(f"| {model} | `{path}` | {_cell(values[THIS])} | {_cell(values[rev])} | "
                         f"{verdict} | {shown} |")
            data.setdefault(model, {})[path] = {"samples": values, "cpu_us": medians,
                                                "this_over_revision": d.as_dict()}
    lines.append("")
    return lines, data


def _cell(values: list[float]) -> str:
    if not values:
        return ""
    mid = statistics.median(values)
    return f"{mid:.1f} ({(max(values) - min(values)) / mid:.0%})"
