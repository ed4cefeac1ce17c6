"""make claims: every experiment at a tiny size, through the whole command, checked for shape and
sanity (never exact timings: the CPU is shared); plus the verdict rules, the lab-only /block
endpoint, a ramp stopped by a server's limit, and comparing two claims runs."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lab.claims import connections, gil, plan, switch, verdict, worker
from lab.report import run_report
from lab.stack import procs
from tests.conftest import REPO, ServerFactory

pytestmark = pytest.mark.e2e  # the whole command at tiny size, real servers and processes


@pytest.fixture(scope="module")
def tiny_run(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """`python -m lab claims --size tiny` once, into a temporary folder."""
    out = tmp_path_factory.mktemp("claims") / "claims-tiny"
    env = {**os.environ, "LAB_DATABASE_URL": database_url}
    done = subprocess.run([sys.executable, "-m", "lab", "claims", "--size", "tiny", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, json.loads((out / "claims.json").read_text())


def test_whole_command_writes_three_files(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    out, data = tiny_run
    html = (out / "claims.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html
    assert "http://" not in html.split("<main>")[0]  # no CDN: styles and charts are inline
    assert "<svg" in html and 'data-plot="switch"' in html and 'data-plot="ramp-rss"' in html
    md = (out / "claims.md").read_text()
    assert "| Folk claim | Measured here | Verdict | Method |" in md
    assert set(data["experiments"]) == set(plan.EXPERIMENTS) and data["ok"], data["problems"]
    assert data["idle"]["asked"] == "auto" and ("idle CPUs polled" if data["idle"]["polling"]
                                                 else "idle CPUs halted") in md  # as make load measures
    ids = {c["id"] for c in data["claims"]}
    assert {"thread-switch", "greenlet-switch", "thread-memory", "greenlet-memory", "threaded-connections",
            "gevent-connections", "asyncio-connections", "gil-threads", "processes-scale",
            "asyncio-blocking", "gevent-blocking", "threaded-blocking", "guarantee-cost"} <= ids
    for c in data["claims"]:
        assert c["folk"] and c["figure"] and c["method"] and c["verdict"], c
        assert c["verdict_kind"] in {"holds", "off", "refuted", "inconclusive"}, c
        assert c["figure"] in md and c["figure"] in html.replace("&#x27;", "'")


def test_switch_costs_are_sane(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    variants = tiny_run[1]["experiments"]["switch"]["variants"]
    assert set(variants) == set(switch.VARIANTS)
    for name, v in variants.items():
        assert v["error"] is None, v
        assert len(v["reps_us"]) == 2
        assert 0 < v["us"]["lo"] <= v["us"]["median"] <= v["us"]["hi"] < 1000, name  # above 0, below 1 ms


def test_memory_shows_reserved_stack_beside_rss(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    mem = tiny_run[1]["experiments"]["memory"]
    rows = {(r["kind"], r["n"]): r for r in mem["rows"]}
    assert {k for k, _ in rows} == {"thread", "thread-512k", "greenlet", "asyncio-task"}
    thread = rows[("thread", 300)]
    # The virtual size per thread is about the reserved stack; the touched memory is far smaller.
    assert thread["virt"]["median"] > 0.5 * mem["stack_limit_bytes"]
    assert 0 < thread["rss"]["median"] < 1024 * 1024
    small = rows[("thread-512k", 100)]
    assert small["thread_stack_bytes"] == 512 * 1024 and small["virt"]["median"] < thread["virt"]["median"]
    assert 0 <= rows[("greenlet", 300)]["rss"]["median"] < 1024 * 1024


def test_connection_ramp_measures_every_step(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    conn = tiny_run[1]["experiments"]["connections"]
    assert [s["server"] for s in conn["servers"]] == list(plan.SERVERS)
    for s in conn["servers"]:
        assert s["completed"] and s["held"] == 100 and s["stopped_by"].startswith("nothing"), s
        for step in s["steps"]:
            assert step["ok"] and step["held"] == step["target"]
            assert step["fds"] >= step["held"] and step["rss_per_conn"] > 0
            assert 0 < step["probe"]["p99_ms"] < 1000
        if s["server"] == "threaded":  # one thread per connection
            assert s["steps"][-1]["threads"] >= 100


def test_gil_figures(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    g = tiny_run[1]["experiments"]["gil"]
    assert all(v["median"] > 0 for v in g["served"]["rps"].values())
    loops = g["loops"]
    assert set(loops["speedup"]) == {f"{m}-{k}" for m in ("threads", "processes") for k in (1, 2, 4)}
    assert loops["speedup"]["threads-1"]["median"] == 1.0
    assert all(loops["gil"].values())  # this interpreter has the GIL
    # Under the GIL the threads never keep two cores busy (CPU time over wall time).
    assert loops["cores_used"]["threads-4"]["median"] < 1.5
    assert g["free_threaded"] is None or "GIL disabled" in g["free_threaded_note"]


def test_blocking_call_freezes_the_event_loop(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    b = tiny_run[1]["experiments"]["blocking"]
    assert set(b["servers"]) == {"asyncio", "gevent", "threaded"}
    for row in b["servers"].values():
        assert row["without"]["errors"] == 0 and row["with"]["errors"] == 0
        assert row["without"]["p99_ms"]["median"] > 0
    # Other clients wait for the blocking call on one loop (latency only grows under noise).
    for model in ("asyncio", "gevent"):
        assert b["servers"][model]["with"]["p99_ms"]["median"] >= b["block_ms"] / 2


def test_guarantee_costs_are_measured(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    g = tiny_run[1]["experiments"]["guarantees"]
    assert set(g["servers"]) == {"threaded", "gevent", "asyncio"}
    for figures in g["servers"].values():
        assert set(figures["cpu_us"]) == {"all on", "-deadline,cap,cancel"}  # tiny: the three together only
        assert all(len(v) == 2 and min(v) > 0 for v in figures["samples"].values())
        cost = figures["costs"]["-deadline,cap,cancel"]
        assert cost["low"] <= cost["us"] <= cost["high"] and set(figures["non2xx"].values()) == {0}


def test_verdict_rules() -> None:
    assert verdict.against_range(7, 5, 10)[0] == "holds"
    kind, text, factor = verdict.against_range(20, 5, 10)
    assert kind == "off" and factor == 2 and "higher" in text
    assert verdict.against_range(1, 5, 10)[1] == "off by 5× (lower)"
    assert verdict.against_range(50, 100, float("inf"), lower_bound=True)[0] == "inconclusive"
    assert verdict.against_range(150, 100, float("inf"), lower_bound=True)[1] == "holds (at least)"
    assert verdict.against_range(20_000, 100, 9_999, lower_bound=True)[1] == "off by ≥ 2× (higher)"
    assert verdict.yes_no(False, "why")[1] == "refuted: why"


def test_ramp_names_the_servers_connection_limit(database_url: str, tmp_path: Path) -> None:
    p = replace(plan.PRESETS["tiny"], steps=(20, 60), server_max_connections=30, probe_requests=5)
    out = connections.ramp("asyncio", 5, p, database_url, tmp_path, 10_000, "fd limit", lambda _: None)
    assert out["held"] == 20 and not out["completed"]
    assert out["stopped_by"].startswith("max_connections setting"), out["stopped_by"]
    assert [s["ok"] for s in out["steps"]] == [True, False]


def _get(proc: procs.ServerProcess, target: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(proc.host, proc.port, timeout=10)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_block_endpoint_is_off_by_default(server_factory: ServerFactory) -> None:
    off = server_factory("gevent")
    status, body = _get(off, "/block?ms=1")
    assert status == 404 and b"LAB_ALLOW_BLOCKING=1" in body
    on = server_factory("gevent", env={"LAB_ALLOW_BLOCKING": "1"})
    assert _get(on, "/block?ms=5") == (200, b'{"blocked_ms":5}')
    status, body = _get(on, "/block?ms=-1")
    assert status == 400 and json.loads(body)["error"] == "bad_request"


def test_free_threaded_python_is_detected_never_faked() -> None:
    path, note = gil.find_free_threaded(sys.executable)  # this one has the GIL
    assert path is None and "GIL enabled" in note and "LAB_FT_PYTHON" in note
    path, note = gil.find_free_threaded("/nonexistent/python3.13t")
    assert path is None and "LAB_FT_PYTHON" in note
    out = worker.run("lab.claims.cpuloop", ["threads", "2", "1", "1000"], timeout=60, script=True)
    assert out["gil"] is True and out["workers"] == 2 and out["units_per_second"] > 0


def test_bad_knob_says_what_to_do(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "lab", "claims", "--only", "switch,nope", "--out", str(tmp_path)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "LAB_CLAIMS_ONLY" in done.stderr and "switch, memory" in done.stderr


def test_compare_two_claims_runs_and_link_from_the_main_report(
    tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = tmp_path / "claims-20260101-000000"
    b = tmp_path / "claims-20260102-000000"
    shutil.copytree(tiny_run[0], a)
    shutil.copytree(tiny_run[0], b)
    done = subprocess.run([sys.executable, "-m", "lab", "compare", str(a), str(b)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    md = (tmp_path / f"compare-{a.name}-vs-{b.name}" / "compare.md").read_text()
    assert a.name in md and b.name in md and "1.00×" in md
    monkeypatch.setenv("LAB_REPORTS_DIR", str(tmp_path))
    link = run_report.claims_link(tmp_path / "load-run")
    assert f'href="../{b.name}/claims.html"' in link
    monkeypatch.setenv("LAB_REPORTS_DIR", str(tmp_path / "empty"))
    assert run_report.claims_link(tmp_path / "load-run") == ""


def test_rebuild_rejudges_a_recorded_run(tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    run = tmp_path / "claims-copy"
    shutil.copytree(tiny_run[0], run)
    (run / "claims.html").unlink()
    done = subprocess.run([sys.executable, "-m", "lab", "claims", "--rebuild", str(run)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "claims.json").read_text())["claims"] == tiny_run[1]["claims"]
    assert (run / "claims.html").read_text().startswith("<!DOCTYPE html>")
    missing = subprocess.run([sys.executable, "-m", "lab", "claims", "--rebuild", str(tmp_path / "nope")],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
