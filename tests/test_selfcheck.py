"""`make selfcheck` at smoke size, for real: the A/A pair must compare as no change and the A/B pair
(hold, pool 2 against 10) must be marked. Real servers, PostgreSQL and Locust; each test a minute or two."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab.results import stats

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def selfcheck(database_url: str, folder: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], str,
                                                                      dict[str, Any]]:
    """`python -m lab selfcheck` at smoke size into folder/check: (process, its output, selfcheck.json).
    The quick profile's 1 s window after its 0.5 s warm-up, and a 0.5 s full-core window (its default
    1.5 s measures finer; these checks judge effects several-fold, or only the wiring)."""
    env = {**os.environ, "LAB_DATABASE_URL": database_url}
    cmd = [sys.executable, "-m", "lab", "selfcheck", *args, "--servers", "asyncio", "--duration", "1",
           "--full-core-seconds", "0.5", "--reports-dir", str(folder), "--run-id", "check"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=540, check=False)
    doc = json.loads((folder / "check" / "selfcheck.json").read_text(encoding="utf-8"))
    return done, done.stdout + done.stderr, doc


def test_a_a_is_silent_and_a_b_is_found(database_url: str, tmp_path: Path) -> None:
    # The fewest repetitions the rule judges with (stats.MIN_REPS), for both pairs: its false alarms stay
    # under alpha at any count (a t test against the margin), and the A/B change (pool 2 against 10) is
    # several-fold, far past what four repetitions a side can see.
    done, out, doc = selfcheck(database_url, tmp_path, "--scenarios", "json", "--reps", str(stats.MIN_REPS),
                               "--power-tries", "0")
    aa, ab = doc["checks"]
    assert aa["check"] == "A/A" and aa["marked"] == [], out[-4000:]
    assert aa["figures"] > 10 and aa["entries"] == 1
    assert ab["check"] == "A/B" and ab["detected"], out[-4000:]
    assert f"x {stats.MIN_REPS} repetitions" in out and f"against 10, {stats.MIN_REPS} repetitions" in out
    assert done.returncode == 0 and doc["passed"], out[-4000:]
    assert (tmp_path / "check" / "compare-aa-1-vs-aa-2" / "compare.html").is_file()
    assert "A/A: pass" in out and "A/B: pass" in out


def test_load_vs_bench_pairs_every_figure(database_url: str, tmp_path: Path) -> None:
    # Only the wiring, at smoke size: whether the two agree is a figure of the machine, not a test.
    done, out, doc = selfcheck(database_url, tmp_path, "--skip-aa", "--skip-ab", "--load-vs-bench", "2",
                               "--power-tries", "0", "--resolve", "0")  # the wiring: no rounds added
    (lvb,) = doc["checks"]
    assert lvb["check"] == "load vs bench" and lvb["problems"] == [], out[-4000:]
    assert set(lvb["ratios"]) == {"asyncio /json", "asyncio /db"}, out[-4000:]
    assert all(len(r) == 2 and all(0.1 < x < 10 for x in r) for r in lvb["ratios"].values()), lvb
    assert done.returncode == (0 if lvb["passed"] else 1)
    assert "load vs bench" in out and "asyncio /json: load/bench x" in out


def test_power_curve_finds_a_large_injected_change(database_url: str, tmp_path: Path) -> None:
    # The small version: two tries, one large effect (+100 % CPU per request, of a given baseline, so no
    # pilot run). How often smaller effects are found is a figure of the machine, measured by make
    # selfcheck itself, not a test.
    done, out, doc = selfcheck(database_url, tmp_path, "--skip-aa", "--skip-ab", "--scenarios", "json",
                               "--reps", "4", "--power-tries", "2", "--power-effects", "100",
                               "--power-aa", "1", "--power-base-us", "50", "--fresh-server", "no")
    (curve,) = doc["checks"]
    assert curve["check"] == "power curve" and curve["problems"] == [], out[-4000:]
    assert curve["tries_run"] == 2 and curve["extra_cpu_us"] == {"100%": 50.0}
    found = curve["within_run"]["100%"]
    assert found["n"] == 2 and found["hits"] >= 1, found["judgements"]
    assert found["measured_ratio_median"] > 1.5, found["judgements"]  # the knob spends what it says
    assert curve["within_run_aa"]["n"] == 1 and curve["between_runs"]["100%"]["n"] == 1
    assert curve["between_runs_aa"]["n"] == 1
    assert done.returncode == (0 if doc["passed"] else 1)
    md = (tmp_path / "check" / "selfcheck.md").read_text(encoding="utf-8")
    assert "| +100% (50 µs) |" in md and "A/A (none)" in md
    for i in (1, 2):  # ordinary runs: each copy a server of its own, with its knob on record
        run = tmp_path / "check" / f"power-{i}"
        settings = json.loads((run / "settings.json").read_text(encoding="utf-8"))
        assert settings["variants"]["asyncio-plus100pct"]["server_env"] == {"LAB_EXTRA_CPU_US": "50.000"}
