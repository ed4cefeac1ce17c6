"""`make selfcheck`: does the lab tell a change from noise? Two checks, each a real pair of runs.

    python -m lab selfcheck [--profile quick] [--servers ...] [--scenarios ...] [--reps N] [--duration S]
        [--ab-server asyncio] [--skip-aa] [--skip-ab] [--load-vs-bench CYCLES]
        [--power-tries N] [--power-effects 5,10,20] [--power-aa PAIRS] [--power-server asyncio]
        [--power-scenario json] [--power-base-us US]

- A/A: the same settings twice (by default the default `make load`), compared: nothing may be
  marked better, worse, higher or lower. A mark here is noise the rule let through.
- A/B: `hold` with LAB_POOL_SIZE=2 against 10 on one server (each request holds a pool connection
  for 20 ms, so the pool caps throughput near pool/0.02 requests/s): the comparison must mark the
  throughput change. Missing it means the rule is blind.
- the power curve (`--power-tries N`, 0 skips it): N runs, each of one server several times over,
  interleaved: a baseline, unchanged copies (A/A) and copies with +5, +10, +20 % CPU per request
  (LAB_EXTRA_CPU_US); how often each change is detected, and how often A/A pairs are marked, within a
  run and between runs (lab/power_curve.py). It passes when +10 % (the nearest effect to it) is
  detected within a run in at least 8 of 10 tries and at most 1 in 20 A/A pairs is marked.
- load vs bench (opt-in, `--load-vs-bench N`): the CPU per request of /json and /db from `make load`
  and from `make bench`, alternated N times, must agree within 15 % (lab/load_vs_bench.py).
- fidelity (opt-in, `--fidelity yes`): json, db and io under the default, at a full core without a
  budget, and with idle CPUs halting: each server's CPU per request relative to asyncio's must agree
  within 10 % between the default and the full core; halting against polling is reported per server
  beside its noise (lab/fidelity.py).
All write normal run folders and compare pages under reports/selfcheck-<time>/, and selfcheck.md /
selfcheck.json there; the exit status is 0 only when every check run passes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab import fidelity, files, knobs, load_vs_bench, power_curve
from lab.fmt import fmt_seconds
from lab.knobs import env_flag
from lab.load import plan, runner
from lab.load import settings as load_settings
from lab.load.settings import RunError, Settings, say
from lab.report import compare
from lab.results import stats
from loadtests import catalogue
from servers.settings import MODELS

AB_SCENARIO = "hold"
AB_POOLS = (2, 10)
THROUGHPUT = frozenset({"rps", "ok rps"})


def build_parser() -> argparse.ArgumentParser:
    p = load_settings.build_parser("python -m lab selfcheck", __doc__)
    p.add_argument("--ab-server", default="asyncio", help="the server of the A/B check [default asyncio]")
    p.add_argument("--ab-reps", default="", help=f"repetitions of the A/B runs (default: the A/A's, at least "
                                                 f"{stats.MIN_REPS})")
    p.add_argument("--skip-aa", action="store_true", help="run only the A/B check")
    p.add_argument("--skip-ab", action="store_true", help="run only the A/A check")
    p.add_argument("--load-vs-bench", default=os.environ.get("LAB_SELFCHECK_LOAD_VS_BENCH", "0"),
                   help="cycles of the load-vs-bench check (one make load and one make bench repetition "
                        "each, ~2 min a cycle with the defaults); 0 skips it [LAB_SELFCHECK_LOAD_VS_BENCH]")
    env_flag(p, "--fidelity", "LAB_SELFCHECK_FIDELITY", "no", "yes: also run the fidelity check (three "
             "runs of json, db and io: default, full core, idle CPUs halting; ~15 min with the defaults)",
             os.environ, choices=("yes", "no"))
    p.add_argument("--power-tries", default=os.environ.get("LAB_SELFCHECK_POWER_TRIES", "10"),
                   help="tries (runs) of the power curve; 0 skips it [LAB_SELFCHECK_POWER_TRIES, default 10]")
    p.add_argument("--power-effects", default=os.environ.get("LAB_SELFCHECK_POWER_EFFECTS", "5,10,20"),
                   help="extra CPU per request to inject, in per cent of the baseline's "
                        "[LAB_SELFCHECK_POWER_EFFECTS, default 5,10,20]")
    p.add_argument("--power-aa", default=os.environ.get("LAB_SELFCHECK_POWER_AA", "20"),
                   help="A/A pairs within runs, spread over the tries [LAB_SELFCHECK_POWER_AA, default 20]")
    p.add_argument("--power-server", default=os.environ.get("LAB_SELFCHECK_POWER_SERVER", "asyncio"),
                   help="the server of the power curve [LAB_SELFCHECK_POWER_SERVER, default asyncio]")
    p.add_argument("--power-scenario", default=os.environ.get("LAB_SELFCHECK_POWER_SCENARIO", "json"),
                   help="its scenario [LAB_SELFCHECK_POWER_SCENARIO, default json]")
    p.add_argument("--power-from", default="",
                   help="judge the power curve tries of an earlier self-check folder again, by the rules as "
                        "they are now, instead of running anything")
    p.add_argument("--power-base-us", default=os.environ.get("LAB_SELFCHECK_POWER_BASE_US", ""),
                   help="the baseline's CPU per request the effects are shares of (default: measured by a "
                        "pilot run first) [LAB_SELFCHECK_POWER_BASE_US]")
    return p


def power_design(args: argparse.Namespace) -> power_curve.Design | None:
    tries = load_settings.int_knob(args.power_tries, "--power-tries", 0, 1000) or 0
    if not tries:
        return None
    if args.power_server not in MODELS:
        raise RunError(f"--power-server {args.power_server!r}: choose one of {', '.join(MODELS)}")
    if args.power_scenario not in catalogue.SCENARIOS or catalogue.SCENARIOS[args.power_scenario].open_model:
        raise RunError(f"--power-scenario {args.power_scenario!r}: choose a closed-loop scenario, "
                       "e.g. json, db")
    try:
        base_us = knobs.number(args.power_base_us, "--power-base-us / LAB_SELFCHECK_POWER_BASE_US", 0.1, 1e6)
    except ValueError as exc:
        raise RunError(f"{exc} (µs)") from None
    return power_curve.Design(args.power_server, args.power_scenario, tries,
                              power_curve.parse_effects(args.power_effects),
                              load_settings.int_knob(args.power_aa, "--power-aa", 0, 10_000) or 0, base_us)


def check_power(base: Settings, folder: Path, d: power_curve.Design | None, earlier: Path | None = None
                ) -> dict[str, Any]:
    try:
        if earlier is not None:
            curve = power_curve.rejudge(earlier)
        else:
            assert d is not None
            curve = power_curve.measure(base, d, folder)
    except RunError as exc:
        return {"check": "power curve", "passed": False, "problems": [str(exc)]}
    near = min(curve["within_run"], key=lambda k: abs(float(k.rstrip("%")) - 10))
    found, aa = curve["within_run"][near], curve["within_run_aa"]
    # The bar: +10 % found in 8 of 10 tries, A/A marked in at most 1 of 20 pairs.
    passed = (found["n"] > 0 and found["hits"] >= 0.8 * found["n"] and aa["hits"] <= aa["n"] / 20
              and not curve["problems"])
    return {"check": "power curve", "passed": passed, "bar": f"+{near} detected in >= 80 % of tries, A/A "
            "marked in <= 5 % of pairs, within a run", **curve}


def ab_settings(base: Settings, server: str, pool: int, reps: int) -> Settings:
    return base.replace(servers=(server,), scenarios=(AB_SCENARIO,), reps=reps,
                        server_env={**base.server_env, "LAB_POOL_SIZE": str(pool)}, run_id=f"ab-pool-{pool}")


def run_pair(a: Settings, b: Settings, folder: Path) -> tuple[compare.Comparison | None, list[str]]:
    """Two runs into `folder`, then their comparison; (None, problems) when a run failed."""
    problems = []
    dirs = []
    for s in (a, b):
        code = runner.run(s.replace(reports_dir=folder), link_latest=False)
        run_dir = folder / s.run_id
        if code != 0:
            problems.append(f"run {s.run_id} exited {code}; read {run_dir}")
        dirs.append(run_dir)
    if problems:
        return None, problems
    _html, _md, c = compare.build(dirs[0], dirs[1])
    return c, []


def flagged(c: compare.Comparison) -> list[str]:
    return [f"{p.server}/{p.scenario} {r.figure}: {r.mark} ({r.change}; {r.confidence})"
            for p in c.pairs for r in p.rows if r.mark in compare.FLAGGED]


def check_aa(base: Settings, folder: Path) -> dict[str, Any]:
    say(f"\n== A/A: the same settings twice ({len(base.servers)} servers x {len(base.scenarios)} scenarios x "
        f"{base.reps} repetitions); nothing may be marked")
    c, problems = run_pair(base.replace(run_id="aa-1"), base.replace(run_id="aa-2"), folder)
    if c is None:
        return {"check": "A/A", "passed": False, "problems": problems}
    marks = flagged(c)
    bound = [f"{p.server}/{p.scenario}" for p in c.pairs if any(r.mark == "generator-bound" for r in p.rows)]
    return {"check": "A/A", "passed": not marks, "marked": marks, "entries": len(c.pairs),
            "figures": sum(len(p.rows) for p in c.pairs), "generator_bound": bound,
            "compare": str(compare.default_out(folder / "aa-1", folder / "aa-2") / "compare.html")}


def check_ab(base: Settings, folder: Path, server: str, reps: int) -> dict[str, Any]:
    lo, hi = AB_POOLS
    say(f"\n== A/B: {AB_SCENARIO} on {server} with LAB_POOL_SIZE={lo} against {hi}, {reps} repetitions; "
        "the throughput change must be marked")
    c, problems = run_pair(ab_settings(base, server, lo, reps), ab_settings(base, server, hi, reps), folder)
    if c is None:
        return {"check": "A/B", "passed": False, "problems": problems}
    rows = [r for p in c.pairs for r in p.rows if r.figure in THROUGHPUT]
    detected = [f"{r.figure}: {r.a} -> {r.b} ({r.change}; {r.confidence})"
                for r in rows if r.mark == "better"]
    page = compare.default_out(folder / f"ab-pool-{lo}", folder / f"ab-pool-{hi}") / "compare.html"
    return {"check": "A/B", "passed": bool(detected), "detected": detected,
            "throughput": [f"{r.figure}: {r.a} -> {r.b} ({r.change}): {r.mark}; {r.confidence}"
                           for r in rows],
            "compare": str(page)}


def render_md(doc: dict[str, Any]) -> str:
    out = [f"# serverlab self-check {doc['id']}: {'PASS' if doc['passed'] else 'FAIL'}", "",
           f"Command: `{doc['command']}`; wall time {fmt_seconds(doc['wall_seconds'])}.", ""]
    for check in doc["checks"]:
        out += [f"## {check['check']}: {'pass' if check['passed'] else 'FAIL'}", ""]
        for p in check.get("problems") or []:
            out.append(f"- problem: {p}")
        if check["check"] == "A/A" and "marked" in check:
            out.append(f"- {len(check['marked'])} of {check['figures']} figures in {check['entries']} "
                       "entries marked changed (0 expected)")
            out += [f"  - {m}" for m in check["marked"]]
            if check["generator_bound"]:
                out.append(f"- generator-bound entries: {', '.join(check['generator_bound'])}")
        if check["check"] == "A/B" and "throughput" in check:
            out += [f"- {t}" for t in check["throughput"]]
        out += [f"- {a}" for a in check.get("agreements") or []]
        if check.get("halting_lines"):
            out.append("- idle CPUs halting against polling (CPU per request, same settings otherwise):")
            out += [f"  - {h}" for h in check["halting_lines"]]
        if check["check"] == "power curve" and "within_run" in check:
            out += [f"- the bar: {check['bar']}", *power_curve.render_md(check)]
        if check.get("compare"):
            out.append(f"- comparison: {check['compare']}")
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.power_from:  # judging earlier tries again runs nothing
        args.skip_aa, args.skip_ab, args.load_vs_bench, args.power_tries = True, True, "0", "0"
        args.fidelity = "no"
    try:
        base = load_settings.from_args(args)
        ab_reps = (load_settings.int_knob(args.ab_reps, "--ab-reps", 1, 100)
                   or max(base.reps, stats.MIN_REPS))
        lvb_cycles = load_settings.int_knob(args.load_vs_bench, "--load-vs-bench", 0, 100) or 0
        if lvb_cycles and base.variants:
            raise RunError("--load-vs-bench pairs make load with make bench, which runs no variants: "
                           "run it without --variants / LAB_VARIANTS")
        power = power_design(args)
        runner.check_budget(base)
    except RunError as exc:
        print(f"lab selfcheck: {exc}", file=sys.stderr)
        return 2
    folder = base.reports_dir / (base.run_id or f"selfcheck-{time.strftime('%Y%m%d-%H%M%S')}")
    if folder.exists():
        print(f"lab selfcheck: {folder} exists already; choose another RUN_ID", file=sys.stderr)
        return 2
    folder.mkdir(parents=True)
    base = base.replace(run_id="")
    planned = 0.0
    if not args.skip_aa:
        planned += 2 * plan.total_seconds(base, False)
    if not args.skip_ab:
        planned += 2 * plan.total_seconds(ab_settings(base, args.ab_server, AB_POOLS[0], ab_reps), False)
    if lvb_cycles:
        planned += load_vs_bench.planned_seconds(base, lvb_cycles)
    if args.fidelity == "yes":
        planned += fidelity.planned_seconds(base)
    if power is not None:
        planned += power_curve.planned_seconds(base, power)
    say(f"self-check into {folder}: planned ~{fmt_seconds(planned)}")
    began = time.monotonic()
    checks = []
    if not args.skip_aa:
        checks.append(check_aa(base, folder))
    if not args.skip_ab:
        checks.append(check_ab(base, folder, args.ab_server, ab_reps))
    if lvb_cycles:
        checks.append(load_vs_bench.check(base, folder, lvb_cycles))
    if args.fidelity == "yes":
        checks.append(fidelity.check(base, folder))
    if args.power_from:
        checks.append(check_power(base, folder, None, Path(args.power_from).absolute()))
    elif power is not None:
        checks.append(check_power(base, folder, power))
    doc = {"id": folder.name, "command": " ".join(["python -m lab selfcheck", *(argv or sys.argv[1:])]),
           "checks": checks, "passed": bool(checks) and all(c["passed"] for c in checks),
           "wall_seconds": round(time.monotonic() - began, 1)}
    files.write_json(folder / "selfcheck.json", doc)
    text = render_md(doc)
    files.write_text(folder / "selfcheck.md", text)
    say("\n" + text)
    return 0 if doc["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
