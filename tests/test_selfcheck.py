"""`make selfcheck` at smoke size, for real: the A/A pair must compare as no change and the A/B pair
(hold, pool 2 against 10) must be marked. Real servers, PostgreSQL and Locust; about two minutes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def selfcheck(database_url: str, folder: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], str,
                                                                      dict[str, Any]]:
    """`python -m lab selfcheck` at smoke size into folder/check: (process, its output, selfcheck.json)."""
    env = {**os.environ, "LAB_DATABASE_URL": database_url}
    cmd = [sys.executable, "-m", "lab", "selfcheck", *args, "--servers", "asyncio", "--duration", "1",
           "--warmup", "1", "--reports-dir", str(folder), "--run-id", "check"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=540, check=False)
    doc = json.loads((folder / "check" / "selfcheck.json").read_text(encoding="utf-8"))
    return done, done.stdout + done.stderr, doc


def test_a_a_is_silent_and_a_b_is_found(database_url: str, tmp_path: Path) -> None:
    done, out, doc = selfcheck(database_url, tmp_path, "--scenarios", "json", "--reps", "6")
    aa, ab = doc["checks"]
    assert aa["check"] == "A/A" and aa["marked"] == [], out[-4000:]
    assert aa["figures"] > 10 and aa["entries"] == 1
    assert ab["check"] == "A/B" and ab["detected"], out[-4000:]
    assert done.returncode == 0 and doc["passed"], out[-4000:]
    assert (tmp_path / "check" / "compare-aa-1-vs-aa-2" / "compare.html").is_file()
    assert "A/A: pass" in out and "A/B: pass" in out


def test_load_vs_bench_pairs_every_figure(database_url: str, tmp_path: Path) -> None:
    # Only the wiring, at smoke size: whether the two agree is a figure of the machine, not a test.
    done, out, doc = selfcheck(database_url, tmp_path, "--skip-aa", "--skip-ab", "--load-vs-bench", "2")
    (lvb,) = doc["checks"]
    assert lvb["check"] == "load vs bench" and lvb["problems"] == [], out[-4000:]
    assert set(lvb["ratios"]) == {"asyncio /json", "asyncio /db"}, out[-4000:]
    assert all(len(r) == 2 and all(0.1 < x < 10 for x in r) for r in lvb["ratios"].values()), lvb
    assert done.returncode == (0 if lvb["passed"] else 1)
    assert "load vs bench" in out and "asyncio /json: load/bench x" in out
