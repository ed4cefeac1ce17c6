"""The speed probe: a real subprocess on a CPU, one window per line, read back into work per CPU ms."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lab.load import speed

pytestmark = pytest.mark.unit


def test_the_probe_measures_its_own_work_per_cpu_ms(tmp_path: Path) -> None:
    out = tmp_path / speed.FILE
    cpu = min(os.sched_getaffinity(0))
    began = time.time()
    popen = speed.start(out, [cpu], duty=0.5)
    deadline = time.monotonic() + 10  # SCHED_IDLE: on a busy CPU the probe waits for idle time
    while time.monotonic() < deadline and len(speed.read(out)) < 4:
        time.sleep(0.25)
    speed.stop(popen)
    rows = speed.read(out)
    assert len(rows) >= 2, out.read_text()
    assert all(r["work"] > 0 and r["cpu_s"] > 0 for r in rows)
    # each burst's first unit starts cold after its sleep: never counted warm
    assert all(0 < r["clean_work"] < r["work"] and 0 < r["clean_cpu_s"] < r["cpu_s"] for r in rows)
    got = speed.speed(rows, began - 1, time.time())
    assert got is not None and got["work_per_cpu_ms"] > 0 and got["windows"] >= 2
    assert 0 < got["warm_share"] < 1 and got["all_work_per_cpu_ms"] > 0
    assert sum(r["cpu_s"] for r in rows) <= 0.6 * (rows[-1]["t"] - began) + 0.05  # at most about its duty


def test_windows_outside_the_measured_span_or_starved_are_left_out() -> None:
    rows = [{"t": 10.0, "work": 100, "cpu_s": 0.01}, {"t": 10.25, "work": 100, "cpu_s": 0.01},
            {"t": 10.5, "work": 1, "cpu_s": 0.0001}, {"t": 10.75, "work": 300, "cpu_s": 0.01},
            {"t": 20.0, "work": 999, "cpu_s": 0.01}]
    got = speed.speed(rows, 9.75, 10.6)  # the windows that began from 9.75 to 10.6, less the starved one
    assert got is not None and (got["work_per_cpu_ms"], got["windows"], got["cpu_s"]) == (16.667, 3, 0.03)
    assert speed.speed(rows, 30, 31) is None


def test_the_rate_is_of_the_units_that_ran_warm_where_the_file_has_them() -> None:
    # A unit that lost the CPU, and the one after it, start from caches another process filled: left out,
    # so a server that wakes often does not read as a slower machine.
    rows = [{"t": 10.25, "work": 120, "cpu_s": 0.02, "clean_work": 100, "clean_cpu_s": 0.01},
            {"t": 10.5, "work": 110, "cpu_s": 0.02, "clean_work": 100, "clean_cpu_s": 0.01}]
    got = speed.speed(rows, 10.0, 10.5)
    assert got is not None
    assert (got["work_per_cpu_ms"], got["warm_share"], got["all_work_per_cpu_ms"]) == (10.0, 0.5, 5.75)
    old = [{k: r[k] for k in ("t", "work", "cpu_s")} for r in rows]  # a file from before: every unit counts
    got = speed.speed(old, 10.0, 10.5)
    assert got is not None and got["work_per_cpu_ms"] == 5.75 and "warm_share" not in got


def test_a_missing_or_cut_file_reads_as_what_it_holds(tmp_path: Path) -> None:
    assert speed.read(tmp_path / "none.jsonl") == []
    cut = tmp_path / "cut.jsonl"
    cut.write_text('{"probe": "speed"}\n{"t": 1, "work": 5, "cpu_s": 0.01}\n{"t": 1.2', encoding="utf-8")
    assert speed.read(cut) == [{"t": 1, "work": 5, "cpu_s": 0.01}]
