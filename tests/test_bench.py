"""lab/bench/bench.py: verdicts from recorded samples, counting by difference (real run: test_bench_run)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from lab.bench import bench, bench_report, fleet, versus, wrk
from lab.bench import instructions as bench_instructions
from lab.bench.wrk import Sample, Series

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
ARGS = argparse.Namespace(reps=3, duration=3.0, connections=64, pool_size=10, budget=None)


def series(*cpu_us: float, rps: float = 10_000.0, errors: int = 0) -> Series:
    return Series([Sample(rps, int(rps * 3), errors, 97.0, 40.0, us) for us in cpu_us])


def report_for(on: Series, off: Series, db: Series | None = None) -> dict[str, object]:
    results = {("threaded", "/json"): on, ("threaded (metrics off)", "/json"): off,
               ("threaded", "/db"): db or series(100.0, 101.0, 99.0)}
    return bench_report.build_report(results, ["threaded"], ARGS, [0], [1])


def test_a_cost_within_the_target_holds_and_one_beyond_it_is_missed() -> None:
    held = report_for(series(20.4, 20.5, 20.6), series(20.0, 20.0, 20.1))
    assert held["data"]["all_hold"] is True  # type: ignore[index]
    missed = report_for(series(23.0, 23.1, 23.2), series(20.0, 20.0, 20.1))
    assert missed["data"]["all_hold"] is False  # type: ignore[index]
    assert "MISS: threaded: metrics cost +15.5%" in str(missed["markdown"])


def test_a_miss_inside_the_repetitions_spread_says_it_is_not_settled() -> None:
    noisy = report_for(series(21.2, 19.0, 23.5), series(20.0, 17.0, 22.0))
    text = str(noisy["markdown"])
    assert "MISS: threaded: metrics cost +6.0%" in text and "not settled" in text
    clear = report_for(series(23.0, 23.1, 23.2), series(20.0, 20.0, 20.1))
    assert "not settled" not in str(clear["markdown"])


def test_error_responses_are_called_out() -> None:
    text = str(report_for(series(20.0, 20.0, 20.0), series(20.0, 20.0, 20.0),
                          db=series(100.0, 100.0, 100.0, errors=7))["markdown"])
    assert "WARNING: wrk counted non-2xx responses or socket errors for threaded /db (21)" in text


def _dump(path: Path, instructions: int) -> None:
    path.write_text(f"version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: {instructions}\n"
                    f"totals: {instructions}\n")


def test_counting_by_difference_cancels_what_both_runs_share(tmp_path: Path) -> None:
    start_up = 5_000_000_000  # start-up, warm-up and shutdown: the same in both runs
    runs = iter([(1_000, 1), (9_000, 2)])

    def run(extra: float) -> tuple[int, Path, list[int]]:
        requests, n = next(runs)
        folder = tmp_path / f"run{n}"
        folder.mkdir()
        _dump(folder / "callgrind.out.100", 1_000_000)  # the supervising parent
        _dump(folder / "callgrind.out.101", start_up + 170_000 * requests)  # the worker
        return requests, folder / "callgrind.out", [100, 101]

    counted = bench_instructions.count_by_difference(run, 8.0)
    assert counted.requests == 8_000 and counted.per_request == 170_000


def test_a_process_that_left_no_totals_is_an_error_not_a_zero(tmp_path: Path) -> None:
    def run(extra: float) -> tuple[int, Path, list[int]]:
        _dump(tmp_path / "callgrind.out.100", 1_000_000)  # the worker (101) was killed: no file
        return 500, tmp_path / "callgrind.out", [100, 101]

    with pytest.raises(RuntimeError, match=r"callgrind\.out\.101"):
        bench_instructions.count_by_difference(run, 8.0)


WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:8001/db
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     7.02ms    1.10ms  21.37ms   88.51%
    Req/Sec     9.14k   312.48     9.55k    80.00%
  18190 requests in 2.00s, 2.89MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 17
Requests/sec:   9088.71
Transfer/sec:      1.44MB
"""


def test_wrk_counts_non_2xx_apart_from_socket_errors() -> None:
    counts = wrk.parse_wrk(WRK_OUTPUT, 2.0)
    assert counts == wrk.WrkCounts(9088.71, 18190, 17, 3)
    assert counts.errors == 20


def test_a_clean_wrk_run_counts_no_errors_and_a_failed_one_nothing() -> None:
    clean = "\n".join(line for line in WRK_OUTPUT.splitlines()
                      if "errors" not in line and "Non-2xx" not in line)
    assert wrk.parse_wrk(clean, 2.0) == wrk.WrkCounts(9088.71, 18190, 0, 0)
    assert wrk.parse_wrk("unable to connect to 127.0.0.1:8001 Connection refused\n", 2.0) is None


def test_endpoints_are_named_and_kept_in_the_bench_order() -> None:
    assert bench.parse_endpoints("fortunes, json") == ["/json", "/fortunes"]
    assert bench.parse_endpoints("json,db,queries,fortunes") == [
        "/json", "/db", "/queries?queries=20", "/fortunes"]
    with pytest.raises(ValueError, match="choose from json, db, queries, fortunes"):
        bench.parse_endpoints("json,plaintext")
    with pytest.raises(ValueError):
        bench.parse_endpoints(" , ")


def test_each_server_is_measured_next_to_its_stack_reference_and_each_reference_once() -> None:
    plan = bench.plan_targets(["threaded", "gevent", "asyncio", "multiproc"], ["/json", "/db"])
    assert plan[:3] == [("threaded", "/json"), ("threaded (metrics off)", "/json"),
                        ("bare threaded+psycopg2", "/json")]
    db = [name for name, path in plan if path == "/db"]
    assert db == ["threaded", "bare threaded+psycopg2", "gevent", "bare gevent+psycopg2", "asyncio",
                  "bare aiohttp+asyncpg", "multiproc"]  # multiproc shares asyncio's reference
    assert len(plan) == len(set(plan)) == 4 * 2 + 4 + 3 * 2
    assert bench.plan_targets(["gevent"], ["/fortunes"]) == [("gevent", "/fortunes"),
                                                             ("bare gevent+psycopg2", "/fortunes")]


def test_without_references_only_the_servers_are_measured() -> None:
    plan = bench.plan_targets(["threaded", "asyncio"], ["/json", "/db"], references=False)
    assert plan == [("threaded", "/json"), ("asyncio", "/json"), ("threaded", "/db"), ("asyncio", "/db")]


def test_the_ratio_is_the_reference_cost_over_the_server_cost() -> None:
    lean = series(50.0, 50.0, 50.0, rps=12_000.0)
    heavy = series(80.0, 80.0, 80.0, rps=9_000.0)
    assert bench_report.ratios(lean, heavy) == (1.6, 12_000.0 / 9_000.0)  # the server is leaner: above 1
    assert bench_report.ratios(heavy, lean) == (0.625, 0.75)


def test_the_estimate_counts_warm_ups_and_every_repetition() -> None:
    one = bench.estimate_seconds(1, 3, 5.0)
    assert bench.estimate_seconds(32, 3, 5.0) == pytest.approx(32 * one)
    assert 18 < one < 20  # a 1 s warm-up at each of 3 starts + 3 x 5 s, plus wrk's start-up each time
    assert 16 < bench.estimate_seconds(1, 3, 5.0, fresh=False) < 17.5  # one start, one warm-up


def pair_results(server_us: float, reference_us: float, non2xx: int = 0,
                 spread: float = 0.0, peer_us: float | None = None) -> dict[tuple[str, str], Series]:
    """gevent, its metrics-off twin, its floor and (peer_us) its peer on two endpoints."""
    results: dict[tuple[str, str], Series] = {}
    paths = ["/json", "/queries?queries=20"]
    for name, path in bench.plan_targets(["gevent"], paths, True, peer_us is not None):
        us = reference_us if name.startswith("bare") else peer_us if name.startswith("peer") else server_us
        assert us is not None
        results[(name, path)] = Series([Sample(5_000.0, 15_000, non2xx if name == "gevent" else 0, 97.0, 40.0,
                                               us * (1 + d), non2xx if name == "gevent" else 0)
                                        for d in (-spread / 2, 0.0, spread / 2)])
    return results


def test_a_server_at_least_0_8x_its_floor_holds_and_a_heavier_one_is_missed() -> None:
    held = bench_report.build_report(pair_results(90.0, 100.0), ["gevent"], ARGS, [0], [1])
    assert held["data"]["all_hold"] is True
    pair = held["data"]["pairs"][1]
    assert (pair["server"], pair["reference"], pair["endpoint"]) == (
        "gevent", "bare gevent+psycopg2", "/queries?queries=20")
    assert pair["ratio"] == pytest.approx(100 / 90) and pair["holds"] is True
    row = "| gevent | bare gevent+psycopg2 (floor) | `/json` | 90.0 (0%) | 100.0 (0%) | **1.11x** | 0.8x |"
    assert row in held["markdown"]
    assert "PASS: gevent: 0 non-2xx responses at -c64 on /json and /queries?queries=20" in held["markdown"]
    assert held["data"]["references"]["bare gevent+psycopg2"]["endpoints"]["/json"]["cpu_us"] == 100.0
    samples = held["data"]["servers"]["gevent"]["metrics_off"]["/json"]["samples"]
    assert [x["cpu_us"] for x in samples] == [90.0, 90.0, 90.0]

    missed = bench_report.build_report(pair_results(160.0, 100.0), ["gevent"], ARGS, [0], [1])
    assert missed["data"]["all_hold"] is False
    assert ("MISS: gevent /json is 0.62x bare gevent+psycopg2's throughput per CPU (160.0 vs 100.0 us per "
            "request; by rps 1.00x) (target at least 0.80x its floor)") in missed["markdown"]
    assert "not settled" not in missed["markdown"]
    noisy = bench_report.build_report(pair_results(130.0, 100.0, spread=0.2), ["gevent"], ARGS, [0], [1])
    assert "0.77x" in noisy["markdown"] and "not settled" in noisy["markdown"]


def test_a_server_must_match_its_peer() -> None:
    plan = bench.plan_targets(["gevent"], ["/json"], True, True)
    assert plan == [("gevent", "/json"), ("gevent (metrics off)", "/json"), ("bare gevent+psycopg2", "/json"),
                    ("peer gevent.pywsgi", "/json")]
    held = bench_report.build_report(pair_results(90.0, 80.0, peer_us=95.0), ["gevent"], ARGS, [0], [1])
    assert held["data"]["all_hold"] is True  # 0.89x its floor, 1.06x its peer
    peer = [p for p in held["data"]["pairs"] if p["kind"] == "peer"]
    assert [p["endpoint"] for p in peer] == ["/json", "/queries?queries=20"] and peer[0]["target"] == 1.0
    assert "| gevent | peer gevent.pywsgi (peer) | `/json` | 90.0 (0%) | 95.0 (0%) | **1.06x** | 1.0x |" in (
        held["markdown"])
    missed = bench_report.build_report(pair_results(90.0, 80.0, peer_us=85.0), ["gevent"], ARGS, [0], [1])
    assert missed["data"]["all_hold"] is False
    assert ("MISS: gevent /json is 0.94x peer gevent.pywsgi's throughput per CPU (90.0 vs 85.0 us per "
            "request; by rps 1.00x) (target at least 1.00x its peer)") in missed["markdown"]
    assert missed["data"]["references"]["peer gevent.pywsgi"]["endpoints"]["/json"]["cpu_us"] == 85.0


def test_non_2xx_responses_miss_the_target_at_64_connections_and_are_only_shown_at_others() -> None:
    at_64 = bench_report.build_report(pair_results(90.0, 100.0, non2xx=2), ["gevent"], ARGS, [0], [1])
    assert at_64["data"]["all_hold"] is False
    assert "MISS: gevent: 12 non-2xx responses at -c64" in at_64["markdown"]  # 2 x 3 reps x 2 endpoints
    assert at_64["data"]["non2xx"]["gevent /json"] == 6
    other = argparse.Namespace(**{**vars(ARGS), "connections": 256})
    at_256 = bench_report.build_report(pair_results(90.0, 100.0, non2xx=2), ["gevent"], other, [0], [1])
    assert at_256["data"]["all_hold"] is True
    assert "NOTE: the non-2xx target holds at -c64; this run used -c256" in at_256["markdown"]


def test_the_report_says_when_wrk_waited_after_each_response() -> None:
    plain = bench_report.build_report(pair_results(90.0, 100.0), ["gevent"], ARGS, [0], [1])
    assert "waiting" not in plain["markdown"]
    paced = argparse.Namespace(**{**vars(ARGS), "think_ms": 1})
    report = bench_report.build_report(pair_results(90.0, 100.0), ["gevent"], paced, [0], [1])
    assert "wrk -t1 -c64, each connection waiting 1 ms after a response" in report["markdown"]
    assert report["data"]["settings"]["think_ms"] == 1


def test_instruction_counts_replace_only_the_verdicts_they_count() -> None:
    results = {**pair_results(90.0, 100.0)}
    results = {(name.replace("gevent", "asyncio").replace("bare asyncio+psycopg2", "bare aiohttp+asyncpg"),
                path): s for (name, path), s in results.items()}
    counted = {"asyncio /json": 100_000.0, "asyncio (metrics off) /json": 99_000.0,
               "asyncio /db": 400_000.0, "bare aiohttp+asyncpg /db": 300_000.0}
    report = bench_report.build_report(results, ["asyncio"], ARGS, [0], [1], counted)
    texts = [v["text"] for v in report["data"]["verdicts"]]
    assert texts[0].startswith("asyncio: metrics cost +1.0% of /json throughput by instructions")
    assert any(t.startswith("asyncio /json is 1.11x bare aiohttp+asyncpg's throughput per CPU")
               for t in texts)
    assert any(t.startswith("asyncio /db is 0.75x bare aiohttp+asyncpg's throughput by instructions")
               for t in texts)
    assert report["data"]["all_hold"] is False


def test_against_a_revision_exports_its_servers_and_names_a_wrong_one(tmp_path: Path) -> None:
    short, folder = versus.export("HEAD", fleet.REPO)
    try:
        assert (folder / "servers" / "run_threaded.py").is_file() and short
    finally:
        shutil.rmtree(folder)
    with pytest.raises(ValueError, match="not a commit here"):
        versus.export("no-such-revision-anywhere", fleet.REPO)


def test_against_a_revision_reports_this_checkout_over_it_with_its_interval() -> None:
    rows = versus.rows("threaded", "abc1234", Path("/tmp/x"), references=True)
    assert [r.kind for r in rows] == ["server", "revision", "floor", "peer", "peer"]
    assert [r.label for r in rows[:3]] == [versus.THIS, "at abc1234", "floor"]

    def samples(values: list[float]) -> list[Sample]:
        return [Sample(5_000.0, 15_000, 0, 97.0, 40.0, us) for us in values]

    by_label = {versus.THIS: {"/json": samples([20.0, 21.0, 20.5, 19.5, 20.2, 20.8])},
                "at abc1234": {"/json": samples([30.0, 31.0, 29.0, 30.5, 29.5, 30.2])},
                "floor": {"/json": samples([18.0, 18.5, 17.5, 18.2, 18.1, 17.9])}}
    lines, data = versus.report({"threaded": by_label}, "abc1234", ["/json"], 0.03)
    found = data["threaded"]["/json"]["this_over_revision"]
    assert found["changed"] and 0.6 < found["ratio"] < 0.7 and found["ci"][1] < 1
    row = next(line for line in lines if line.startswith("| threaded"))
    assert "x0.677 [0.655-0.7]" in row and "floor 18.1 (0.89)" in row
    same = {versus.THIS: by_label[versus.THIS], "at abc1234": by_label[versus.THIS]}
    _, data = versus.report({"threaded": same}, "abc1234", ["/json"], 0.03)
    assert not data["threaded"]["/json"]["this_over_revision"]["changed"]
