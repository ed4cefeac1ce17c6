"""Rebuild the recorded results under tests/data/reports/ (run from the repository root):

    .venv/bin/python tests/data/reports/make_fixtures.py

run-a/results.json: lab.results.build over tests/data/basic (real short runs: asyncio and threaded x json and
writes, two repetitions each, made before the lab judged by a rank test), with every entry's repetitions
doubled to four (reps 3 and 4 are copies of 1 and 2, figures edited where a case needs it: the rule needs
four a side), plus a `db` scenario made from the writes entries with edited throughput, so the three
verdict cases are all there: json is generator-bound (asyncio at 93% of the calibrated ceiling), writes
has a clear winner (threaded), db is a tie (overlapping repetitions), with failures for threaded.
run-b/results.json: run-a as if run again on another machine with another pool size: db only in A,
gevent/json only in B (with a problem), asyncio/writes faster, threaded/writes slower at p99.
Histograms (latency_hdr) are dropped to keep the files small; the reports do not read them.
"""

from __future__ import annotations

import copy
import json
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from lab.results import build as results

HERE = Path(__file__).parent
BASIC = HERE.parent / "basic"


def entry(data: dict[str, Any], server: str, scenario: str) -> dict[str, Any]:
    return next(e for e in data["results"] if e["server"] == server and e["scenario"] == scenario)


REPS = 4


def four_reps(data: dict[str, Any]) -> None:
    """Every entry's two recorded repetitions, twice: reps 3 and 4 copy 1 and 2, their rps 2 % apart so
    that no value ties."""
    for e in data["results"]:
        reps = e["repetitions"]
        extra = copy.deepcopy(reps[:REPS - len(reps)])
        for i, r in enumerate(extra, start=len(reps) + 1):
            r["rep"] = i
            for key in ("rps", "ok_rps"):
                if r.get(key) is not None:
                    r[key] = round(r[key] * 1.02, 1)
        e["repetitions"] = reps + extra
        e["reps"] = len(e["repetitions"])
        for key in ("rps", "ok_rps"):
            e[key] = spread_of([r[key] for r in e["repetitions"]])
        cost = [r["cost"]["cpu_us_per_request"] for r in e["repetitions"]]
        e["cost"]["cpu_us_per_request"] = spread_of(cost)


def spread_of(values: list[float]) -> dict[str, Any]:
    median = statistics.median(values)
    return {"median": round(median, 1), "min": min(values), "max": max(values),
            "spread": round((max(values) - min(values)) / median, 4) if median else None, "values": values}


def set_rps(e: dict[str, Any], values: list[float], failures: int = 0,
            kinds: dict[str, int] | None = None) -> None:
    median = statistics.median(values)
    spread = round((max(values) - min(values)) / median, 4)
    e["rps"] = {"median": median, "min": min(values), "max": max(values), "spread": spread, "values": values}
    seconds = sum(r["window"]["seconds"] for r in e["repetitions"])
    e["requests"] = round(median * seconds)
    e["failures"] = failures
    e["failure_rate"] = round(failures / e["requests"], 6)
    e["failures_by_kind"] = kinds or {}
    e["latency_ms"]["count"] = e["requests"] - failures
    ok = [round(v * (1 - e["failure_rate"]), 1) for v in values]
    ok_med = statistics.median(ok)
    e["ok_rps"] = {"median": round(ok_med, 1), "min": min(ok), "max": max(ok),
                   "spread": round((max(ok) - min(ok)) / ok_med, 4), "values": ok}
    for r, v, o in zip(e["repetitions"], values, ok, strict=True):
        r["rps"], r["ok_rps"] = v, o


def strip(data: dict[str, Any]) -> dict[str, Any]:
    for e in data["results"]:
        e["latency_hdr"] = None
    data["generator_bound"] = [f"{e['server']}/{e['scenario']}" for e in data["results"]
                               if e["generator_bound"]]
    data["problems"] = [f"{e['server']}/{e['scenario']}: {p}" for e in data["results"] for p in e["problems"]]
    data["ok"] = not data["problems"]
    return data


def run_a() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "basic"
        shutil.copytree(BASIC, run)
        data = results.build(run)
    four_reps(data)
    data["run"]["id"] = data["run"]["settings"]["run_id"] = "fixture-a"
    data["scenarios"] = data["run"]["settings"]["scenarios"] = ["json", "writes", "db"]
    data["run"]["settings"]["scenario_defs"]["db"] = {
        "name": "db", "user_class": "DbUser", "users": 20, "spawn_rate": 80, "shape": "steady",
        "uses_db": True,
        "description": "GET /db: one random row per request"}
    for server in ("asyncio", "threaded"):
        e = copy.deepcopy(entry(data, server, "writes"))
        e["scenario"], e["description"], e["writes"] = "db", "GET /db: one random row per request", None
        for r in e["repetitions"]:
            r["writes"], r["acks_recorded"] = None, 0
        data["results"].append(e)
    set_rps(entry(data, "asyncio", "db"), [820.0, 980.0, 850.0, 950.0])
    set_rps(entry(data, "threaded", "db"), [780.0, 940.0, 830.0, 900.0], 20,
            {"ConnectionResetError": 2, "http_503": 18})
    entry(data, "threaded", "db")["pool"]["rejections"] = 18
    return strip(data)


def run_b(a: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(a)
    data["run"]["id"] = data["run"]["settings"]["run_id"] = "fixture-b"
    data["run"]["command"] = data["run"]["settings"]["command"] = "LAB_POOL_SIZE=20 " + a["run"]["command"]
    data["run"]["settings"]["server_env"] = {"LAB_POOL_SIZE": "20"}
    data["run"]["machine"].update(cpu_model="Intel(R) Xeon(R) Gold 6338", cpus=4, kernel="6.1.0-21-amd64")
    data["run"]["calibration"]["ceiling_rps"] = 6100.0
    data["results"] = [e for e in data["results"] if e["scenario"] != "db"]
    data["scenarios"] = data["run"]["settings"]["scenarios"] = ["json", "writes"]
    data["servers"] = data["run"]["settings"]["servers"] = ["asyncio", "threaded", "gevent"]
    for e in data["results"]:
        e["server_config"]["pool_size"] = 20
    set_rps(entry(data, "asyncio", "writes"), [600.0, 660.0, 620.0, 640.0])
    slow = entry(data, "threaded", "writes")
    slow["latency_ms"].update(p99=1500.0, p99_9=1600.0, max=1700.0)
    for r, p99 in zip(slow["repetitions"], (1400.0, 1500.0, 1450.0, 1550.0), strict=True):
        r["latency_ms"].update(p99=p99, p99_9=p99 + 100, max=p99 + 200)
    gevent = copy.deepcopy(entry(data, "threaded", "json"))
    gevent["server"] = gevent["server_config"]["model"] = "gevent"
    gevent["status"] = "problem"
    gevent["problems"] = ["rep 1: the sampler recorded no sample inside the measured window"]
    data["results"].insert(2, gevent)
    return strip(data)


def main() -> None:
    a = run_a()
    for name, data in (("run-a", a), ("run-b", run_b(a))):
        (HERE / name).mkdir(exist_ok=True)
        (HERE / name / "results.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {HERE / name / 'results.json'}")


if __name__ == "__main__":
    main()
