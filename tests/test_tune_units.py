"""lab/tune without load: bad input, the run order, the connection check, combining runs, the pages."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from lab.results.schema import Entry
from lab.tune import budget as budgets
from lab.tune import cli, pages, plan, points
from lab.tune.budget import Budget

pytestmark = pytest.mark.unit

KNOBS = ("SERVER", "SERVERS", "PARAM", "VALUES", "SCENARIO", "SLO_P99_MS", "REPS", "DURATION", "WARMUP",
         "USERS", "TUNE_ID", "FORCE", "CALIBRATE", "LAB_REPORTS_DIR", "LAB_WORKERS", "LAB_POOL_SIZE")


@pytest.fixture(autouse=True)
def no_knobs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KNOBS:
        monkeypatch.delenv(name, raising=False)


def sweep_of(*argv: str) -> plan.Sweep:
    return plan.sweep_from(cli.build_parser().parse_args([*argv, "--database-url", "postgresql://x@127.0.0.1/y"]))


@pytest.mark.parametrize(("args", "message"), [
    (["--param", "threads"], "PARAM='threads' is unknown; choose from pool_size"),
    (["--values", "0,4"], "pool_size=0 is not valid for the asyncio server: LAB_POOL_SIZE / --pool-size "
                          "must be from 1 to 1000"),
    (["--values", "2,x"], "VALUES: 'x' is not a number"),
    (["--values", "1.5"], "pool_size takes whole numbers"),
    (["--param", "workers"], "PARAM=workers changes only the multiproc server"),
    (["--server", "nginx"], "SERVER: unknown nginx"),
    (["--scenario", "db,hold"], "a sweep runs one scenario"),
    (["--slo-p99-ms", "-5"], "SLO_P99_MS must be from"),
    (["--param", "acquire_timeout", "--values", "0.5,900"],
     "LAB_ACQUIRE_TIMEOUT / --acquire-timeout must be"),
])
def test_bad_input_is_refused_clearly(args: list[str], message: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*args, "--reports-dir", str(tmp_path), "--plan"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lab tune: ") and message in err, err
    assert not any(tmp_path.iterdir())


def test_rounds_run_every_value_once_and_every_other_round_backwards() -> None:
    sweep = sweep_of("--values", "8,2,4", "--reps", "3")
    assert sweep.values == [2, 4, 8]
    assert sweep.schedule() == [(1, 2), (1, 4), (1, 8), (2, 8), (2, 4), (2, 2), (3, 2), (3, 4), (3, 8)]
    run = sweep.run_settings(4, 2)
    assert run.run_id == "pool_size-4-r2" and run.reps == 1 and run.server_env["LAB_POOL_SIZE"] == "4"
    assert run.reports_dir == sweep.tune_dir and sweep.base.reps == 1


def test_connections_beyond_the_limit_are_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAB_DATABASE_URL", raising=False)
    sweep = sweep_of("--server", "asyncio", "--values", "10,200")
    shown, refusal = budgets.check_connections(sweep, Budget(max_connections=100, reserved=3, others=5))
    assert shown[0] == ("database connections: max_connections 100, 3 reserved for superusers; "
                        "5 client sessions open now, 2 for the lab during the sweep")
    assert shown[1].startswith("  OK   pool_size=10 implies 10 database connections")
    assert shown[2].startswith("  OVER pool_size=200 implies 200 database connections")
    assert refusal[0] == ("pool_size=200 would need up to 207 database connections, more than PostgreSQL "
                          "allows (97).")
    assert refusal[1] == "Lower VALUES (pool_size up to 90 fits now), or"
    assert "LAB_PG_MAX_CONNECTIONS=253" in refusal[2]  # 207 x 1.2, rounded up to 50, + 3 reserved
    assert refusal[-1].startswith("pass --force")
    assert budgets.check_connections(sweep_of("--values", "10"), Budget(max_connections=100))[1] == []


def entry(rps: list[float], p99: float, failures: int = 0) -> Entry:
    med = sorted(rps)[len(rps) // 2]
    return {"server": "asyncio", "scenario": "hold", "reps": 1, "status": "ok", "problems": [],
            "ok_rps": {"median": med}, "rps": {"median": med}, "requests": 1000, "failures": failures,
            "latency_ms": {"p50": p99 / 2, "p99": p99}, "failure_rate": failures / 1000,
            "db_connections_peak": 4, "pool": {"in_use_peak": 4},
            "cpu_percent": {"mean": 50.0}, "server_config": {"pool_size": 4}}


def test_combining_runs_takes_medians_spreads_sums_and_peaks() -> None:
    one, two = entry([100.0], 10.0), entry([120.0], 30.0, failures=10)
    two["db_connections_peak"] = 6
    combined = points.combine([one, two])
    assert combined is not None
    assert combined["ok_rps"] == {"median": 110.0, "spread": round(20 / 110, 4), "values": [100.0, 120.0]}
    assert combined["requests"] == 2000 and combined["failures"] == 10 and combined["failure_rate"] == 0.005
    assert combined["db_connections_peak"] == 6 and combined["reps"] == 2
    assert points.combine([one]) is one and points.combine([]) is None
    figures = points.point_figures(4, combined, plan.PARAMS["pool_size"])
    assert figures["ok"] and figures["ok_rps"] == 110.0 and figures["extra"]["applied"] == 4
    wrong = points.point_figures(8, combined, plan.PARAMS["pool_size"])  # the server ran another value
    assert not wrong["ok"] and "reported pool_size=4, not the swept 8" in wrong["problems"][-1]


def test_pages_render_a_document_without_measuring(tmp_path: Path) -> None:
    pool_size = plan.PARAMS["pool_size"]
    measured = [{"value": v, "runs": [{"dir": f"pool_size-{v}-r1", "loadavg": 0.5}],
                 "figures": {"asyncio": points.point_figures(v, entry([50.0 * v], 20.0 / v), pool_size)}}
                for v in (2, 4)]
    doc: dict[str, Any] = {
        "id": "t", "param": "pool_size", "env_var": "LAB_POOL_SIZE", "values": [2, 4], "servers": ["asyncio"],
        "scenario": "hold", "users": 20, "reps": 1, "duration": 2.0, "slo_p99_ms": 100, "status": "complete",
        "points": measured, "connections": None, "command": "make tune", "problems": []}
    for p in doc["points"]:
        p["figures"]["asyncio"]["extra"]["applied"] = p["value"]
    points.decide(doc)
    assert doc["recommendations"]["asyncio"]["value"] == 4
    md, html = pages.render_md(doc), pages.render_html(doc, tmp_path)
    assert "| 4 | 200 |" in md and "RECOMMENDED" in md
    assert html.count('<circle class="dot"') == 5 * 2 and "by lab/tune/pages.py" in html
    assert pages.rule(doc).startswith("Rule: among values that failed at most 1% of requests")
    assert "LAB_MARGIN_WITHIN" in pages.rule(doc)
    assert f"on {os.cpu_count()} CPUs" in (pages.load_note(doc) or "")
