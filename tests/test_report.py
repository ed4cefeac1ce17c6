"""The run report and its verdicts on recorded results (tests/data/reports/, see make_fixtures.py) and on
the recorded raw run tests/data/basic. Every test works on a copy under tmp_path.

run-a: json is generator-bound (asyncio), writes has a clear winner (threaded), db is a tie within the
spread of repetitions with failures for threaded. run-b: gevent/json has a problem.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from lab import fmt
from lab.report import run_plots, run_tables, runs
from lab.report import run_report as report
from lab.results import headline

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]


def copy_run(src: Path, tmp_path: Path) -> Path:
    dest = tmp_path / src.name
    shutil.copytree(src, dest)
    return dest


@pytest.fixture
def run_a(tmp_path: Path) -> Path:
    return copy_run(DATA / "reports" / "run-a", tmp_path)


@pytest.fixture
def run_b(tmp_path: Path) -> Path:
    return copy_run(DATA / "reports" / "run-b", tmp_path)


def load(run: Path) -> dict[str, Any]:
    return json.loads((run / "results.json").read_text(encoding="utf-8"))


def verdicts(run: Path) -> dict[str, headline.Verdict]:
    return {s: headline.verdict(s, es) for s, es in runs.by_scenario(load(run))}


# --- parsing what was written ----------------------------------------------------------------------------


class Tables(HTMLParser):
    """Rows of every <table class="servers"> by the data-scenario of its section, and every svg[data-plot]."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.plots: list[dict[str, str]] = []
        self.marks: dict[str, list[dict[str, str]]] = {}  # plot id -> drawn marks (path/rect/circle attrs)
        self._scenario = ""
        self._in_servers = self._in_body = self._in_cell = False
        self._row: list[str] | None = None
        self._plot = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "section" and "data-scenario" in a:
            self._scenario = a["data-scenario"]
        elif tag == "table" and "servers" in a.get("class", ""):
            self._in_servers = True
            self.tables[self._scenario] = []
        elif tag == "tbody" and self._in_servers:
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._in_cell = True
            self._row.append("")
        elif tag == "span" and self._in_cell and "tag" in a.get("class", "").split():
            assert self._row is not None
            if self._row[-1]:
                self._row[-1] += ", "
        elif tag == "svg" and "data-plot" in a:
            self.plots.append(a)
            self._plot = a["data-plot"]
            self.marks[self._plot] = []
        elif tag in ("path", "rect", "circle") and self._plot and a.get("class") in ("series", "bar", "dot"):
            self.marks[self._plot].append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_servers = self._in_body = False
        elif tag == "tr" and self._row is not None:
            self.tables[self._scenario].append(self._row)
            self._row = None
        elif tag == "td":
            self._in_cell = False
        elif tag == "svg":
            self._plot = ""

    def handle_data(self, data: str) -> None:
        if self._in_cell and self._row is not None:
            self._row[-1] += data


def parse_html(path: Path) -> Tables:
    p = Tables()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def md_tables(path: Path) -> dict[str, list[list[str]]]:
    """The server table under each '## Scenario <name>' heading of summary.md."""
    out: dict[str, list[list[str]]] = {}
    scenario = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            scenario = line[len("## Scenario "):] if line.startswith("## Scenario ") else None
        elif scenario and line.startswith("| ") and not line.startswith("| server |"):
            out.setdefault(scenario, []).append([c.strip() for c in line.strip("|").split(" | ")])
    return out


# --- verdicts on the recorded results -----------------------------------------------------------------------


def test_generator_bound_never_claims_a_throughput_winner(run_a: Path) -> None:
    v = verdicts(run_a)["json"]
    assert v.generator_bound == ["asyncio"]
    assert v.winner is None and v.tie == []
    assert "limited by the load generator, not the server" in v.text.lower()
    assert "no winner on throughput" in v.text
    assert "served" not in v.text and "tie on throughput" not in v.text


def test_clear_winner_in_plain_words(run_a: Path) -> None:
    v = verdicts(run_a)["writes"]
    assert v.winner == "threaded"
    # 844 vs 216 rps: the sentence quotes medians, the confidence the ratio of geometric means.
    assert v.text.startswith("threaded served 3.9x the successful requests/s of asyncio (844 vs 216; "
                             "x4.01 [1.86-8.63], p=0.0055); threaded used two thirds of the memory of "
                             "asyncio")
    assert v.cheapest == "threaded" and "CPU per request: threaded 162 µs < asyncio 304 µs." in v.text
    # asyncio's repetitions have about 430 requests each: too few for a p99 to be judged.
    assert "p99 not compared (fewer than 1,000 successful requests a repetition)" in v.text


def test_a_difference_within_the_spread_is_a_tie(run_a: Path) -> None:
    v = verdicts(run_a)["db"]
    assert v.winner is None and v.tie == ["asyncio", "threaded"]
    # Overlapping repetitions, but round by round asyncio stays 3-6 % ahead: the test does not show the
    # change exceeds the 3 % margin, and the tie says what it could have seen and what 5 % would take.
    assert ("asyncio and threaded tie on successful requests/s (900 vs 862: x1.05 [1.02-1.07], p=0.05; "
            "could see ±6% (80% power, alpha 0.05, margin 3%); 5% needs 5 repetitions a side)" in v.text)


def test_failures_and_problems_are_called_out(run_a: Path, run_b: Path) -> None:
    v = verdicts(run_a)["db"]
    assert v.failing == ["threaded"]
    assert "Failures: threaded failed 0.29% of requests (http_503 ×18, ConnectionResetError ×2)." in v.text
    v = verdicts(run_b)["json"]
    assert v.left_out == ["gevent"]
    assert "Problems, left out of the verdict: gevent (rep 1: the sampler recorded no sample" in v.text


def entry(server: str, rps: list[float], *, p99: float = 10.0, rss: float | list[float] = 50e6,
          bound: bool = False, failures: int = 0, count: int = 10_000,
          cost: list[float] | None = None) -> dict[str, Any]:
    """A minimal results.json entry for the verdict rules: one repetition per rps value."""
    med = statistics.median(rps)
    spread = headline.spread(rps)
    figures = {"median": med, "min": min(rps), "max": max(rps), "spread": spread, "values": rps}
    rsses = rss if isinstance(rss, list) else [rss] * len(rps)
    costs = cost or [100.0] * len(rps)
    return {"server": server, "scenario": "s", "problems": [], "generator_bound": bound,
            "rps": figures, "ok_rps": copy.deepcopy(figures), "failures": failures,
            "failure_rate": failures / count, "failures_by_kind": {"http_503": failures} if failures else {},
            "latency_ms": {"p99": p99, "count": count}, "memory": {"rss_peak_bytes": max(rsses)},
            "cost": {"cpu_us_per_request": {"median": statistics.median(costs), "values": costs}},
            "repetitions": [{"rps": v, "ok_rps": v, "latency_ms": {"p99": p99},
                             "resources": {"rss_peak_bytes": m}, "cost": {"cpu_us_per_request": c}}
                            for v, m, c in zip(rps, rsses, costs, strict=True)]}


def test_a_winner_needs_the_test_and_the_minimum_effect() -> None:
    slow = entry("threaded", [900.0, 1000.0, 1100.0, 950.0])
    # Overlapping repetitions: a tie however large the medians' gap looks.
    tie = headline.verdict("s", [entry("asyncio", [1190.0, 1200.0, 1050.0, 1000.0]), slow])
    assert tie.winner is None and tie.tie == ["asyncio", "threaded"] and "p=0.16; could see ±31%" in tie.text
    # Every repetition apart and 28 % more: a winner, with its confidence.
    win = headline.verdict("s", [entry("asyncio", [1250.0, 1260.0, 1240.0, 1230.0]), slow])
    assert win.winner == "asyncio"
    assert win.text.startswith("asyncio served 28% more successful requests/s than threaded (1,245 vs 975; "
                               "x1.26 [1.1-1.45], p=0.009)")
    # Every repetition apart but only 2 % more: a clear but tiny difference, inside the 3 % margin between
    # servers, is no win; 4 % is.
    small = headline.verdict("s", [entry("asyncio", [1001.0, 1002.0, 1003.0, 1004.0]),
                                   entry("threaded", [981.0, 982.0, 983.0, 984.0])])
    assert small.winner is None and "x1.02 [1.02-1.02], p=1; could see ±4%" in small.text
    four = headline.verdict("s", [entry("asyncio", [1001.0, 1002.0, 1003.0, 1004.0]),
                                  entry("threaded", [961.0, 962.0, 963.0, 964.0])])
    assert four.winner == "asyncio"
    # The margin is a knob: at 5 %, the same 4 % is a tie.
    same = [entry("asyncio", [1001.0, 1002.0, 1003.0, 1004.0]),
            entry("threaded", [961.0, 962.0, 963.0, 964.0])]
    assert headline.verdict("s", same, margin=0.05).winner is None


def test_fewer_than_four_repetitions_call_no_winner() -> None:
    # Three values a side are too few to estimate the noise: the verdict says so instead of guessing.
    v = headline.verdict("s", [entry("asyncio", [2000.0, 2100.0, 2050.0]),
                               entry("threaded", [1000.0, 1010.0, 1020.0])])
    assert v.winner is None
    assert v.text.startswith("asyncio and threaded are not judged on successful requests/s (2,050 vs 1,010: "
                             "not tested (3 repetition(s) on one side; a difference needs 4 a side)); memory "
                             "not judged")


def test_cost_per_request_decides_when_the_generator_was_the_limit() -> None:
    es = [entry("asyncio", [3000.0] * 4, bound=True, cost=[60.0, 61.0, 62.0, 63.0]),
          entry("threaded", [2900.0] * 4, bound=True, cost=[90.0, 91.0, 92.0, 93.0])]
    v = headline.verdict("s", es)
    assert v.winner is None and v.cheapest == "asyncio"
    assert "asyncio spent the least CPU per request, 0.67x of threaded's (x0.672 [0.665-0.679]" in v.text


def test_any_generator_bound_server_blocks_a_throughput_winner() -> None:
    # Even the slower server being generator-bound means the generator, not the servers, set the pace.
    es = [entry("asyncio", [3000.0, 3010.0, 3020.0, 3030.0]),
          entry("threaded", [1000.0, 1001.0, 1002.0, 1003.0], bound=True)]
    v = headline.verdict("s", es)
    assert v.winner is None and "no winner on throughput" in v.text and "served" not in v.text


def test_latency_and_memory_words() -> None:
    a = entry("asyncio", [2100.0, 2110.0, 2120.0, 2130.0], p99=12.0, rss=[15e6, 15.1e6, 15.2e6, 15.3e6])
    b = entry("threaded", [1000.0, 1005.0, 1010.0, 1015.0], p99=12.5, rss=[45e6, 45.1e6, 45.2e6, 45.3e6])
    v = headline.verdict("s", [a, b])
    assert v.text.startswith("asyncio served 2.1x the successful requests/s of threaded (2,115 vs 1,008; "
                             "x2.1 [2.1-2.1], p=1.1e-11); asyncio used a third of the memory of "
                             "threaded (14.6 MiB vs 43.2 MiB peak RSS); p99 within noise (12 ms vs 12.5 ms, "
                             "could see ±30% (80% power, alpha 0.05, margin 30%); 5% is inside the margin).")
    few = headline.verdict("s", [entry("asyncio", [2100.0] * 4, count=50),
                                 entry("threaded", [1000.0] * 4, count=50)])
    assert "p99 not compared (fewer than 1,000 successful requests a repetition)" in few.text


def test_ranking_of_four_servers_marks_ties() -> None:
    es = [entry("threaded", [1000.0, 1010.0, 1020.0, 1030.0]),
          entry("gevent", [3000.0, 3010.0, 3020.0, 3030.0]),
          entry("asyncio", [3050.0, 3060.0, 3070.0, 3080.0]),
          entry("multiproc", [5000.0, 5010.0, 5020.0, 5030.0])]
    v = headline.verdict("s", es)
    assert v.winner == "multiproc"
    # asyncio is above gevent in every repetition, but by under 2 %: not a difference.
    assert ("Order by successful requests/s: multiproc 5,015 > asyncio 3,065 ≈ gevent 3,015 > threaded 1,015."
            in v.text)


def test_an_order_the_rule_could_not_test_claims_no_tie() -> None:
    # One repetition a server: the rule cannot judge, so the order is a plain list, not "≈" (about equal).
    es = [entry("threaded", [1000.0]), entry("asyncio", [2000.0]), entry("gevent", [1990.0])]
    v = headline.verdict("s", es)
    assert "Order by successful requests/s: asyncio 2,000, gevent 1,990, threaded 1,000." in v.text
    assert "≈" not in v.text.split("Order by")[1]


def test_number_words() -> None:
    assert [fmt.fmt_num(v) for v in (2259.7, 45.83, 7.987, 5, 0.0312, None)] == \
        ["2,260", "45.8", "7.99", "5", "0.0312", "-"]
    assert headline.times(1 / 3, "memory") == "a third of the memory"
    assert headline.times(0.51, "memory") == "half the memory"
    assert headline.times(2.01, "memory") == "twice the memory"
    assert headline.times(2.4, "memory") == "2.4x the memory"
    assert fmt.fmt_pct(0.00005) == "<0.01%" and fmt.fmt_pct(0.0058) == "0.58%"
    assert fmt.fmt_bytes(45752320) == "43.6 MiB"


# --- the report files --------------------------------------------------------------------------------------


def test_report_files_tables_agree_and_hold_the_figures(run_a: Path) -> None:
    html_path, md_path = report.build(run_a)
    assert (html_path, md_path) == (run_a / "index.html", run_a / "summary.md")
    html, md = parse_html(html_path).tables, md_tables(md_path)
    assert list(html) == list(md) == ["json", "writes", "db"]
    for scenario, rows in html.items():
        assert rows == md[scenario], scenario
        assert [r[0] for r in rows] == ["asyncio", "threaded"]
        assert len(rows[0]) == len(run_tables.COLUMNS)
    header = [c.header for c in run_tables.COLUMNS]
    writes = dict(zip(header, html["writes"][1], strict=True))  # threaded
    data = load(run_a)
    e = next(x for x in data["results"] if x["server"] == "threaded" and x["scenario"] == "writes")
    assert writes["rps"] == "844" and writes["spread"] == "30%"
    assert writes["CPU µs/req"] == "162" and writes["capacity"] == "-"
    assert writes["p50 ms"] == fmt.fmt_num(e["latency_ms"]["p50"]) == "11.8"
    assert writes["p99 ms"] == "272" and writes["p99.9 ms"] == "601" and writes["max ms"] == "608"
    assert writes["peak RSS"] == "29.1 MiB" and writes["threads"] == fmt.fmt_num(e["threads_peak"])
    assert writes["clients"] == "20" and writes["db conns"] == "10"
    assert html["json"][0][-1] == "generator-bound" and html["writes"][1][-1] == ""
    assert html["db"][1][header.index("failed")] == "0.29%"


def test_every_plot_is_there_and_has_data(run_a: Path) -> None:
    html_path, _ = report.build(run_a)
    parsed = parse_html(html_path)
    expected = {f"{s}/{k}" for s in ("json", "writes", "db") for k in run_plots.PLOT_KINDS}
    ids = [p["data-plot"] for p in parsed.plots]
    assert len(ids) == len(expected) == 30 and set(ids) == expected
    for plot in parsed.plots:
        assert "data-empty" not in plot, plot["data-plot"]
        marks = parsed.marks[plot["data-plot"]]
        assert marks, f"{plot['data-plot']} draws nothing"
        for m in marks:
            assert m.get("d") or m.get("height") or m.get("r"), m
    # Two series (servers) in every over-time chart: the recorded results carry both timelines.
    for kind in ("throughput-time", "latency-time", "rss-time", "connections-time", "db-time", "cpu-time"):
        series = [m for m in parsed.marks[f"writes/{kind}"] if m.get("class") == "series"]
        assert len(series) == 2 and all(re.match(r"^M[\d.]+,[\d.]+", m["d"]) for m in series), kind


def test_html_is_self_contained(run_a: Path) -> None:
    html_path, _ = report.build(run_a)
    text = html_path.read_text(encoding="utf-8")
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", text))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls
    for external in ("<link", " src=", "@import", "url(", "@font-face"):
        assert external not in text, external


def test_settings_machine_calibration_problems_and_how_to_reproduce(run_a: Path, run_b: Path) -> None:
    html_path, md_path = report.build(run_a)
    data = load(run_a)
    html, md = html_path.read_text(encoding="utf-8"), md_path.read_text(encoding="utf-8")
    command = data["run"]["command"]
    assert command.startswith(".venv/bin/python -m lab.runner")
    assert f"<pre>{command}</pre>" in html and f"```sh\n{command}\n```" in md
    for text in (html, md):
        assert "AMD EPYC" in text and "package locust" in text and "23.5 GiB" in text
        assert "4,298 requests/s" in text  # calibration ceiling
        assert "server_cpus" in text and "sample_interval" in text
        assert "python -m lab report reports/fixture-a" in text
        assert "limited by the load generator: rep 1: 4015 rps is 93%" in text
    assert 'class="status ok"' in html
    html_b, md_b = (p.read_text(encoding="utf-8") for p in report.build(run_b))
    problem = "gevent/json: rep 1: the sampler recorded no sample inside the measured window"
    assert f'<li class="problem">{problem}</li>' in html_b and f"- PROBLEM: {problem}" in md_b
    assert "1 problem(s)" in html_b


def test_rebuilds_results_json_from_the_raw_files(tmp_path: Path) -> None:
    run = copy_run(DATA / "basic", tmp_path)
    assert not (run / "results.json").exists()
    html_path, _ = report.build(run)
    results_json = run / "results.json"
    assert results_json.exists()
    # Resource charts come from samples.jsonl: the whole repetition, the measured window shaded.
    text = html_path.read_text(encoding="utf-8")
    assert text.count('class="band"') == 2 * 4 and "sampler, the whole repetition" in text
    # Up to date: not rebuilt. A raw file newer than results.json: rebuilt.
    os.utime(results_json, (time.time() + 5, time.time() + 5))
    before = results_json.stat().st_mtime
    report.build(run)
    assert results_json.stat().st_mtime == before
    sample = run / "asyncio" / "json" / "rep-1" / "run.json"
    os.utime(sample, (time.time() + 60, time.time() + 60))
    report.build(run)
    assert results_json.stat().st_mtime != before


def test_db_connections_of_another_server_are_subtracted_in_the_chart(tmp_path: Path) -> None:
    run = copy_run(DATA / "basic", tmp_path)
    data = runs.load_results(run)
    e = next(x for x in data["results"] if x["server"] == "asyncio" and x["scenario"] == "json")
    assert e["db_sessions_other"] == 20
    cols, whole = run_plots.resource_series(run, e, e["repetitions"][0])
    assert whole and max(v for v in cols["db_connections"] if v is not None) == e["db_connections_peak"] == 1


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab", "report", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def test_cli_by_path_and_by_run_id(run_a: Path) -> None:
    done = run_cli(str(run_a))
    assert done.returncode == 0, done.stderr
    assert f"wrote {run_a / 'index.html'}" in done.stdout and "writes: threaded served 3.9x" in done.stdout
    (run_a / "index.html").unlink()
    done = run_cli("run-a", env={"LAB_REPORTS_DIR": str(run_a.parent)})
    assert done.returncode == 0, done.stderr
    assert (run_a / "index.html").exists() and (run_a / "summary.md").exists()


def test_cli_errors_say_what_to_do(tmp_path: Path, run_a: Path) -> None:
    done = run_cli(str(tmp_path / "nope"))
    assert done.returncode == 2 and "pass reports/<run-id>" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "empty").mkdir()
    done = run_cli(str(tmp_path / "empty"))
    assert done.returncode == 2 and "neither results.json nor the raw files" in done.stderr
    data = load(run_a)
    data["schema_version"] = 99
    (run_a / "results.json").write_text(json.dumps(data), encoding="utf-8")
    done = run_cli(str(run_a))
    assert done.returncode == 2 and "schema version 99" in done.stderr
    assert "python -m lab results" in done.stderr


def test_a_server_that_never_ran_still_gets_a_row(run_b: Path) -> None:
    data = load(run_b)
    gevent = next(e for e in data["results"] if e["server"] == "gevent")
    nothing = dict.fromkeys(("median", "min", "max", "spread"))
    gevent.update(problems=["server did not start: port in use"], repetitions=[], reps=0, requests=0,
                  failures=0, failure_rate=None, latency_ms=None, rps=nothing, ok_rps=dict(nothing),
                  threads_peak=None, client_connections_peak=None, db_connections_peak=None,
                  memory=dict.fromkeys(gevent["memory"]), cpu_percent={"mean": None, "peak": None},
                  cost={"cpu_us_per_request": dict(nothing)})
    (run_b / "results.json").write_text(json.dumps(data), encoding="utf-8")
    html_path, md_path = report.build(run_b)
    row = parse_html(html_path).tables["json"][2]
    assert row[0] == "gevent" and set(row[1:-1]) == {"-"} and row[-1] == "problem"
    assert md_tables(md_path)["json"][2] == row
    assert "gevent (server did not start: port in use)" in verdicts(run_b)["json"].text


def test_both_pages_link_the_newest_faults_run(run_a: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("faults-20260101-000000", "faults-20260102-000000"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "faults.html").write_text("<html></html>", encoding="utf-8")
        (tmp_path / name / "faults.md").write_text("# faults", encoding="utf-8")
    monkeypatch.setenv("LAB_REPORTS_DIR", str(tmp_path))
    html_path, md_path = report.build(run_a)
    newest = "faults-20260102-000000"
    assert f'href="{os.path.relpath(tmp_path / newest / "faults.html", run_a)}"' in html_path.read_text()
    md = md_path.read_text(encoding="utf-8")
    link = os.path.relpath(tmp_path / newest / "faults.md", run_a)
    assert f"[latest make faults run: {newest}]({link})" in md
