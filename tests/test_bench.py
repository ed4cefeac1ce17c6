"""lab/bench/bench.py: verdicts from recorded samples, counting by difference (real run: test_bench_run)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from lab.bench import bench
from lab.bench import instructions as bench_instructions
from lab.bench.bench import Sample, Series

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
ARGS = argparse.Namespace(reps=3, duration=3.0, connections=64, pool_size=10)


def series(*cpu_us: float, rps: float = 10_000.0, errors: int = 0) -> Series:
    return Series([Sample(rps, int(rps * 3), errors, 97.0, 40.0, us) for us in cpu_us])


def report_for(on: Series, off: Series, db: Series | None = None) -> dict[str, object]:
    results = {("threaded", "/json"): on, ("threaded (metrics off)", "/json"): off,
               ("threaded", "/db"): db or series(100.0, 101.0, 99.0)}
    return bench.build_report(results, ["threaded"], ARGS, [0], [1])


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
