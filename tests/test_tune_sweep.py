"""`make tune` end to end, smoke length: real asyncio servers, real PostgreSQL, real Locust.

Sweeps the asyncio server's pool size over two values on `hold` (20 users each holding a pooled
connection for 20 ms), two 2 s repetitions per value run round-robin (four runs), through
`python -m lab tune` as a subprocess into a temporary reports folder, then checks the tune folder:
tune.json, tune.html, tune.md, one normal run folder per run with the swept pool size applied, the
figures combined across the runs, and a recommendation naming a swept value. About 30 s on the
2-core lab machine. The max_connections guard is checked too (no load); bad input: test_tune_units."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
KNOBS = ("SERVER", "SERVERS", "PARAM", "VALUES", "SCENARIO", "SCENARIOS", "SLO_P99_MS", "REPS", "DURATION",
         "WARMUP", "USERS", "TUNE_ID", "FORCE", "CALIBRATE", "LAB_REPORTS_DIR", "SHAPE", "LOCUST_WORKERS",
         "RUN_ID", "PROFILE")
VALUES = (2, 8)
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def tune(args: list[str], env: dict[str, str] | None = None,
         timeout: float = 180) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in KNOBS}
    return subprocess.run([sys.executable, "-m", "lab", "tune", *args], capture_output=True, text=True,
                          env={**clean, **(env or {})}, cwd=REPO, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def sweep(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    reports = tmp_path_factory.mktemp("reports")
    proc = tune(["--server", "asyncio", "--param", "pool_size", "--values", ",".join(map(str, VALUES)),
                 "--scenario", "hold", "--users", "20", "--duration", "2", "--warmup", "1", "--reps", "2",
                 "--calibrate", "skip", "--tune-id", "smoke-tune", "--reports-dir", str(reports),
                 "--database-url", database_url])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"tune failed (exit {proc.returncode}):\n{out[-6000:]}"
    tune_dir = reports / "smoke-tune"
    doc = json.loads((tune_dir / "tune.json").read_text(encoding="utf-8"))
    return {"dir": tune_dir, "doc": doc, "output": out, "reports": reports}


def test_progress_and_outcome_are_printed(sweep: dict[str, Any]) -> None:
    out = sweep["output"]
    # Round-robin: round 1 ascending, round 2 descending.
    for i, (rnd, v) in enumerate([(1, 2), (1, 8), (2, 8), (2, 2)], 1):
        assert f"[tune {i}/4] round {rnd}/2 pool_size={v} (LAB_POOL_SIZE={v})" in out
    assert "database connections: max_connections" in out
    assert re.search(r"=> pool_size=\d+: ", out), out[-3000:]
    assert not (sweep["reports"] / "latest").exists()  # a tune leaves reports/latest alone


def test_every_point_is_a_normal_run_with_the_value_applied(sweep: dict[str, Any]) -> None:
    doc = sweep["doc"]
    assert doc["schema"] == "serverlab-tune" and doc["status"] == "complete", doc["problems"]
    assert [p["value"] for p in doc["points"]] == list(VALUES)
    rps = {}
    for p in doc["points"]:
        assert [r["round"] for r in p["runs"]] == [1, 2]
        per_run = []
        for r in p["runs"]:
            run_dir = sweep["dir"] / r["dir"]
            assert r["dir"] == f"pool_size-{p['value']}-r{r['round']}" and r["exit_status"] == 0
            data = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
            assert data["ok"], data["problems"]
            (entry,) = [e for e in data["results"] if (e["server"], e["scenario"]) == ("asyncio", "hold")]
            assert entry["server_config"]["pool_size"] == p["value"]
            assert data["run"]["settings"]["server_env"]["LAB_POOL_SIZE"] == str(p["value"])
            assert 0 < entry["db_connections_peak"] <= p["value"]
            assert (run_dir / "index.html").exists()  # the runner's own report, as for make load
            per_run.append(entry)
        fig = p["figures"]["asyncio"]
        values = sorted(e["ok_rps"]["median"] for e in per_run)
        assert fig["ok"] and fig["reps"] == 2 and fig["ok_rps"] == pytest.approx(sum(values) / 2, abs=0.1)
        assert fig["spread"] == pytest.approx((values[1] - values[0]) / fig["ok_rps"], abs=1e-3)
        p99s = [e["latency_ms"]["p99"] for e in per_run]
        assert min(p99s) * 0.99 <= fig["p99_ms"] <= max(p99s) * 1.01  # the runs' histograms merged
        assert fig["db_connections_peak"] == max(e["db_connections_peak"] for e in per_run)
        rps[p["value"]] = fig["ok_rps"]
    # 20 users each holding a connection 20 ms: four times the pool, about four times the throughput.
    assert rps[8] > 1.5 * rps[2], rps


def test_recommendation_names_a_swept_value(sweep: dict[str, Any]) -> None:
    rec = sweep["doc"]["recommendations"]["asyncio"]
    assert rec["value"] in VALUES and rec["verdict"] in ("recommended", "slo_not_met")
    if rec["verdict"] == "recommended":  # the default SLO is generous, but the CPU is shared
        assert rec["sentence"].startswith(f"pool_size={rec['value']}: ")
    else:
        assert rec["sentence"].startswith("no value kept p99 under") and "came closest" in rec["sentence"]
    limit = sweep["doc"]["connections"]["budget"]["max_connections"]
    assert f"of max_connections {limit}" in rec["connections"]


def test_tune_report_files(sweep: dict[str, Any]) -> None:
    html = (sweep["dir"] / "tune.html").read_text(encoding="utf-8")
    md = (sweep["dir"] / "tune.md").read_text(encoding="utf-8")
    plots = re.findall(r'<svg class="chart" data-plot="(tune-[a-z0-9]+)"', html)
    assert plots == ["tune-rps", "tune-p50", "tune-p99", "tune-failures", "tune-db"]
    assert html.count('<circle class="dot"') == 5 * len(VALUES)
    assert not re.search(r'(src|href)="(https?:)?//', html)  # self-contained: opens offline
    rec = sweep["doc"]["recommendations"]["asyncio"]
    assert rec["sentence"].replace("'", "&#x27;") in html and rec["sentence"] in md
    for p in sweep["doc"]["points"]:
        for r in p["runs"]:
            assert f'href="{r["dir"]}/index.html"' in html
        assert re.search(rf"^\| {p['value']} \| [\d,]+ \|", md, re.M)


def test_report_rebuilds_with_another_slo(sweep: dict[str, Any]) -> None:
    proc = tune(["--report", str(sweep["dir"]), "--slo-p99-ms", "0.01"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((sweep["dir"] / "tune.json").read_text(encoding="utf-8"))
    assert doc["slo_p99_ms"] == 0.01
    rec = doc["recommendations"]["asyncio"]
    assert rec["verdict"] == "slo_not_met" and rec["value"] in VALUES
    assert "no value kept p99 under the 0.01 ms SLO" in rec["sentence"]


def test_values_beyond_max_connections_are_refused(database_url: str, tmp_path: Path) -> None:
    # 1000 connections per process x 8 processes: more than any max_connections the lab would set.
    proc = tune(["--server", "multiproc", "--values", "2,1000", "--reports-dir", str(tmp_path),
                 "--database-url", database_url, "--calibrate", "skip"], env={"LAB_WORKERS": "8"}, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "pool_size=1000 would need up to 80" in proc.stderr
    assert "Lower VALUES (pool_size up to" in proc.stderr and "LAB_PG_MAX_CONNECTIONS" in proc.stderr
    assert "--force" in proc.stderr and "Traceback" not in proc.stderr
    assert re.search(r"OVER pool_size=1000 implies 8000 database connections for the multiproc server "
                     r"\(1000 per process x 8 processes\)", proc.stdout)
    assert not any(tmp_path.iterdir())  # refused before anything ran
