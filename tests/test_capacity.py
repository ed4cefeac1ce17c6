"""The open model end to end: `python -m lab load` with a capacity scenario against a real server.

Requests start on a schedule of offered rates whatever the server does; latency counts from the
scheduled start. Checks the steps, the coordinated-omission-corrected and uncorrected latencies, the
late and dropped counts and the capacity at SLO, and that a saturated server's knee is found.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab.load.locust_job import STOP_TIMEOUT

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


def capacity_run(database_url: str, reports: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "LAB_DATABASE_URL": database_url}
    cmd = [sys.executable, "-m", "lab", "load", "--profile", "capacity", "--servers", "asyncio",
           "--scenarios", "capacity-json", "--reports-dir", str(reports), "--step-seconds", "1.5",
           "--warmup", "1", "--reps", "1", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode in (0, 1), out[-4000:]
    run_dir = (reports / "latest").resolve()
    data = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    return {"data": data, "out": out, "code": proc.returncode, "dir": run_dir}


@pytest.fixture(scope="module")
def below_knee(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # The planned steps only (no steps added). A generous SLO: far below the knee the server answers in
    # milliseconds, but one stall of this VM (100-500 ms was seen in CI) would put a 1.5 s step's p99
    # over the default 100 ms.
    return capacity_run(database_url, tmp_path_factory.mktemp("cap"), "--rates", "50,150",
                        "--server-cpu", "none", "--slo-p99-ms", "1000", "--extend-steps", "0")


def test_every_offered_rate_is_a_step_the_server_kept_up_with(below_knee: dict[str, Any]) -> None:
    assert below_knee["code"] == 0, below_knee["out"][-3000:]
    (e,) = below_knee["data"]["results"]
    steps = e["open_model"]["steps"]
    assert [s["rate"] for s in steps] == [50.0, 150.0]
    for s in steps:
        # A server far below its knee answers what was offered, on time.
        assert s["offered"] == pytest.approx(s["rate"] * 1.5, rel=0.1), s
        assert s["achieved_rps"] == pytest.approx(s["rate"], rel=0.15), s
        assert s["dropped"] == 0 and s["meets_slo"], s
        # Measured from the scheduled start, a latency is never below the one measured from the send.
        assert s["p99_ms"] >= s["p99_uncorrected_ms"] * 0.95, s
    cap = e["capacity"]
    assert cap["median"] == 150.0 and cap["limited_by"] == ["not reached"]
    assert e["cost"]["cpu_us_per_request"]["median"] > 0
    assert e["rps"]["median"] > 0 and e["generator_bound"] is False


def test_locust_stops_when_the_last_step_ends(below_knee: dict[str, Any]) -> None:
    # The open user's task used to outlive its last step, so Locust waited out its whole --stop-timeout
    # (12 s) for it on every repetition.
    rep = below_knee["dir"] / "asyncio" / "capacity-json" / "rep-1"
    ended = json.loads((rep / "records" / "shape.json").read_text(encoding="utf-8"))["measure_end"]
    finished = json.loads((rep / "run.json").read_text(encoding="utf-8"))["finished_at"]
    assert finished - ended < STOP_TIMEOUT / 2, finished - ended


def test_the_knee_of_a_saturated_server_is_the_servers(database_url: str, tmp_path: Path) -> None:
    # 0.05 core (over a 20 ms period: the kernel's smallest quota is 1 ms): asyncio answers several
    # hundred /json a second; 2,000 offered is far past its knee.
    run = capacity_run(database_url, tmp_path, "--rates", "40,2000", "--server-cpu", "0.05",
                       "--cpu-period-us", "20000", "--slo-p99-ms", "200")
    (e,) = run["data"]["results"]
    first, second = e["open_model"]["steps"]
    assert first["meets_slo"] and not second["meets_slo"]
    # It cannot serve what was offered: it falls well short, or its latency or failures say so.
    assert second["achieved_rps"] < 0.9 * 2000 and (second["p99_ms"] > 200 or second["failure_share"] > 0.01)
    assert e["capacity"]["median"] == 40.0
    # Past the knee a closed-loop generator would have waited; the open one counts what it could not start.
    assert second["dropped"] > 0 or second["p99_ms"] > second["p50_ms"]
    assert "only asyncio has figures: capacity at p99<200ms 40" in run["out"]  # the end of make load


def test_a_knee_above_the_planned_steps_is_found_by_adding_steps(database_url: str, tmp_path: Path) -> None:
    # One planned step far below the knee of asyncio at 0.02 core (a couple of hundred /json a second): the
    # repetition adds steps, each 1.15x higher, until one misses the SLO, and that knee is the server's.
    run = capacity_run(database_url, tmp_path, "--rates", "40", "--server-cpu", "0.02",
                       "--cpu-period-us", "50000", "--slo-p99-ms", "200", "--step-seconds", "0.5",
                       "--extend-steps", "20")
    (e,) = run["data"]["results"]
    steps = e["open_model"]["steps"]
    assert len(steps) > 1 and steps[0]["rate"] == 40.0, steps
    rates = [s["rate"] for s in steps]
    assert all(b == pytest.approx(a * 1.15, abs=1) for a, b in itertools.pairwise(rates)), rates
    assert e["capacity"]["limited_by"] == ["server"], e["capacity"]
    assert e["capacity"]["median"] > 60.0 and not steps[-1]["meets_slo"], steps
    # The repetition stopped at the first miss the generator saw, at most one step past the one the
    # results judge (the generator judges as a step ends; the results see every request). A step that
    # missed the SLO by a hair once every request was in (201.7 ms against 200 in one CI run) can put the
    # results' knee lower, with a later step that met it again: the results then say so (held again).
    knee = e["capacity"]["knee_rates"][0]
    again = e["capacity"]["held_again_rates"][0]
    assert rates.index(knee) >= len(rates) - 2 or (again is not None and again > knee), (knee, rates)
    shape = json.loads((run["dir"] / "asyncio" / "capacity-json" / "rep-1" / "records" / "shape.json")
                       .read_text(encoding="utf-8"))
    assert shape["planned_rates"] == [40.0] and "missed the SLO" in shape["extension"]["stop"]


def test_a_repetition_that_missed_at_every_step_runs_again_lower_once(database_url: str,
                                                                       tmp_path: Path) -> None:
    # A 5 ms SLO that asyncio under 0.02 core over 50 ms periods cannot meet at any rate (a throttled
    # request waits up to 49 ms): repetition 1 misses at every step, is set aside, and runs once more on a
    # fresh process with its steps halved; it misses again and is kept, with no third attempt. Steps of
    # 0.5 s: what is checked is the second attempt, not the steps' figures (the probe places them; given
    # rates are never run again).
    run = capacity_run(database_url, tmp_path, "--server-cpu", "0.02", "--cpu-period-us", "50000",
                       "--slo-p99-ms", "5", "--extend-steps", "0", "--step-seconds", "0.5")
    scen = run["dir"] / "asyncio" / "capacity-json"
    meta = json.loads((scen / "scenario.json").read_text(encoding="utf-8"))
    (again,) = meta["again"]
    assert again["rep"] == 1 and again["set_aside"] == "missed-rep-1" and (scen / "missed-rep-1").is_dir()
    first = json.loads((scen / "missed-rep-1" / "run.json").read_text(encoding="utf-8"))["rates"]
    second = json.loads((scen / "rep-1" / "run.json").read_text(encoding="utf-8"))["rates"]
    assert second == [max(1, round(r / 2)) for r in first], (first, second)
    assert len(meta["server_pids"]) == 2  # a fresh process for the second attempt
    (e,) = run["data"]["results"]
    assert e["reps"] == 1 and any("missed-rep-1" in w for w in e["warnings"]), e["warnings"]
    assert "runs again with its steps at 0.5x" in run["out"]
