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
