"""`make bench --ablation`: what each guarantee of the four servers costs in CPU per request.

Per server, on /json and /db: the server with every guarantee on, with each switched off in turn
(LAB_ABLATE=<name>, servers/ablation.py), with all of them off, next to its floor (the bare loop of
its stack, lab/bench/bare_*.py) and its peers (lab/bench/peers.py). One server at a time: its
configurations, floor and peers are started together (afresh each repetition), pinned to the
server CPUs, and measured round-robin with wrk as `make bench` measures (lab/bench/bench.py), so
the drift of a shared machine spreads over all of them. A guarantee's cost is the server's CPU per
request with it on minus with it off, with the 95 % interval of that difference from the
repetitions (a t interval on the log ratio, the scatter pooled over the server's configurations).
A cost whose interval holds 0 is reported as within noise, with the smallest cost these repetitions
could have shown (the interval's half-width).
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.bench import peers
from lab.bench.fleet import REFERENCE_OF, start_bare
from lab.bench.wrk import WARM_SECONDS, Target, measure, run_wrk
from lab.cpus import pin_tree
from lab.results import stats
from lab.stack import procs
from servers.ablation import GUARANTEES

PATHS = ("/json", "/db")
ALL_ON, ALL_OFF = "all on", "all off"


def configs_of(names: Collection[str]) -> dict[str, str]:
    """A configuration's label -> its LAB_ABLATE value: all on, each of `names` off in turn (in
    GUARANTEES' order), all off."""
    return {ALL_ON: "", **{f"-{g}": g for g in GUARANTEES if g in names}, ALL_OFF: "all"}


CONFIGS = configs_of(GUARANTEES)
FLOOR, PEER = "floor", "peer"


@dataclass(frozen=True)
class Row:
    """One target of a server's group: a configuration of the server, its floor, or a peer."""

    label: str  # a key of CONFIGS, "floor", or a peer's name
    kind: str  # "server", "floor", "peer" or "revision" (the server of another checkout: --against)
    arg: str  # LAB_ABLATE value, the floor's bare kind, the peer's kind, or the checkout's folder


def rows_of(model: str, floor_kind: str, configs: dict[str, str] | None = None,
            references: bool = True) -> list[Row]:
    """The server in each configuration (CONFIGS by default), then its floor and peers (references)."""
    rows = [Row(label, "server", value) for label, value in (configs or CONFIGS).items()]
    if references:
        rows.append(Row(FLOOR, "floor", floor_kind))
        rows += [Row(peers.PEERS[k][0], "peer", k) for k in peers.PEERS_OF[model]]
    return rows


@dataclass
class Group:
    """One server's rows, started together and stopped together."""

    model: str
    rows: list[Row]
    url: str  # the database
    pool_size: int
    server_cpus: list[int] | None

    def start(self, log_dir: Path) -> tuple[dict[str, Target], Callable[[], None]]:
        """Targets by label, and what stops them all."""
        servers: list[procs.ServerProcess] = []
        others: list[subprocess.Popen[bytes]] = []

        def stop() -> None:
            for server in servers:
                procs.stop_server(server)
            for popen in others:
                peers.stop_peer(popen)

        targets: dict[str, Target] = {}
        try:
            for row in self.rows:
                port = procs.free_port()
                if row.kind == "server":
                    env = {"LAB_POOL_SIZE": str(self.pool_size)}
                    if row.arg:
                        env["LAB_ABLATE"] = row.arg
                    folder = log_dir / (row.arg.replace(",", "-") or "all-on")
                    server = procs.start_server(self.model, port=port, database_url=self.url, log_dir=folder,
                                                env=env, cpus=self.server_cpus)
                    servers.append(server)
                    pid = server.pid
                elif row.kind == "revision":  # its own servers/ package: run from its folder
                    server = procs.start_server(self.model, port=port, database_url=self.url,
                                                log_dir=log_dir / "revision", cpus=self.server_cpus,
                                                env={"LAB_POOL_SIZE": str(self.pool_size)},
                                                wrapper=("env", "-C", row.arg))
                    servers.append(server)
                    pid = server.pid
                elif row.kind == "floor":
                    others.append(start_bare(row.arg, port, self.url, self.pool_size, log_dir))
                    pid = others[-1].pid
                else:
                    others.append(peers.start_peer(row.arg, port, self.url, self.pool_size, log_dir,
                                                   self.server_cpus))
                    pid = others[-1].pid
                if self.server_cpus:
                    pin_tree(pid, self.server_cpus)
                targets[row.label] = Target(f"{self.model} {row.label}", f"http://127.0.0.1:{port}", pid)
        except BaseException:
            stop()
            raise
        return targets, stop


def run(models: list[str], url: str, args: argparse.Namespace, log_dir: Path, server_cpus: list[int] | None,
        load_cpus: list[int] | None, configs: dict[str, str] | None = None, paths: tuple[str, ...] = PATHS,
        references: bool = True, say: Callable[[str], None] = print,
        rows_for: Callable[[str], list[Row]] | None = None) -> dict[str, dict[str, dict[str, list[Any]]]]:
    """Samples by model, row label and path, every repetition; progress said as it goes. `rows_for`:
    a model's rows, when not its configurations (CONFIGS or `configs`) and references."""
    out: dict[str, dict[str, dict[str, list[Any]]]] = {}
    rows = rows_for or (lambda m: rows_of(m, REFERENCE_OF[m], configs, references))
    total = sum(len(rows(m)) for m in models) * len(paths) * args.reps
    done, began = 0, time.monotonic()
    for model in models:
        group = Group(model, rows(model), url, args.pool_size, server_cpus)
        out[model] = {row.label: {path: [] for path in paths} for row in group.rows}
        for rep in range(args.reps):
            say(f"{model} rep {rep + 1}/{args.reps}: starting {len(group.rows)} targets ...")
            targets, stop = group.start(log_dir / model / f"rep-{rep + 1}")
            try:
                for row in group.rows:
                    for path in paths:
                        run_wrk(targets[row.label].url + path, WARM_SECONDS, args.connections, load_cpus,
                                args.head, args.think_ms)
                for path in paths:
                    for row in group.rows:
                        sample = measure(targets[row.label], path, args, load_cpus)
                        out[model][row.label][path].append(sample)
                        done += 1
                        left = (time.monotonic() - began) / done * (total - done)
                        say(f"[{done}/{total}] {model:<9} {row.label:<26} {path:<5} {sample.cpu_us:7.1f} us "
                            f"cpu/req {sample.rps:7.0f} rps non-2xx {sample.non2xx}  ~{left:.0f}s left")
            finally:
                stop()
    return out


@dataclass(frozen=True)
class Cost:
    """What switching a guarantee off saved, in µs per request: on - off, with a 95 % interval."""

    us: float
    share: float  # of the all-on figure
    low: float
    high: float

    @property
    def settled(self) -> bool:
        return self.low > 0 or self.high < 0

    @property
    def detectable(self) -> float:
        """Half the interval's width, in µs: a smaller cost could not have been told from 0."""
        return (self.high - self.low) / 2


def cost(on: list[float], off: list[float], noise: stats.Noise | None) -> Cost | None:
    """The cost from the repetitions (geometric means; the log-ratio's t interval, its scatter at least
    the group's typical one); None with fewer than two repetitions a side."""
    if min(len(on), len(off)) < 2 or min(on + off) <= 0:
        return None
    w = stats.welch([math.log(x) for x in off], [math.log(x) for x in on])
    se, df = w.se, w.df
    if noise is not None and (typical := math.sqrt(noise.var * (1 / len(on) + 1 / len(off)))) > se:
        se, df = typical, float(noise.df)
    from scipy import stats as sps  # imported when needed, as lab/results/stats.py does

    half = float(sps.t.ppf(0.975, df)) * se if se else 0.0
    g_on, g_off = statistics.geometric_mean(on), statistics.geometric_mean(off)
    # on = off x ratio: the cost in µs is on - on / ratio, at each end of the ratio's interval
    lo_ratio, hi_ratio = math.exp(w.diff - half), math.exp(w.diff + half)
    return Cost(g_on - g_off, 1 - g_off / g_on, g_on - g_on / lo_ratio, g_on - g_on / hi_ratio)


def _median(samples: list[Any]) -> float:
    return statistics.median(s.cpu_us for s in samples) if samples else math.nan


def _spread(samples: list[Any]) -> float:
    values = [s.cpu_us for s in samples]
    mid = statistics.median(values) if values else 0
    return (max(values) - min(values)) / mid if mid else 0.0


def report(samples: dict[str, dict[str, dict[str, list[Any]]]], args: argparse.Namespace,
           server_cpus: list[int] | None, load_cpus: list[int] | None) -> tuple[list[str], dict[str, Any]]:
    """The bench page's ablation section (markdown lines) and its data."""
    models = list(samples)
    measured = [g for g in GUARANTEES if any(f"-{g}" in samples[m] for m in models)]
    data: dict[str, Any] = {"paths": list(PATHS), "guarantees": {g: GUARANTEES[g] for g in measured},
                            "servers": {}}
    lines = [
        "", "## What each guarantee costs (ablation)", "",
        f"CPU µs per request (median of {args.reps} x {args.duration:g} s, wrk -c{args.connections}, "
        f"servers on CPUs {server_cpus or 'all'}, wrk on {load_cpus or 'all'}; spread in brackets) of each "
        "server with all of its guarantees on, with one switched off (LAB_ABLATE, lab only), with all off, "
        "beside its floor (the bare loop of its stack) and its peers. Figures of one column were measured "
        "side by side.", "",
    ]
    header = "| configuration | " + " | ".join(f"{m} `{p}`" for m in models for p in PATHS) + " |"
    lines += [header, "|---|" + "---:|" * (len(models) * len(PATHS))]
    labels = list(dict.fromkeys(label for m in models for label in samples[m]))
    for label in labels:
        cells = []
        for m in models:
            for p in PATHS:
                got = samples[m].get(label, {}).get(p) or []
                cells.append(f"{_median(got):.1f} ({_spread(got):.0%})" if got else "")
        name = label if label in CONFIGS or label in (FLOOR,) else f"{label}"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "", "What each costs: all on minus that one off, µs per request (share of all on) and its 95 % "
        "interval; *within noise* when the interval holds 0 (then ± is the smallest cost these repetitions "
        "could show).",
        "", header.replace("configuration", "guarantee"), "|---|" + "---:|" * (len(models) * len(PATHS)),
    ]
    for label in [*(f"-{g}" for g in measured), ALL_OFF]:
        cells = []
        for m in models:
            for p in PATHS:
                found = figures(samples[m], p)
                c = found["costs"].get(label)
                data["servers"].setdefault(m, {}).setdefault(p, found)
                cells.append("" if c is None else (f"**{c['us']:+.1f}** ({c['share']:+.0%}) "
                                                   f"[{c['low']:+.1f}, {c['high']:+.1f}]" if c["settled"] else
                                                   f"{c['us']:+.1f} within noise (±{c['detectable']:.1f})"))
        what = "all of them" if label == ALL_OFF else GUARANTEES[label[1:]]
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines, data


def figures(by_label: dict[str, dict[str, list[Any]]], path: str) -> dict[str, Any]:
    """Medians, ratios to floor and peers, and each guarantee's cost, of one server on one path."""
    values = {label: [s.cpu_us for s in per_path[path]] for label, per_path in by_label.items()}
    configs = [label for label in values if label.startswith("-") or label in (ALL_ON, ALL_OFF)]
    noise = stats.pooled_noise([values[label] for label in configs])
    on = values.get(ALL_ON) or []
    costs: dict[str, dict[str, Any] | None] = {}
    for label in configs:
        if label == ALL_ON:
            continue
        c = cost(on, values.get(label) or [], noise)
        costs[label] = None if c is None else {"us": c.us, "share": c.share, "low": c.low, "high": c.high,
                                               "settled": c.settled, "detectable": c.detectable}
    medians = {label: statistics.median(v) for label, v in values.items() if v}
    return {"cpu_us": medians, "samples": values, "costs": costs,
            "non2xx": {label: sum(s.non2xx for s in per_path[path]) for label, per_path in by_label.items()}}
