"""Rebuild tests/data/drift/ from two real identical default runs (run from the repository root):

    .venv/bin/python tests/data/drift/make_fixtures.py <aa-1> <aa-2>

aa-1/ and aa-2/results.json: the quiet A/A pair of a `make selfcheck` on the 2-core lab VM (2026-12-07,
reports/selfcheck-20261207-153210/aa-1 and aa-2), trimmed to the json and writes scenarios (four servers
each) and to what compare reads: timelines, stages, histograms and per-process details are dropped. The
machine moved every server of a scenario alike between them (CPU per request x0.80-0.86 on json,
x1.23-1.32 on writes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
SCENARIOS = ("json", "writes")
ENTRY_DROP = {"latency_hdr", "open_model", "generator", "saturation", "pool", "writes", "description"}
REP_DROP = {"timeline", "resource_timeline", "stages", "sampler", "generator", "by_name", "cpu_budget",
            "full_core", "cost_budget", "open_model", "warnings", "latency_failed_ms", "failures_by_kind"}


def trim(data: dict[str, Any]) -> dict[str, Any]:
    results = []
    for e in data["results"]:
        if e["scenario"] not in SCENARIOS:
            continue
        e = {k: v for k, v in e.items() if k not in ENTRY_DROP}
        e["repetitions"] = [{k: v for k, v in r.items() if k not in REP_DROP} for r in e["repetitions"]]
        results.append(e)
    run = {k: data["run"][k] for k in ("id", "profile", "command", "settings", "machine", "speed")}
    return {"schema": data["schema"], "schema_version": data["schema_version"], "run": run,
            "results": results}


def main(a: str, b: str) -> None:
    for name, src in (("aa-1", a), ("aa-2", b)):
        out = HERE / name
        out.mkdir(exist_ok=True)
        data = trim(json.loads((Path(src) / "results.json").read_text(encoding="utf-8")))
        (out / "results.json").write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:3])
