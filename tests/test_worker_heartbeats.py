"""A Locust worker over 90 % of its core is flagged generator-bound, from the master's heartbeat file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.results import generator

pytestmark = pytest.mark.unit


def _write(folder: Path, polls: list[list[object]]) -> None:
    host = {"host": "c", "address": "198.18.0.3"}
    record = {"workers": {"w-busy": host, "w-calm": host}, "polls": polls}
    (folder / "workers-b-1.json").write_text(json.dumps(record), encoding="utf-8")


def test_a_worker_over_its_core_is_flagged_and_one_below_is_not(tmp_path: Path) -> None:
    polls = [[100.0 + i, {"w-busy": 93.0 + i, "w-calm": 40.0}] for i in range(5)]
    polls.append([300.0, {"w-busy": 0.0, "w-calm": 100.0}])  # after the window: not counted
    _write(tmp_path, polls)
    workers = {w["id"]: w for w in generator.worker_heartbeats(tmp_path, 100.0, 104.0)}
    assert workers["w-busy"]["bound"] and workers["w-busy"]["cpu_percent_mean"] == 95.0
    assert workers["w-busy"]["heartbeats"] == 5 and workers["w-busy"]["cpu_percent_peak"] == 97.0
    assert not workers["w-calm"]["bound"] and workers["w-calm"]["cpu_percent_mean"] == 40.0
    reasons = generator.worker_reasons(list(workers.values()))
    assert reasons == ["Locust worker w-busy on 198.18.0.3 used 95% of its core (its heartbeats; limit 90%)"]


def test_a_worker_without_heartbeats_in_the_window_is_not_judged(tmp_path: Path) -> None:
    _write(tmp_path, [[50.0, {"w-busy": 99.0}]])
    workers = generator.worker_heartbeats(tmp_path, 100.0, 104.0)
    assert {w["id"] for w in workers} == {"w-busy", "w-calm"}
    assert all(w["cpu_percent_mean"] is None and not w["bound"] for w in workers)
    assert generator.worker_reasons(workers) == []
