"""lab/load/calibrate.py's store: a ceiling is reused only for the settings it was measured under."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lab import files
from lab.load import calibrate
from lab.load.settings import build_parser, from_args
from lab.stack import idle

pytestmark = pytest.mark.unit


def test_a_ceiling_measured_with_idle_cpus_halting_is_not_reused_when_they_poll(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "calibration.json"
    monkeypatch.setenv("LAB_CALIBRATION_FILE", str(store))
    s = from_args(build_parser().parse_args(["--idle-poll", "no", "--calibrate", "auto"]))
    halting = calibrate.key(s.load_cpus, s.server_cpus, s.locust_workers, polling=False)
    assert halting != calibrate.key(s.load_cpus, s.server_cpus, s.locust_workers, polling=True)
    entry = {"key": halting, "fingerprint": calibrate.fingerprint(), "measured_ts": time.time(),
             "ceiling_rps": 5000.0}
    files.write_json(store, {"version": calibrate.VERSION, "entries": {halting: entry}})
    assert calibrate.load_fresh(s.load_cpus, s.server_cpus, s.locust_workers, polling=False) == entry
    assert calibrate.load_fresh(s.load_cpus, s.server_cpus, s.locust_workers, polling=True) is None
    # A run that will not hold idle polling needs no new calibration; one that will, needs one.
    monkeypatch.setattr(idle, "QOS_DEVICE", tmp_path / "writable")
    (tmp_path / "writable").write_text("")
    assert calibrate.needed(s) is False
    assert calibrate.needed(s.replace(idle_poll="auto")) is True
    assert json.loads(store.read_text())["entries"] == {halting: entry}  # planning measures nothing


def test_an_open_rate_far_below_the_closed_loop_ceiling_is_called_a_busy_machine() -> None:
    # 11:52 on a shared VM: 500/s against 4,858 rps; quiet, 2,000/s against 3,297 rps.
    busy = {"ceiling_rps": 4857.5, "open_sustainable_rps": 500.0, "key": "k", "measured_at": "t"}
    assert calibrate.busy(busy)
    assert "make calibrate` again when the machine is quiet" in calibrate.describe(busy)
    quiet = {**busy, "ceiling_rps": 3297.2, "open_sustainable_rps": 2000.0}
    assert not calibrate.busy(quiet) and "WARNING" not in calibrate.describe(quiet)
    assert calibrate.busy({**busy, "open_sustainable_rps": None})  # no tested rate kept
