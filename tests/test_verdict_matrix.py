"""The verdict matrix (lab.results.matrix, lab.report.verdict_matrix) on the recorded runs in
tests/data/reports and on made-up entries: the cells' states, their texts, results.json's `verdicts`, and
index.html / summary.md opening with the matrix. Files only: no database, no servers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from lab.report import run_report
from lab.results import matrix, schema, stats

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data" / "reports"


def entry(server: str, cost: list[float], rps: list[float], **extra: Any) -> dict[str, Any]:
    reps = [{"rps": r, "ok_rps": r, "cost": {"cpu_us_per_request": c}, "latency_ms": {"p99": 10.0}}
            for c, r in zip(cost, rps, strict=True)]
    return {"server": server, "scenario": "s", "problems": [], "rps": {"median": sorted(rps)[len(rps) // 2]},
            "ok_rps": {"median": sorted(rps)[len(rps) // 2]}, "latency_ms": {"p99": 10.0, "count": 50},
            "cost": {"cpu_us_per_request": {"median": sorted(cost)[len(cost) // 2]}}, "repetitions": reps,
            **extra}


def test_a_winner_a_tie_and_what_could_not_be_judged() -> None:
    a = entry("asyncio", [100.0, 101.0, 99.0, 100.5], [1000.0, 1010.0, 990.0, 1005.0])
    b = entry("threaded", [80.0, 81.0, 79.0, 80.5], [1001.0, 1012.0, 988.0, 1003.0])
    cells = matrix.scenario_cells([a, b], 0.03)
    cpu = cells["cpu_per_req"]
    assert cpu.state == "winner" and cpu.winner == "threaded" and cpu.runner_up == "asyncio"
    # Round by round the two moved together: the interval is tight.
    assert cpu.text().startswith("threaded 0.80x [0.80-0.80]") and cpu.text().endswith("vs asyncio")
    rps = cells["throughput"]
    assert rps.state == "tie" and rps.figure == "ok_rps"
    assert rps.decision is not None and rps.decision.mde is not None and rps.decision.mde >= 0.03
    assert rps.text() == f"tie (could see {rps.decision.could_see()})"
    assert "needs" in rps.detail() and "repetitions a side" in rps.detail()
    assert cells["p99"].state == "not judged"  # 50 requests a repetition: too few for a p99
    assert cells["rss_per_conn"].state == "not measured"
    # A wider margin turns the same 20 % into a tie that says so.
    assert matrix.scenario_cells([a, b], 0.25)["cpu_per_req"].state == "tie"


def test_generator_bound_throughput_is_not_judged() -> None:
    a = entry("asyncio", [100.0] * 4, [3000.0, 3001.0, 3002.0, 3003.0], generator_bound=True)
    b = entry("threaded", [90.0] * 4, [1000.0, 1001.0, 1002.0, 1003.0])
    assert matrix.scenario_cells([a, b], 0.03)["throughput"].state == "generator-bound"


@pytest.mark.parametrize("run", ["run-a", "run-b"])
def test_results_json_verdicts_fit_the_schema(run: str) -> None:
    data = json.loads((DATA / run / "results.json").read_text(encoding="utf-8"))
    doc = matrix.as_json(data["results"], 0.03)
    assert doc["rule"] == stats.settings(stats.WITHIN, 0.03)
    assert set(doc["scenarios"]) == {e["scenario"] for e in data["results"]}
    from tests.test_schema import keys_fit  # the schema test's own walker over the TypedDicts
    assert keys_fit({"verdicts": doc}, schema.Results) == []
    for row in doc["scenarios"].values():
        assert list(row) == list(matrix.COLUMNS)
        for cell in row.values():
            assert cell["state"] in matrix.STATES
            if cell["state"] == "tie":
                assert cell["text"].startswith("tie")
                assert cell["decision"]["mde"] >= cell["decision"]["margin"]


def test_index_and_summary_open_with_the_matrix(tmp_path: Path) -> None:
    run = tmp_path / "run-a"
    shutil.copytree(DATA / "run-a", run)
    html_path, md_path = run_report.build(run)
    html = html_path.read_text(encoding="utf-8")
    body = html.split("<main>", 1)[1]
    assert body.index('<table class="matrix">') < body.index('<nav class="card toc">') \
        < body.index('id="in-words"')
    cells = matrix.matrix(json.loads((run / "results.json").read_text(encoding="utf-8"))["results"], 0.03)
    assert cells["writes"]["throughput"].state == "winner" and cells["db"]["throughput"].state == "tie"
    assert 'data-column="throughput" data-state="winner"' in html
    assert "could see ±" in html and "LAB_MARGIN_WITHIN" in html
    md = md_path.read_text(encoding="utf-8")
    verdicts = md.split("## Verdicts", 1)[1]
    assert verdicts.lstrip().startswith("| scenario | CPU per request | throughput or capacity | p99 latency")
    assert f"| db | {cells['db']['cpu_per_req'].text()} | {cells['db']['throughput'].text()} |" in md
    # The margin is a knob of the report too: at 90 %, threaded's 0.54x CPU per request is a tie.
    assert 'data-column="cpu_per_req" data-state="winner"' in html
    html_path, _ = run_report.build(run, margin=0.9)
    assert 'data-column="cpu_per_req" data-state="winner"' not in html_path.read_text(encoding="utf-8")


def test_build_records_the_matrix_and_its_margin(tmp_path: Path) -> None:
    """results.json built from raw files holds `verdicts`, judged with the run's recorded margin, unless a
    margin is given (python -m lab results --margin-within)."""
    from lab.results import build

    run = tmp_path / "basic"
    shutil.copytree(Path(__file__).parent / "data" / "basic", run)
    data = build.build(run)
    assert data["verdicts"]["rule"]["margin"] == stats.margin(stats.WITHIN)
    assert set(data["verdicts"]["scenarios"]) == set(data["scenarios"])
    settings = json.loads((run / "settings.json").read_text(encoding="utf-8"))
    (run / "settings.json").write_text(json.dumps({**settings, "margin_within": 0.07}), encoding="utf-8")
    assert build.build(run)["verdicts"]["rule"]["margin"] == 0.07
    assert build.build(run, 0.01)["verdicts"]["rule"]["margin"] == 0.01


def test_cpu_per_request_is_judged_at_the_runs_reference_speed() -> None:
    """A machine that wanders from one repetition to the next, even between two servers' turns in a round
    (a repetition on a slow moment costs more CPU per request, and the speed probe beside it reads less
    work per CPU-ms), blurs the raw figures; at the run's reference speed the same repetitions show
    threaded 10 % cheaper. Without a reading in every repetition the raw figures are judged, never a mix."""
    speeds = {"asyncio": [1.0, 0.8, 1.2, 0.9], "threaded": [0.85, 1.15, 0.95, 1.1]}  # the probe's readings
    def reps(true_us: float, server: str) -> list[float]:
        return [true_us / s for s in speeds[server]]  # what a repetition measured on that moment
    a = entry("asyncio", reps(100.0, "asyncio"), [1000.0] * 4)
    b = entry("threaded", reps(90.0, "threaded"), [1000.0] * 4)
    assert matrix.scenario_cells([a, b], 0.03)["cpu_per_req"].state == "tie"  # the raw figures: a blur
    for e in (a, b):
        for r, s in zip(e["repetitions"], speeds[e["server"]], strict=True):
            cost = r["cost"]
            cost["cpu_us_per_request_speed_adjusted"] = cost["cpu_us_per_request"] * s * (1 + 0.005 * s)
    cell = matrix.scenario_cells([a, b], 0.03)["cpu_per_req"]
    assert cell.state == "winner" and cell.winner == "threaded" and cell.decision is not None
    assert cell.decision.ratio == pytest.approx(0.90, abs=0.01)
    del b["repetitions"][2]["cost"]["cpu_us_per_request_speed_adjusted"]
    assert matrix.scenario_cells([a, b], 0.03)["cpu_per_req"].state == "tie"


def test_a_speed_reading_far_from_the_runs_reference_is_not_used() -> None:
    """A probe that read 0.55x of the reference in one repetition (its own bad moment, not the machine's:
    the server's CPU per request matched its neighbours') sends the test back to the raw figures."""
    a = entry("asyncio", [100.0, 101.0, 99.0, 100.5], [1000.0] * 4)
    b = entry("threaded", [80.0, 81.0, 79.0, 80.5], [1000.0] * 4)
    for e in (a, b):
        for r in e["repetitions"]:
            r["cost"]["cpu_us_per_request_speed_adjusted"] = r["cost"]["cpu_us_per_request"]
    b["repetitions"][0]["cost"]["cpu_us_per_request_speed_adjusted"] = 80.0 * 0.55
    cell = matrix.scenario_cells([a, b], 0.03)["cpu_per_req"]
    assert cell.state == "winner" and cell.decision is not None
    assert cell.decision.ratio == pytest.approx(0.80, abs=0.01)  # the raw figures, not the 0.55x reading
