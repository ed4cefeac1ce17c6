"""lab/bench/bench.py, one real short run: wrk against two real servers over the session PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.bench import fleet
from tests.conftest import debian_tool

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(600)
def test_a_short_real_bench_writes_its_table_and_figures(database_url: str, tmp_path: Path) -> None:
    debian_tool(Path("/usr/bin/wrk"), "wrk")
    out = subprocess.run(
        [sys.executable, "-m", "lab", "bench", "--models", "threaded,asyncio", "--reps", "1",
         "--duration", "1",
         "--no-check"],
        capture_output=True, text=True, timeout=500, cwd=REPO,
        env={**os.environ, "LAB_DATABASE_URL": database_url, "LAB_REPORTS_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    saved = next(line for line in out.stdout.splitlines() if line.startswith("saved "))
    folder = Path(saved.split()[1]).parent
    assert folder.parent == tmp_path
    data = json.loads((folder / "bench.json").read_text())
    for model in ("threaded", "asyncio"):
        figures = data["servers"][model]
        assert figures["json_rps"] > 0 and figures["db_rps"] > 0 and figures["json_cpu_us"] > 0
    assert data["bare_db_rps"] > 0 and 0.3 < data["asyncio_vs_bare_db"] < 3
    # Metrics cost for each server, each server against its floor and its peers (threaded has two) on the
    # four endpoints, and the non-2xx count of each server (judged: the default -c64).
    assert len(data["verdicts"]) == 2 + (1 + 2) * 4 + (1 + 1) * 4 + 2
    texts = [v["text"] for v in data["verdicts"]]
    judged = [t for t in texts if t.startswith(("threaded /", "asyncio /")) and "'s throughput per CPU" in t]
    assert len(judged) == 20
    assert {p["reference"] for p in data["pairs"] if p["kind"] == "peer"} == {
        "peer wsgiref threads", "peer cheroot (thread pool)", "peer aiohttp+asyncpg"}
    assert data["errors"] == {key: 0 for key in data["errors"]}
    assert "| threaded |" in (folder / "bench.md").read_text()


@pytest.mark.timeout(600)
def test_ablation_prices_each_guarantee_beside_floor_and_peer(database_url: str, tmp_path: Path) -> None:
    # Two guarantees switched off in turn, between all on and all off: the whole command for real. That
    # every guarantee is in the default plan and table is test_bench_ablation's; that each one can be
    # switched off and the server still serves the contract, test_bench_peers'.
    debian_tool(Path("/usr/bin/wrk"), "wrk")
    out = subprocess.run(
        [sys.executable, "-m", "lab", "bench", "--ablation", "--models", "asyncio", "--reps", "2",
         "--duration", "1", "--guarantees", "cancel,deadline"],
        capture_output=True, text=True, timeout=500, cwd=REPO,
        env={**os.environ, "LAB_DATABASE_URL": database_url, "LAB_REPORTS_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    saved = next(line for line in out.stdout.splitlines() if line.startswith("saved "))
    folder = Path(saved.split()[1]).parent
    data = json.loads((folder / "bench.json").read_text())["ablation"]
    assert list(data["guarantees"]) == ["deadline", "cancel"]
    for path in ("/json", "/db"):
        figures = data["servers"]["asyncio"][path]
        configs = {"all on", *(f"-{g}" for g in data["guarantees"]), "all off"}
        assert set(figures["cpu_us"]) == configs | {"floor", "peer aiohttp+asyncpg"}
        assert all(v > 0 for v in figures["cpu_us"].values())
        assert all(len(v) == 2 for v in figures["samples"].values())
        cost = figures["costs"]["-deadline"]
        assert cost["low"] <= cost["us"] <= cost["high"]
        assert set(figures["non2xx"].values()) == {0}
    page = (folder / "bench.md").read_text()
    assert "## What each guarantee costs (ablation)" in page
    assert "| receive deadline and keep-alive sweeper |" in page and "| cancellation on disconnect |" in page


@pytest.fixture(scope="module")
def pinned_bench(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One short bench of multiproc on /json, two repetitions, its servers pinned to CPU 0: (its folder,
    its output). The two tests below read it; each used to start a bench of its own."""
    debian_tool(Path("/usr/bin/wrk"), "wrk")
    reports = tmp_path_factory.mktemp("pinned-bench")
    out = subprocess.run(
        [sys.executable, "-m", "lab", "bench", "--models", "multiproc", "--endpoints", "json", "--reps", "2",
         "--duration", "1", "--peers", "no", "--server-cpus", "0", "--no-check"],  # peers start the same way
        capture_output=True, text=True, timeout=250, cwd=REPO,
        env={**os.environ, "LAB_DATABASE_URL": database_url, "LAB_REPORTS_DIR": str(reports)})
    assert out.returncode == 0, out.stderr[-3000:]
    return next(reports.glob("bench-*")), out.stdout


@pytest.mark.timeout(300)
def test_every_repetition_measures_fresh_processes(pinned_bench: tuple[Path, str]) -> None:
    folder, stdout = pinned_bench
    data = json.loads((folder / "bench.json").read_text())
    figures = [data["servers"]["multiproc"]["endpoints"]["/json"],
               data["references"][fleet.reference_of("multiproc")]["endpoints"]["/json"]]
    for fig in figures:
        first, second = (s["pid"] for s in fig["samples"])
        assert first != second, fig
    assert stdout.count("starting 1 servers and their references") == 2


@pytest.mark.timeout(300)
def test_servers_are_sized_for_the_server_cpus_as_make_load_sizes_them(
        pinned_bench: tuple[Path, str]) -> None:
    """multiproc starts one worker per CPU it may use: pinned to one CPU after starting with two, it
    ran two workers under make bench and one under make load, and the two commands measured different
    servers (bench's multiproc read about 10 % dearer per request)."""
    folder, _ = pinned_bench
    for rep in (1, 2):  # every fresh start
        log = (folder / "logs" / f"rep-{rep}" / "metrics-on" / "multiproc.log").read_text()
        settings = json.loads(log.split("effective settings ", 1)[1].splitlines()[0])
        assert settings["workers"] == 1, (rep, settings)
