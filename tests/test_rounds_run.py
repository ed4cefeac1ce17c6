"""Rounds added for real (lab/load/rounds.py): a tiny load run of asyncio on /json that asks for a change
no two repetitions can resolve adds rounds up to MAX_REPS, and one under a time cap it has already spent
adds none. Real PostgreSQL, server and Locust; about 30 s on the 2-core lab machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def load(database_url: str, reports: Path, run_id: str, *args: str) -> tuple[str, dict[str, Any]]:
    """A tiny run of 1 s repetitions resolving 0.5 % (inside the 3 % margin: never resolved)."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"LAB_VARIANTS", "SERVERS", "SCENARIOS", "RESOLVE", "MAX_REPS", "TIME_CAP"}}
    cmd = [sys.executable, "-m", "lab", "load", "--profile", "smoke", "--servers", "asyncio",
           "--scenarios", "json", "--duration", "1", "--warmup", "0.5", "--full-core-seconds",
           "0", "--calibrate", "skip", "--resolve", "0.5", "--reports-dir", str(reports), "--run-id", run_id,
           *args]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=240, check=False,
                          env={**env, "LAB_DATABASE_URL": database_url})
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"exit {done.returncode}:\n{out[-4000:]}"
    data = json.loads((reports / run_id / "results.json").read_text(encoding="utf-8"))
    return out, data


def test_rounds_are_added_up_to_max_reps_and_stop_at_the_time_cap(
        database_url: str, tmp_path: Path) -> None:
    out, data = load(database_url, tmp_path, "more", "--reps", "4", "--max-reps", "5", "--time-cap", "0")
    (entry,) = data["results"]
    assert entry["reps"] == 5 and [r["rep"] for r in entry["repetitions"]] == [1, 2, 3, 4, 5]
    assert all(r["status"] == "ok" for r in entry["repetitions"])
    rounds = entry["rounds"]
    assert (rounds["planned"], rounds["run"], rounds["stopped"]) == (4, 5, "max_reps"), rounds
    assert rounds["added_seconds"] > 0 and rounds["reach"][0]["server"] == "asyncio"
    assert rounds["reach"][0]["reps"] == 5 and rounds["reach"][0]["mde"] > 0.005
    assert "json: after 4 rounds asyncio's CPU per request could see" in out and "adding round 5" in out
    assert "rep 5 (added)" in out and "MAX_REPS=5 reached" in out
    settings = data["run"]["settings"]
    assert (settings["resolve"], settings["max_reps"], settings["time_cap_seconds"]) == (0.005, 5, None)
    assert "--resolve 0.5 --max-reps 5 --time-cap 0" in data["run"]["command"]

    out, data = load(database_url, tmp_path, "capped", "--reps", "4", "--max-reps", "5", "--time-cap", "0.05")
    (entry,) = data["results"]
    assert entry["reps"] == 4 and entry["rounds"]["stopped"] == "time_cap", entry["rounds"]
    assert entry["rounds"]["share_seconds"] == 0.0 and "share of TIME_CAP (0 s)" in out
