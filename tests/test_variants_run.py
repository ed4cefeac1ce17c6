"""`make load VARIANTS=...` for real: two variants of asyncio (a knob; its code from another checkout) run as
servers of their own beside asyncio, and a compare with a run without them still works. Real PostgreSQL,
servers and Locust; about 40 s on the 2-core lab machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
DEFAULT_POOL = "    pool_size: int = 10  #"  # servers/settings.py; the other checkout's copy says 7
CHANGED_POOL = "    pool_size: int = 7  #"


def load(database_url: str, reports: Path, run_id: str, *args: str) -> str:
    """A tiny `python -m lab load` of asyncio on /json (2 x 1 s): its output; fails the test on an error."""
    env = {k: v for k, v in os.environ.items() if k not in {"LAB_VARIANTS", "SERVERS", "SCENARIOS"}}
    cmd = [sys.executable, "-m", "lab", "load", "--servers", "asyncio", "--scenarios", "json", "--reps", "2",
           "--duration", "1", "--warmup", "0.5", "--full-core-seconds", "0", "--speed-probe", "no",
           "--calibrate", "skip", "--reports-dir", str(reports), "--run-id", run_id, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=240, check=False,
                          env={**env, "LAB_DATABASE_URL": database_url})
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"exit {done.returncode}:\n{out[-4000:]}"
    return out


@pytest.fixture(scope="module")
def other_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A worktree of HEAD whose servers differ from this checkout's in one visible way: the default pool
    size (a copy of servers/ where this is no git checkout)."""
    where = tmp_path_factory.mktemp("other") / "lab-head"
    git = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), "HEAD"],
                         capture_output=True, text=True, timeout=60, check=False)
    if git.returncode != 0:
        shutil.copytree(REPO / "servers", where / "servers")
    settings = where / "servers" / "settings.py"
    text = settings.read_text(encoding="utf-8")
    assert DEFAULT_POOL in text, "servers/settings.py's default pool size moved: update this test"
    settings.write_text(text.replace(DEFAULT_POOL, CHANGED_POOL), encoding="utf-8")
    yield where
    if git.returncode == 0:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(where)],
                       capture_output=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def runs(database_url: str, other_checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    reports = tmp_path_factory.mktemp("reports")
    out = load(database_url, reports, "with", "--variants",
               f"asyncio-pool3=asyncio:LAB_POOL_SIZE=3; asyncio-new=asyncio@{other_checkout}")
    load(database_url, reports, "without")
    data = json.loads((reports / "with" / "results.json").read_text(encoding="utf-8"))
    return {"reports": reports, "out": out, "data": data}


def test_each_variant_ran_as_a_server_of_its_own(runs: dict[str, Any]) -> None:
    data = runs["data"]
    assert data["problems"] == [], data["problems"]
    configs = {e["server"]: e["server_config"] for e in data["results"]}
    assert set(configs) == {"asyncio", "asyncio-pool3", "asyncio-new"}
    assert {s: c["model"] for s, c in configs.items()} == dict.fromkeys(configs, "asyncio")
    assert configs["asyncio"]["pool_size"] == 10 and configs["asyncio-pool3"]["pool_size"] == 3
    assert all(len(e["repetitions"]) == 2 for e in data["results"])
    recorded = data["run"]["settings"]["variants"]
    assert recorded["asyncio-pool3"] == {"model": "asyncio", "server_env": {"LAB_POOL_SIZE": "3"}}
    assert "asyncio-pool3/json rep 2/2" in runs["out"]  # the terminal names the variant, not its model


def test_a_variant_runs_the_code_of_its_checkout(runs: dict[str, Any], other_checkout: Path) -> None:
    new = next(e for e in runs["data"]["results"] if e["server"] == "asyncio-new")
    assert new["server_config"]["pool_size"] == 7  # only the other checkout's servers default to 7
    log = runs["reports"] / "with" / "asyncio-new" / "json" / "asyncio-new-1.log"
    assert log.read_text(encoding="utf-8").startswith(f"$ cd {other_checkout} && ")
    rec = runs["data"]["run"]["settings"]["variants"]["asyncio-new"]
    assert rec["dir"] == str(other_checkout)
    if (other_checkout / ".git").exists():
        assert rec["commit"] and rec["uncommitted"] is True  # the changed default is not committed


def test_the_plan_the_summary_and_the_page_say_what_each_variant_is(runs: dict[str, Any],
                                                                    other_checkout: Path) -> None:
    pool3 = "asyncio-pool3: asyncio with LAB_POOL_SIZE=3"
    new = f"asyncio-new: asyncio from {other_checkout}"
    assert f"variant {pool3}" in runs["out"] and f"variant {new}" in runs["out"]
    summary = (runs["reports"] / "with" / "summary.md").read_text(encoding="utf-8")
    page = (runs["reports"] / "with" / "index.html").read_text(encoding="utf-8")
    for text in (summary, page):
        assert f"Variant {pool3}" in text and f"Variant {new}" in text
    assert "--variants" in runs["data"]["run"]["command"]


def test_compare_with_a_run_without_variants(runs: dict[str, Any]) -> None:
    reports = runs["reports"]
    cmd = [sys.executable, "-m", "lab", "compare", str(reports / "with"), str(reports / "without")]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "only in A: asyncio-pool3/json" in done.stdout and "only in A: asyncio-new/json" in done.stdout
    assert "asyncio/json: " in done.stdout  # the server both runs have is compared as ever
    md = (reports / "compare-with-vs-without" / "compare.md").read_text(encoding="utf-8")
    assert "- only in A: asyncio-pool3/json" in md and "| variants.asyncio-pool3.model | asyncio | - |" in md
