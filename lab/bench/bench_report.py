"""The bench's verdicts and report: each server against its reference, metrics cost, non-2xx responses."""

from __future__ import annotations

import argparse
import itertools
import os
from collections.abc import Sequence
from typing import Any

from lab import machine
from lab.bench import peers
from lab.bench.fleet import BARE, reference_of
from lab.bench.wrk import SATURATED_CPU, Series
from lab.stack import cpu_budget, idle

OVERHEAD_LIMIT = 0.05
FLOOR_RATIO_MIN = 0.8  # of the floor's throughput per CPU (issue 22: the gap is explained by the ablation)
PEER_RATIO_MIN = 1.0  # of each peer's: the lab's servers match or beat what their users would run
TARGET_CONNECTIONS = 64  # the non-2xx target holds at this many open connections
# name -> path measured; LAB_BENCH_ENDPOINTS picks among the names
PEER_NAMES = frozenset(name for kind, (name, _module) in peers.PEERS.items())
ENDPOINTS = {"json": "/json", "db": "/db", "queries": "/queries?queries=20", "fortunes": "/fortunes"}


def ratios(server: Series, reference: Series) -> tuple[float, float]:
    """(reference CPU per request / server's, server rps / reference's): >= 1.0, the server is at
    least as lean (as fast) as its reference."""
    return reference.cpu_us / server.cpu_us, server.median / reference.median


def _figures(s: Series) -> dict[str, Any]:
    return {"rps": s.median, "rps_spread": s.spread, "cpu_us": s.cpu_us, "cpu_spread": s.cpu_spread,
            "non2xx": s.non2xx, "errors": s.errors, "samples": [vars(x) for x in s.samples]}


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def build_report(results: dict[tuple[str, str], Series], models: list[str], args: argparse.Namespace,
                 server_cpus: list[int] | None, load_cpus: list[int] | None,
                 instructions: dict[str, float] | None = None,
                 held: idle.Idle | None = None) -> dict[str, Any]:
    def get(name: str, path: str) -> Series | None:
        return results.get((name, path))

    budget: float | None = vars(args).get("budget")  # cores per server; None: unbudgeted
    db_cpus: list[int] | None = vars(args).get("pinned_database_cpus")  # None: not pinned (or external)
    think_ms: int = vars(args).get("think_ms") or 0
    paths = [p for p in ENDPOINTS.values() if any(path == p for _, path in results)]
    judged_non2xx = args.connections == TARGET_CONNECTIONS
    lines = [
        f"# make bench: {args.reps} x {args.duration:g} s per figure, wrk -t1 -c{args.connections}"
        + (f", each connection waiting {think_ms} ms after a response" if think_ms else "")
        + f", pool size {args.pool_size}",
        "",
        f"Servers pinned to CPUs {server_cpus or 'all'}; wrk to CPUs {load_cpus or 'all'}; the lab's "
        f"PostgreSQL to CPUs {db_cpus or 'all (not pinned)'}; {cpu_budget.describe(budget)}"
        + (f"; {held.describe()}." if held else "."),
        "Figures are medians of the repetitions; spread is (max - min) / median. CPU per request is the",
        "server's process-tree CPU time per second over the middle of each wrk run, over wrk's requests",
        "per second: the verdicts use it (see lab/bench/).",
    ]
    data: dict[str, Any] = {"settings": vars(args), "server_cpus": server_cpus, "load_cpus": load_cpus,
                            "database_cpus": db_cpus, "idle": held.as_dict() if held else None,
                            "machine": machine.facts(), "servers": {}, "references": {}, "pairs": [],
                            "verdicts": []}
    # (key, text, holds), in the order printed; --instructions replaces the ones it counts, by key
    metric_verdicts: list[tuple[str, str, bool]] = []
    ref_verdicts: list[tuple[str, str, bool]] = []
    non2xx_verdicts: list[tuple[str, str, bool]] = []
    generator_bound: list[str] = []
    unsaturated: list[str] = []
    errors = [f"{name} {path} ({s.errors})" for (name, path), s in results.items() if s.errors]
    cores = len(server_cpus) if server_cpus else (os.cpu_count() or 1)
    for (name, path), s in results.items():
        if s.generator_bound:
            generator_bound.append(f"{name} {path}")
        if s.unsaturated(budget or (cores if name.startswith("multiproc") else 1)):
            unsaturated.append(f"{name} {path}")
        if name in models:
            data["servers"].setdefault(name, {"endpoints": {}})["endpoints"][path] = _figures(s)
        elif name.endswith(" (metrics off)"):
            model = name.removesuffix(" (metrics off)")
            figures = data["servers"].setdefault(model, {"endpoints": {}})
            figures.setdefault("metrics_off", {})[path] = _figures(s)
        elif name in BARE.values() or name in PEER_NAMES:
            data["references"].setdefault(name, {"endpoints": {}})["endpoints"][path] = _figures(s)

    pair_rows: list[str] = []
    for model in models:
        against = [(reference_of(model), "floor", FLOOR_RATIO_MIN),
                   *((name, "peer", PEER_RATIO_MIN) for name in peers.names_of(model))]
        for (ref_name, kind, minimum), path in itertools.product(against, paths):
            mine, ref = get(model, path), get(ref_name, path)
            if mine is None or ref is None:
                continue
            ratio, rps_ratio = ratios(mine, ref)
            holds = ratio >= minimum
            pair_rows.append(
                f"| {model} | {ref_name} ({kind}) | `{path}` | {mine.cpu_us:.1f} ({mine.cpu_spread:.0%}) | "
                f"{ref.cpu_us:.1f} ({ref.cpu_spread:.0%}) | **{ratio:.2f}x** | {minimum:.1f}x | "
                f"{mine.median:.0f} | {ref.median:.0f} | {rps_ratio:.2f}x | {mine.non2xx} | {ref.non2xx} |")
            data["pairs"].append({"server": model, "reference": ref_name, "kind": kind, "endpoint": path,
                                  "ratio": ratio, "target": minimum,
                                  "rps_ratio": rps_ratio, "server_cpu_us": mine.cpu_us,
                                  "reference_cpu_us": ref.cpu_us, "server_rps": mine.median,
                                  "reference_rps": ref.median, "server_non2xx": mine.non2xx,
                                  "reference_non2xx": ref.non2xx, "holds": holds})
            noise = max(mine.cpu_spread, ref.cpu_spread)
            unsettled = not holds and minimum - ratio < noise
            key = f"ref {model} {path}" if kind == "floor" else f"peer {model} {path} {ref_name}"
            ref_verdicts.append((key,
                             f"{model} {path} is {ratio:.2f}x {ref_name}'s throughput per CPU "
                             f"({mine.cpu_us:.1f} vs {ref.cpu_us:.1f} us per request; by rps "
                             f"{rps_ratio:.2f}x) (target at least {minimum:.2f}x its {kind})"
                             + (f"; within the repetitions' {noise:.0%} spread, so not settled: more "
                                "--reps will tell" if unsettled else ""), holds))
            # the figures the bench had before the references
            if model == "asyncio" and path == "/db" and kind == "floor":
                data["bare_db_rps"] = ref.median
                data["bare_db_cpu_us"] = ref.cpu_us
                data["asyncio_vs_bare_db"] = ratio
                data["asyncio_vs_bare_db_rps"] = rps_ratio
    if pair_rows:
        shown = [p for p in paths if any(get(m, p) for m in models)]
        lines += [
            "", "## Every server against its peers and its floor", "",
            f"Targets (issue 22): every server at least {PEER_RATIO_MIN:.1f}x each of its peers (production "
            "servers of its model run with their usual safeguards: lab/bench/peers.py) and at least "
            f"{FLOOR_RATIO_MIN:.1f}x its floor (the bare loop of its stack, no safeguards; `make bench "
            f"--ablation` prices the gap guarantee by guarantee) on {_and([f'`{p}`' for p in shown])}, with "
            f"0 non-2xx responses at -c{TARGET_CONNECTIONS}. Ratio: the reference's CPU per request divided "
            "by the server's; rps ratio: the server's rps divided by the reference's. multiproc is set "
            "against bare aiohttp: CPU per request does not depend on how many processes share the work, "
            "so its floor is the same app's, and what its workers cost counts as its own.",
            "",
            "| server | reference | endpoint | CPU us/req (spread) | reference CPU us/req (spread) | "
            "ratio | target | rps | reference rps | rps ratio | non-2xx | reference non-2xx |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *pair_rows,
        ]

    metric_rows: list[str] = []
    for model in models:
        on, off = get(model, "/json"), get(f"{model} (metrics off)", "/json")
        if on is None or off is None:
            continue
        cost = on.cpu_us / off.cpu_us - 1
        rps_cost = 1 - on.median / off.median
        metric_rows.append(f"| {model} | {on.median:.0f} ({on.spread:.0%}) | "
                           f"{on.cpu_us:.1f} ({on.cpu_spread:.0%}) | "
                           f"{off.median:.0f} ({off.spread:.0%}) | {off.cpu_us:.1f} ({off.cpu_spread:.0%}) | "
                           f"{cost:+.1%} ({rps_cost:+.1%}) |")
        figures = data["servers"].setdefault(model, {"endpoints": {}})
        figures.update({"json_rps": on.median, "json_rps_metrics_off": off.median, "json_cpu_us": on.cpu_us,
                        "json_cpu_us_metrics_off": off.cpu_us, "metrics_cost": cost,
                        "metrics_cost_rps": rps_cost})
        noise = max(on.cpu_spread, off.cpu_spread)
        unsettled = cost > OVERHEAD_LIMIT and cost - OVERHEAD_LIMIT < noise
        metric_verdicts.append((
            f"metrics {model}",
            f"{model}: metrics cost {cost:+.1%} of /json throughput per CPU "
            f"({on.cpu_us:.1f} vs {off.cpu_us:.1f} us per request; by rps {rps_cost:+.1%}) "
            f"(target at most {OVERHEAD_LIMIT:.0%})"
            + (f"; within the repetitions' {noise:.0%} spread, so not settled: more --reps "
               "or --instructions will tell" if unsettled else ""), cost <= OVERHEAD_LIMIT))
    for model in models:
        db = get(model, "/db")
        if db is not None:
            data["servers"][model].update({"db_rps": db.median, "db_cpu_us": db.cpu_us})
    if metric_rows:
        lines += ["", "## Metrics cost on `/json` (metrics on vs off)", "",
                  "| server | rps (spread) | CPU us/req (spread) | metrics off: rps | "
                  "metrics off: CPU us/req | metrics cost, CPU (rps) |",
                  "|---|---:|---:|---:|---:|---:|",
                  *metric_rows]

    lines.append("")
    for model in models if judged_non2xx else []:
        measured = {path: found for path in paths if (found := get(model, path)) is not None}
        if not measured:
            continue
        count = sum(x.non2xx for x in measured.values())
        dropped = sum(x.errors - x.non2xx for x in measured.values())
        non2xx_verdicts.append((
            f"non2xx {model}",
            f"{model}: {count} non-2xx responses at -c{args.connections} on {_and(list(measured))}, all "
            "repetitions" + (f" (and {dropped} socket errors)" if dropped else "") + " (target 0)",
            count == 0))
    verdicts = metric_verdicts + ref_verdicts + non2xx_verdicts
    non2xx_note = "" if judged_non2xx else (
        f"- NOTE: the non-2xx target holds at -c{TARGET_CONNECTIONS}; this run used -c{args.connections}, "
        "so its non-2xx counts are shown, not judged.")

    if instructions:
        lines += ["Instructions per request under callgrind (repeatable; the verdicts they count are judged "
                  "on them, and their CPU-time ones are shown for reference):", "",
                  "| target | instructions per request |", "|---|---:|"]
        lines += [f"| {name} | {value:,.0f} |" for name, value in instructions.items()]
        data["instructions_per_request"] = instructions
        data["verdicts_by_cpu_time"] = [{"text": t, "holds": ok} for _, t, ok in verdicts]
        counted: dict[str, tuple[str, bool]] = {}
        for model in [m for m in models if f"{m} /json" in instructions]:
            i_on, i_off = instructions[f"{model} /json"], instructions[f"{model} (metrics off) /json"]
            cost = i_on / i_off - 1
            data["servers"].setdefault(model, {"endpoints": {}})["metrics_cost_instructions"] = cost
            counted[f"metrics {model}"] = (
                f"{model}: metrics cost {cost:+.1%} of /json throughput by instructions "
                f"({i_on:,.0f} vs {i_off:,.0f} per request) (target at most {OVERHEAD_LIMIT:.0%})",
                cost <= OVERHEAD_LIMIT)
        bare_db = f"{BARE['aiohttp']} /db"
        if "asyncio /db" in instructions and bare_db in instructions:
            ratio = instructions[bare_db] / instructions["asyncio /db"]
            data["asyncio_vs_bare_db_instructions"] = ratio
            counted["ref asyncio /db"] = (
                f"asyncio /db is {ratio:.2f}x {BARE['aiohttp']}'s throughput by instructions "
                f"({instructions['asyncio /db']:,.0f} vs {instructions[bare_db]:,.0f} per request) "
                f"(target at least {FLOOR_RATIO_MIN:.2f}x)", ratio >= FLOOR_RATIO_MIN)
        lines += ["", "By CPU time (for reference):"]
        lines += [f"- {'pass' if ok else 'miss'}: {t}" for key, t, ok in verdicts if key in counted]
        keys = {key for key, _, _ in verdicts}
        verdicts = [(key, *counted.get(key, (t, ok))) for key, t, ok in verdicts]
        verdicts += [(key, t, ok) for key, (t, ok) in counted.items() if key not in keys]
        lines.append("")
    for _, text, ok in verdicts:
        lines.append(f"- {'PASS' if ok else 'MISS'}: {text}")
    if non2xx_note:
        lines.append(non2xx_note)
    if generator_bound:
        lines.append(f"- WARNING: the load generator was near 100% CPU for {', '.join(generator_bound)}: "
                     "those figures are the generator's limit, not the server's.")
    if unsaturated:
        lines.append(f"- WARNING: the server used under {SATURATED_CPU:.0f}% of its CPUs for "
                     f"{', '.join(unsaturated)}: something else was the limit (a busy machine or the "
                     "database), so those figures understate the server; rerun on a quiet machine.")
    if errors:
        lines.append(f"- WARNING: wrk counted non-2xx responses or socket errors for {', '.join(errors)} "
                     "(all repetitions): those requests were answered with an error, or not at all; "
                     "read that server's log and /metrics (rejections) before trusting its figure.")
    data["verdicts"] = [{"text": t, "holds": ok} for _, t, ok in verdicts]
    data["errors"] = {f"{name} {path}": s.errors for (name, path), s in results.items()}
    data["non2xx"] = {f"{name} {path}": s.non2xx for (name, path), s in results.items()}
    data["unsaturated"] = unsaturated
    data["generator_bound"] = generator_bound
    data["all_hold"] = all(ok for _, _, ok in verdicts)
    return {"markdown": "\n".join(lines) + "\n", "data": data}
