"""lab.results.build on raw files recorded from real short runs (tests/data/, made by lab.load.runner).

tests/data/basic:   asyncio and threaded x json and writes, 2 repetitions each, one Locust process,
                    with the calibration that run used.
tests/data/workers: asyncio x ramp (five 1 s steps), Locust as a master and 2 workers, no calibration.
Each test copies a run to tmp_path, so results.json is never written into the repository.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from lab.results import build as results
from lab.results import generator, openmodel, records, resources

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]
ORDER = ("p50", "p90", "p95", "p99", "p99_9", "max")


def copy_run(name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name
    shutil.copytree(DATA / name, dest)
    return dest


@pytest.fixture
def basic(tmp_path: Path) -> Path:
    return copy_run("basic", tmp_path)


@pytest.fixture
def workers(tmp_path: Path) -> Path:
    return copy_run("workers", tmp_path)


def entry(data: dict[str, Any], server: str, scenario: str) -> dict[str, Any]:
    found = [e for e in data["results"] if e["server"] == server and e["scenario"] == scenario]
    assert len(found) == 1, f"{server}/{scenario} missing"
    return found[0]


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def test_schema_header_and_run_metadata(basic: Path) -> None:
    data = results.build(basic)
    assert data["schema"] == "serverlab-results"
    assert data["schema_version"] == results.SCHEMA_VERSION == 1
    run = data["run"]
    assert run["id"] == "testdata-basic"
    assert run["command"].startswith(".venv/bin/python -m lab.runner")
    assert run["machine"]["cpus"] == 2 and run["machine"]["packages"]["locust"]  # as machine.json says
    assert run["calibration"]["ceiling_rps"] > 0
    assert run["settings"]["server_cpus"] == [0] and run["settings"]["load_cpus"] == [1]
    assert data["servers"] == ["asyncio", "threaded"]
    assert data["scenarios"] == ["json", "writes"]
    # Ordered scenario-major, servers in the run's order.
    assert [(e["scenario"], e["server"]) for e in data["results"]] == [
        ("json", "asyncio"), ("json", "threaded"), ("writes", "asyncio"), ("writes", "threaded")]


def test_rps_is_requests_over_the_measured_window_and_median_of_reps(basic: Path) -> None:
    data = results.build(basic)
    for e in data["results"]:
        assert e["reps"] == 2 and len(e["repetitions"]) == 2
        for rep in e["repetitions"]:
            record_dir = basic / e["server"] / e["scenario"] / f"rep-{rep['rep']}" / "records"
            shape = load_json(record_dir / "shape.json")
            window = shape["measure_end"] - shape["measure_start"]
            requests = sum(r["requests"] for r in records.load_records(record_dir))
            assert rep["requests"] == requests > 0
            assert rep["rps"] == pytest.approx(requests / window, abs=0.1)
            assert rep["window"]["seconds"] == pytest.approx(window, abs=1e-3)
        values = [r["rps"] for r in e["repetitions"]]
        assert e["rps"]["values"] == values
        assert e["rps"]["median"] == pytest.approx(sum(values) / 2, abs=0.1)
        assert e["rps"]["spread"] == pytest.approx((max(values) - min(values)) / e["rps"]["median"], rel=0.01)
        assert e["requests"] == sum(r["requests"] for r in e["repetitions"])


def test_percentiles_are_ordered_and_come_from_the_merged_histograms(basic: Path) -> None:
    data = results.build(basic)
    for e in data["results"]:
        lat = e["latency_ms"]
        values = [lat[k] for k in ORDER]
        assert values == sorted(values) and values[0] > 0, values
        # The entry's histogram is every successful request of every repetition.
        assert lat["count"] == sum(r["latency_ms"]["count"] for r in e["repetitions"])
        assert lat["count"] == e["requests"] - e["failures"]
        h = HdrHistogram.decode(e["latency_hdr"])
        assert h.get_total_count() == lat["count"]
        assert lat["max"] == max(r["latency_ms"]["max"] for r in e["repetitions"])
        for rep in e["repetitions"]:
            assert [rep["latency_ms"][k] for k in ORDER] == sorted(rep["latency_ms"][k] for k in ORDER)


def test_locust_workers_records_are_merged(workers: Path) -> None:
    data = results.build(workers)
    e = entry(data, "asyncio", "ramp")
    rep = e["repetitions"][0]
    record_dir = workers / "asyncio" / "ramp" / "rep-1" / "records"
    recs = records.load_records(record_dir)
    assert len(recs) == 2 and {r["role"] for r in recs} == {"worker"}
    assert rep["locust_processes"] == 2
    assert rep["requests"] == sum(r["requests"] for r in recs)
    merged = records.merge(r["latency_ok_us"] for r in recs)
    assert rep["latency_ms"]["count"] == merged.get_total_count()
    singles = [lat for r in recs if (lat := records.latency_ms(HdrHistogram.decode(r["latency_ok_us"])))]
    assert min(s["p50"] for s in singles) <= rep["latency_ms"]["p50"] <= max(s["p50"] for s in singles)
    assert rep["latency_ms"]["max"] == max(s["max"] for s in singles)
    # Two workers: the generator CPU covers both, and the busiest decides.
    per_process = rep["generator"]["cpu_percent_per_process"]
    assert len(per_process) == 3  # the master and two workers were polled
    loaders = {str(p) for p in load_json(workers / "asyncio" / "ramp" / "rep-1" / "run.json")["generator"]
               ["load_pids"]}
    assert rep["generator"]["cpu_percent_mean"] == max(v for p, v in per_process.items() if p in loaders)


def test_ramp_has_stages_and_a_saturation_point(workers: Path) -> None:
    data = results.build(workers)
    e = entry(data, "asyncio", "ramp")
    stages = e["repetitions"][0]["stages"]
    assert [s["users"] for s in stages] == [20, 40, 60, 80, 100]
    assert all(s["rps"] and s["rps"] > 0 for s in stages)
    best = max(stages, key=lambda s: s["ok_rps"])
    assert e["saturation"] == {"users": best["users"], "ok_rps": best["ok_rps"], "p99_ms": best["p99_ms"]}
    # Stage counts add up to the measured requests (seconds are assigned to one stage each).
    timeline = e["repetitions"][0]["timeline"]
    assert len(timeline["t"]) >= 4
    assert all(p50 <= p99 for p50, p99 in zip(timeline["p50_ms"], timeline["p99_ms"], strict=True) if p50)


def test_no_calibration_means_cpu_only_generator_check(workers: Path) -> None:
    data = results.build(workers)
    e = entry(data, "asyncio", "ramp")
    assert data["run"]["calibration"] is None
    assert e["generator"]["ceiling_rps"] is None and e["generator"]["share_of_ceiling"] is None
    assert isinstance(e["generator_bound"], bool)


def test_resources_from_the_samples(basic: Path) -> None:
    data = results.build(basic)
    for e in data["results"]:
        assert e["memory"]["rss_peak_bytes"] > 10_000_000
        assert e["memory"]["rss_mean_bytes"] <= e["memory"]["rss_peak_bytes"]
        assert e["threads_peak"] >= 1 and e["processes_peak"] >= 1 and e["fds_peak"] > 0
        assert e["client_connections_peak"] >= e["users"]  # every user keeps a connection open
        assert e["cpu_percent"]["mean"] is not None and e["cpu_percent"]["peak"] >= e["cpu_percent"]["mean"]
        for rep in e["repetitions"]:
            res = rep["resources"]
            assert res["samples"] >= 2  # 4 Hz over a 2 s window, on a busy machine
            t = rep["resource_timeline"]["t"]
            assert t == sorted(t) and t[0] >= 0 and t[-1] <= rep["window"]["seconds"]
    writes = entry(data, "asyncio", "writes")
    assert writes["db_connections_peak"] and writes["db_connections_peak"] > 0
    assert writes["pool"]["size"] == 10


def test_database_sessions_of_another_server_are_subtracted(basic: Path) -> None:
    data = results.build(basic)
    e = entry(data, "asyncio", "json")
    meta = load_json(basic / "asyncio" / "json" / "scenario.json")
    other = meta["db_sessions_before_start"]
    assert other and e["db_sessions_other"] == other  # this run shared its database with other servers
    assert e["warnings"] and "subtracted" in e["warnings"][0]
    raw = max(r["resources"]["db_connections_peak"] for r in e["repetitions"])
    assert e["db_connections_peak"] == max(0, raw - other)


def test_writes_check_is_carried_and_a_loss_is_a_problem(basic: Path) -> None:
    data = results.build(basic)
    e = entry(data, "threaded", "writes")
    assert e["writes"]["ok"] is True
    assert e["writes"]["acknowledged"] == e["writes"]["rows"] > 0
    assert e["writes"]["acknowledged"] == sum(r["acks_recorded"] for r in e["repetitions"])
    assert data["ok"] is True and data["problems"] == []

    run_path = basic / "threaded" / "writes" / "rep-2" / "run.json"
    run = load_json(run_path)
    run["writes"].update(rows=run["writes"]["acknowledged"] - 3, missing=3, ok=False,
                         message="3 acknowledged orders LOST")
    run_path.write_text(json.dumps(run))
    data = results.build(basic)
    e = entry(data, "threaded", "writes")
    assert e["writes"]["ok"] is False and e["writes"]["missing"] == 3
    assert e["status"] == "problem"
    assert any("LOST" in p for p in data["problems"]) and data["ok"] is False


def test_generator_bound_by_ceiling_and_by_cpu(basic: Path) -> None:
    cal_path = basic / "calibration.json"
    cal = load_json(cal_path)
    data = results.build(basic)
    slowest = min(e["rps"]["median"] for e in data["results"])
    cal["ceiling_rps"] = slowest  # every result is now at or above the generator's ceiling
    cal_path.write_text(json.dumps(cal))
    data = results.build(basic)
    for e in data["results"]:
        assert e["generator_bound"] is True
        assert "calibrated ceiling" in e["generator_bound_reason"]
        assert e["generator"]["share_of_ceiling"] >= 1.0
    assert len(data["generator_bound"]) == 4

    cal["ceiling_rps"] = 1e9
    cal_path.write_text(json.dumps(cal))
    data = results.build(basic)
    assert not any(e["generator_bound"] for e in data["results"] if e["generator"]["cpu_percent_mean"] < 90)

    bound, reasons, _ = generator.generator_verdict(95.0, 100.0, {"ceiling_rps": 1e9})
    assert bound and "95% of a core" in reasons[0]
    bound, reasons, ceiling = generator.generator_verdict(50.0, 900.0, {"ceiling_rps": 1000.0})
    assert bound and ceiling == 1000.0 and "90%" in reasons[0]
    assert generator.generator_verdict(50.0, 800.0, {"ceiling_rps": 1000.0})[0] is False
    assert generator.generator_verdict(None, None, None) == (False, [], None)


def test_missing_samples_and_a_failed_repetition_are_reported(basic: Path) -> None:
    (basic / "asyncio" / "json" / "rep-1" / "samples.jsonl").unlink()
    run_path = basic / "threaded" / "json" / "rep-2" / "run.json"
    run = load_json(run_path)
    run.update(status="failed", error="Locust timeout")
    run_path.write_text(json.dumps(run))
    data = results.build(basic)
    assert any("asyncio/json: rep 1: no samples" in p for p in data["problems"])
    assert any("threaded/json: rep 2: run status failed: Locust timeout" in p for p in data["problems"])
    # The other repetition still counts.
    assert entry(data, "asyncio", "json")["repetitions"][1]["resources"]["samples"] > 0


def test_latency_percentiles_of_known_values() -> None:
    h = HdrHistogram(1, 120_000_000, 3)
    for ms in range(1, 1001):  # 1, 2, ... 1000 ms, one request each
        h.record_value(ms * 1000)
    lat = records.latency_ms(h)
    assert lat is not None and lat["count"] == 1000
    assert lat["p50"] == pytest.approx(500, rel=1e-3)
    assert lat["p90"] == pytest.approx(900, rel=1e-3)
    assert lat["p99"] == pytest.approx(990, rel=1e-3)
    assert lat["p99_9"] == pytest.approx(999, rel=1e-3)
    assert lat["max"] == pytest.approx(1000, rel=1e-3)
    assert records.latency_ms(HdrHistogram(1, 120_000_000, 3)) is None


def test_resources_cut_the_window_and_price_connections() -> None:
    def sample(t: float, rss: int, conns: int, db: int) -> dict[str, Any]:
        return {"t": t, "rss_bytes": rss, "uss_bytes": None, "pss_bytes": None, "cpu_percent": 50.0,
                "threads": 4, "processes": 1, "fds": 10 + conns, "tcp": {"ESTABLISHED": conns},
                "db": {"total": db},
                "metrics": {"pool_size": 10, "pool_in_use": db, "pool_waiting": 0, "rejections": 7,
                            "inflight": 1, "open_connections": conns + 1}}

    samples = [sample(0, 40_000_000, 0, 0), sample(1, 41_000_000, 0, 2),  # idle, before the window
               sample(2, 50_000_000, 100, 10), sample(3, 51_000_000, 100, 10),  # the window
               sample(9, 90_000_000, 0, 0)]  # after it
    res = resources.resources(samples, 2.0, 3.0)
    assert res["samples"] == 2
    assert res["rss_peak_bytes"] == 51_000_000 and res["rss_mean_bytes"] == 50_500_000
    assert res["rss_baseline_bytes"] == 41_000_000  # the last sample with no client connected
    assert res["rss_per_connection_bytes"] == 100_000  # (51 MB - 41 MB) / 100 connections
    assert res["client_connections_peak"] == 100 and res["db_connections_peak"] == 10
    assert res["rejections"] == 0  # a counter: its growth inside the window
    # Without tcp counts the server's own gauge is used, less the scrape's connection.
    del samples[2]["tcp"], samples[3]["tcp"]
    assert resources.resources(samples, 2.0, 3.0)["client_connections_peak"] == 100


def test_cli_rebuilds_results_json(basic: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "lab", "results", str(basic)], capture_output=True,
                          text=True,
                          timeout=120, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "asyncio" in proc.stdout and "wrote" in proc.stdout
    first = load_json(basic / "results.json")
    again = results.build(basic)
    first.pop("generated_at")
    again.pop("generated_at")
    assert json.loads(json.dumps(again)) == first  # the same raw files give the same results


def test_cli_says_what_to_pass_for_a_wrong_folder(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "lab", "results", str(tmp_path)], capture_output=True,
                          text=True, timeout=120, cwd=REPO, check=False)
    assert proc.returncode == 2
    assert "not a run folder" in proc.stderr and "reports/<run-id>" in proc.stderr
    assert "Traceback" not in proc.stderr


def _step(rate: float, *, meets: bool = True, limited: bool = False, achieved: float | None = None,
          dropped: int = 0, servers_miss: bool = False) -> dict[str, Any]:
    return {"rate": rate, "meets_slo": meets, "misses": [] if meets else ["p99 500 ms >= 200 ms"],
            "generator_limited": limited, "generator_reasons": ["its starts lagged"] if limited else [],
            "achieved_rps": rate if achieved is None else achieved, "dropped": dropped,
            "servers_miss": servers_miss, "p99_uncorrected_ms": 450.0 if servers_miss else 150.0}


def test_capacity_is_the_last_step_that_held_and_a_generator_miss_is_never_the_servers() -> None:
    cap = openmodel.capacity([_step(40), _step(80), _step(160, meets=False)], 200)
    assert cap and cap["capacity_rps"] == 80 and cap["limited_by"] == "server" and cap["knee_rate"] == 160
    # The generator lagged on a step that missed: the miss may be the generator's, so it is no knee.
    cap = openmodel.capacity([_step(40), _step(80, meets=False, limited=True)], 200)
    assert cap and cap["capacity_rps"] == 40 and cap["limited_by"] == "generator" and cap["lower_bound"]
    # ...but when the server's answers, timed from the send, missed too, the knee is the server's: lag
    # follows a saturated server (bursts of answers, requests piling up), and it explains no such miss.
    cap = openmodel.capacity([_step(40), _step(80, meets=False, limited=True, servers_miss=True)], 200)
    assert cap and cap["capacity_rps"] == 40 and cap["limited_by"] == "server" and not cap["lower_bound"]
    assert "timed from the send its p99 was still 450 ms" in cap["note"]
    # It lagged on a step the server met at the full rate: latency counted from the schedule already
    # holds the lag, so the step stands.
    cap = openmodel.capacity([_step(40, limited=True), _step(80, meets=False)], 200)
    assert cap and cap["capacity_rps"] == 40 and cap["limited_by"] == "server"
    # A higher step that held after the miss does not move the knee; it is said, and recorded.
    cap = openmodel.capacity([_step(40), _step(80, meets=False), _step(160), _step(320, meets=False)], 200)
    assert cap and cap["capacity_rps"] == 40 and cap["knee_rate"] == 80 and cap["held_again_rate"] == 160
    assert "160/s met the SLO again" in cap["note"] and "REPS=" in cap["note"]
    assert openmodel.capacity([_step(40), _step(80, meets=False)], 200)["held_again_rate"] is None  # type: ignore[index]
    # ...unless the rate was not delivered (dropped starts, or too few sent).
    for short in (_step(40, limited=True, dropped=3), _step(40, limited=True, achieved=30)):
        cap = openmodel.capacity([short, _step(80)], 200)
        assert cap and cap["capacity_rps"] is None and cap["limited_by"] == "generator"


def test_a_full_core_phase_short_of_the_budgeted_rate_is_flagged_past_a_few_per_cent() -> None:
    # hold is capped by its pool, budget or not: 482/s beside 486/s is the same load, 400/s is not
    assert not results.starved(482, 486) and not results.starved(600, 486)
    assert results.starved(400, 486)


def test_a_full_core_window_is_split_from_the_budgeted_one_at_the_runners_reading(tmp_path: Path) -> None:
    """CPU per request of a repetition with a full-core window: the budgeted window's server CPU and
    the full one's are split at the counter the runner read when it lifted the quota, not interpolated
    between samples that straddle the lift (the CPU rate jumps there: here from 0.1 to 0.8 core)."""
    def used(t: float) -> float:  # the group's counter: 0.1 core until the lift at t=10, 0.8 after
        return 0.1 * min(t, 10.0) + 0.8 * max(0.0, t - 10.0)
    times = (8.0, 8.4, 8.8, 9.2, 9.6, 10.3, 10.7, 11.1, 11.5)
    samples = [{"t": t, "cgroup_cpu_seconds": used(t)} for t in times]
    shape = {"full_core": {"seconds": 1.5, "start": 10.0, "end": 11.5}}
    run = {"full_core": {"mark": {"split_at": 10.0, "lifted_at": 10.0, "late_ms": 0.4,
                                  "cgroup_cpu_seconds": used(10.0)}}, "cpu_budget": {"cores": 0.1}}
    recs = [{"full": {"requests": 6000, "failures": 0}}]
    out = results._costs(samples, 8.0, 10.0, 1000, shape, run, recs, tmp_path)
    assert out["cost"]["phase"] == "full-core" and out["cost_budget"]["phase"] == "budget"
    assert out["cost"]["cpu_us_per_request"] == pytest.approx(0.8 * 1.5 * 1e6 / 6000)  # 200 µs
    assert out["cost_budget"]["cpu_us_per_request"] == pytest.approx(0.1 * 2.0 * 1e6 / 1000)  # 200 µs
    assert out["full_core"]["requests"] == 6000 and out["full_core"]["rps"] == pytest.approx(4000)
    # without the runner's reading the split is lost: interpolating across 9.6..10.3 is 10 % off
    wrong = resources.cost(samples, 10.0, 11.5, 6000)["cpu_us_per_request"]
    assert abs(wrong / 200 - 1) > 0.05
    # no full-core window: the measured window's cost, as before
    plain = results._costs(samples, 8.0, 10.0, 1000, {}, {"cpu_budget": {"cores": 0.1}}, recs, tmp_path)
    assert plain["cost"]["phase"] == "budget" and plain["cost_budget"] is None and plain["full_core"] is None
