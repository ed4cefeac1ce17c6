"""`python -m lab claims` (make claims): run the experiments, judge the claims, write the report.

Output: reports/claims-<time>/claims.json (everything measured), claims.md and claims.html, plus
the servers' logs under logs/. Experiments run one after another so they do not disturb each
other; one that fails is recorded and the rest still run.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lab import machine
from lab.claims import blocking, connections, gil, guarantees, memory, plan, report, switch, verdict
from lab.stack import database, idle, pg_config


def _say(text: str) -> None:
    print(f"[claims] {text}", flush=True)


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def write(out_dir: Path, data: dict[str, Any]) -> None:
    """claims.json, claims.md and claims.html in out_dir."""
    (out_dir / "claims.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    (out_dir / "claims.md").write_text(report.render_md(data))
    (out_dir / "claims.html").write_text(report.render_html(data))


def run(p: plan.Plan, out_dir: Path, command: str) -> dict[str, Any]:
    """Every planned experiment; the claims.json data."""
    started = time.time()
    log_dir = out_dir / "logs"
    data: dict[str, Any] = {
        "kind": "claims",
        "id": out_dir.name,
        "command": command,
        "size": p.size,
        "plan": asdict(p),
        "machine": machine.facts(),
        "load": {"before": _loadavg()},
        "started_at": started,
        "experiments": {},
        "problems": [],
    }
    needs_db = {"connections", "gil", "blocking", "guarantees"} & set(p.experiments)
    url = database.provision() if needs_db else ""
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "switch": lambda: switch.run(p, _say),
        "memory": lambda: memory.run(p, _say),
        "connections": lambda: connections.run(p, url, log_dir, _say),
        "gil": lambda: gil.run(p, url, log_dir, _say),
        "blocking": lambda: blocking.run(p, url, log_dir, _say),
        "guarantees": lambda: guarantees.run(p, url, log_dir, _say),
    }
    with idle.polling(p.idle_poll) as held:
        data["idle"] = held.as_dict()
        _say(f"while measuring, {held.describe()} (LAB_IDLE_POLL)")
        for name in p.experiments:
            t0 = time.monotonic()
            _say(f"--- {name}")
            try:
                result = steps[name]()
            except Exception as exc:  # recorded; the other experiments still run
                traceback.print_exc()
                result = {"error": f"{type(exc).__name__}: {exc}"}
                data["problems"].append(f"experiment {name} failed: {result['error']}")
            result["wall_seconds"] = time.monotonic() - t0
            data["experiments"][name] = result
    for name, result in data["experiments"].items():
        for key in ("variants",):
            for variant, v in (result.get(key) or {}).items():
                if v.get("error"):
                    data["problems"].append(f"{name} {variant}: {v['error']}")
        for row in result.get("rows") or []:
            if row.get("error"):
                data["problems"].append(f"{name} {row['kind']} x{row['n']}: {row['error']}")
    data["claims"] = verdict.judge(data["experiments"])
    data["load"]["after"] = _loadavg()
    data["wall_seconds"] = time.time() - started
    data["ok"] = not data["problems"]
    return data


def rebuild(run_dir: Path) -> int:
    """Judge a recorded run's claims again (after a rule changed) and rewrite its three files."""
    source = run_dir / "claims.json"
    if not source.is_file():
        print(f"make claims: {source} does not exist; pass a reports/claims-<time> folder", file=sys.stderr)
        return 2
    data = json.loads(source.read_text())
    data["claims"] = verdict.judge(data["experiments"])
    write(run_dir, data)
    _say(f"rewrote {run_dir / 'claims.html'}, claims.md, claims.json from the recorded figures")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        p, args = plan.load(argv)
    except ValueError as exc:
        print(f"make claims: {exc}", file=sys.stderr)
        return 2
    if args.rebuild:
        return rebuild(Path(args.rebuild))
    out_dir = (
        Path(args.out).absolute()
        if args.out
        else Path(args.reports_dir).absolute() / time.strftime("claims-%Y%m%d-%H%M%S")
    )
    if (out_dir / "claims.json").exists():
        print(f"make claims: {out_dir} already holds a claims run; choose another --out", file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    command = "python -m lab claims " + shlex.join(argv) if argv else "make claims"
    _say(f"size {p.size}: {', '.join(p.experiments)} -> {out_dir}")
    try:
        data = run(p, out_dir, command.strip())
    except (pg_config.PostgresError, idle.IdleError) as exc:
        print(f"make claims: {exc}", file=sys.stderr)
        return 2
    write(out_dir, data)
    for c in data["claims"]:
        _say(f"{c['folk']}  ->  {c['figure']}  [{c['verdict']}]")
    for problem in data["problems"]:
        _say(f"PROBLEM: {problem}")
    _say(f"wrote {out_dir / 'claims.html'}, claims.md, claims.json in {data['wall_seconds']:.0f} s")
    return 0 if data["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
