"""Results carry each repetition's speed probe reading and CPU per request at the run's reference speed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lab.load import speed
from lab.results import build as results

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data"


def _probe_file(rep_dir: Path, work_per_ms: float) -> None:
    """A speed.jsonl as the probe writes it, windows spanning the repetition's measured window."""
    shape = json.loads((rep_dir / "records" / "shape.json").read_text(encoding="utf-8"))
    t, end = shape["measure_start"], shape["measure_end"] + speed.WINDOW_S
    lines = [json.dumps({"probe": "speed", "loop": speed.LOOP})]
    while t <= end:
        t += speed.WINDOW_S
        lines.append(json.dumps({"t": t, "work": round(work_per_ms * 12.5), "cpu_s": 0.0125}))
    (rep_dir / speed.FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_speed_adjusts_cpu_per_request_next_to_the_raw_figure(tmp_path: Path) -> None:
    run = tmp_path / "basic"
    shutil.copytree(DATA / "basic", run)
    # rep 1 of every entry ran at 100 loops/ms, rep 2 at 80 (a machine 20 % slower)
    for rep_dir in run.glob("*/*/rep-*"):
        _probe_file(rep_dir, 100.0 if rep_dir.name == "rep-1" else 80.0)
    data = results.build(run)
    assert data["run"]["speed"]["work_per_cpu_ms"] == 90.0 and data["run"]["speed"]["reps"] >= 4
    for e in data["results"]:
        reps = e["repetitions"]
        assert [r["speed"]["work_per_cpu_ms"] for r in reps] == [100.0, 80.0]
        raw = [r["cost"]["cpu_us_per_request"] for r in reps]
        adjusted = e["cost"]["cpu_us_per_request_speed_adjusted"]["values"]
        assert adjusted == pytest.approx([raw[0] * 100 / 90, raw[1] * 80 / 90], abs=0.01)
        assert e["cost"]["cpu_us_per_request"]["values"] == raw  # the raw figure is untouched


def test_without_a_probe_the_fields_are_null(tmp_path: Path) -> None:
    run = tmp_path / "basic"
    shutil.copytree(DATA / "basic", run)
    data = results.build(run)
    assert data["run"]["speed"] is None
    for e in data["results"]:
        assert e["cost"]["cpu_us_per_request_speed_adjusted"] is None
        assert all(r["speed"] is None for r in e["repetitions"])
