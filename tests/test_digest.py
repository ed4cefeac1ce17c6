"""The end of `make load`: what a run found in at most ten lines, from the report's own verdicts, over the
recorded results of tests/data/reports/ (see make_fixtures.py) and variations of them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from lab.report import digest
from lab.report.runs import by_scenario
from lab.results import headline
from lab.results.headline import FIGURES

pytestmark = pytest.mark.unit

RUN_A = Path(__file__).parent / "data" / "reports" / "run-a"


@pytest.fixture
def data() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((RUN_A / "results.json").read_text(encoding="utf-8"))
    return doc


def entry(doc: dict[str, Any], server: str, scenario: str) -> dict[str, Any]:
    (found,) = [e for e in doc["results"] if e["server"] == server and e["scenario"] == scenario]
    return found


def line_of(lines: list[str], scenario: str) -> str:
    (found,) = [x for x in lines if x.startswith(f"  {scenario} ")]
    return found


def test_each_scenario_gets_the_verdict_of_the_report(data: dict[str, Any]) -> None:
    lines = digest.digest(data, RUN_A, RUN_A / "index.html")
    assert len(lines) <= digest.MAX_LINES
    assert lines[0].startswith("fixture-a: 3 scenario(s) x 2 server(s)") and "run-a/summary.md" in lines[0]
    assert lines[-1] == f"open {digest.shown(RUN_A / 'index.html')}"
    verdicts = {s: headline.verdict(s, es) for s, es in by_scenario(data)}
    cpu = FIGURES["cpu_per_req"]
    # writes: threaded is the cheaper by the rule; the line carries the test's own confidence.
    assert verdicts["writes"].cheapest == "threaded"
    confidence = headline.judge(cpu, entry(data, "asyncio", "writes"), entry(data, "threaded", "writes"))[2]
    assert confidence is not None
    writes = line_of(lines, "writes")
    assert "threaded wins on CPU per request: 0.53x asyncio's (162 µs vs 304 µs; " in writes
    assert confidence.confidence() in writes
    # json: the rule cannot tell them apart: a tie, cheapest first, not a winner.
    assert verdicts["json"].cheapest is None
    assert "tie on CPU per request: asyncio ≈ threaded (58.9 µs vs 74.2 µs; x0.794" in line_of(lines, "json")
    # What to know before trusting them: the generator set asyncio/json's pace; threaded/db failed some.
    flagged = [x for x in lines if x.startswith("! ")]
    assert "! generator-bound (the load generator set the pace): asyncio/json" in flagged
    assert "! failed requests: threaded/db 0.29%" in flagged


def test_a_tie_says_what_it_could_have_seen(data: dict[str, Any]) -> None:
    json_line = line_of(digest.digest(data, RUN_A, None), "json")
    cpu = FIGURES["cpu_per_req"]
    d = headline.judge(cpu, entry(data, "threaded", "json"), entry(data, "asyncio", "json"))[2]
    assert d is not None and d.mde is not None  # the minimum detectable effect of the tie
    assert json_line.endswith(f"; could see {d.could_see()})"), json_line
    assert "could see" not in line_of(digest.digest(data, RUN_A, None), "writes")  # a winner: no


def _scale_cpu(e: dict[str, Any], factor: float) -> None:
    cost = e["cost"]["cpu_us_per_request"]
    for key in ("median", "min", "max"):
        cost[key] *= factor
    for r in e["repetitions"]:
        r["cost"]["cpu_us_per_request"] *= factor


def test_a_tie_on_cpu_names_the_servers_that_tie_on_cpu(data: dict[str, Any]) -> None:
    # db: asyncio and threaded tie on throughput. Make them tie on CPU too, beside a third server as
    # fast but three times as costly: the CPU tie is the cheapest two, never the throughput tie.
    doc = copy.deepcopy(data)
    doc["results"] = [e for e in doc["results"] if e["scenario"] == "db"]
    threaded, asyncio = entry(doc, "threaded", "db"), entry(doc, "asyncio", "db")
    costly = copy.deepcopy(threaded)
    costly["server"] = "gevent"
    _scale_cpu(costly, 3.0)
    asyncio["cost"] = copy.deepcopy(threaded["cost"])
    for mine, theirs in zip(asyncio["repetitions"], threaded["repetitions"], strict=False):
        mine["cost"] = copy.deepcopy(theirs["cost"])
    _scale_cpu(asyncio, 1.02)
    doc["results"].append(costly)
    v = headline.verdict("db", doc["results"])
    assert "gevent" in v.tie and v.cheapest is None  # the throughput tie holds all three
    line = line_of(digest.digest(doc, RUN_A, None), "db")
    assert "tie on CPU per request: threaded ≈ asyncio (" in line, line


def _capacity(e: dict[str, Any], per_rep: list[float]) -> None:
    e["capacity"] = {"median": sorted(per_rep)[len(per_rep) // 2], "slo_p99_ms": 100.0, "notes": [],
                     "limited_by": ["server"]}
    for r, value in zip(e["repetitions"], per_rep, strict=True):
        r["capacity"] = {"capacity_rps": value}
    e["generator_bound"] = False


def test_a_capacity_scenario_is_judged_on_capacity_at_its_slo(data: dict[str, Any]) -> None:
    doc = copy.deepcopy(data)
    doc["results"] = [e for e in doc["results"] if e["scenario"] == "writes"]
    reps = len(doc["results"][0]["repetitions"])
    _capacity(entry(doc, "asyncio", "writes"), [400.0, 410.0, 390.0, 405.0][:reps])
    _capacity(entry(doc, "threaded", "writes"), [200.0, 205.0, 195.0, 210.0][:reps])
    assert headline.verdict("writes", doc["results"]).winner == "asyncio"
    line = line_of(digest.digest(doc, RUN_A, None), "writes")
    expected = "  writes  asyncio wins on capacity at p99<100ms: 2.0x threaded's (405 vs 205; x1.98"
    assert line.startswith(expected), line
    # A repetition the generator stopped before the knee only bounds its server's capacity from below: a
    # winner on such values stands, and the line says so; a verdict against them is not judged.
    entry(doc, "asyncio", "writes")["repetitions"][0]["capacity"]["limited_by"] = "generator"
    line = line_of(digest.digest(doc, RUN_A, None), "writes")
    assert line.startswith(expected), line
    assert line.endswith("asyncio's knee lay above what the generator could offer in 1 of "
                         f"{reps} repetitions: it wins even on those"), line
    entry(doc, "asyncio", "writes")["repetitions"][0]["capacity"]["limited_by"] = "server"
    entry(doc, "threaded", "writes")["repetitions"][0]["capacity"]["limited_by"] = "generator"
    lines = digest.digest(doc, RUN_A, None)
    line = line_of(lines, "writes")
    assert line.startswith("  writes  not judged on capacity at p99<100ms: threaded's knee lay above what "
                           f"the generator could offer in 1 of {reps} repetitions (405 vs 205; x1.98"), line
    assert "could see ±" in line, line
    flagged = [x for x in lines if "capacity only a lower bound" in x]
    assert flagged and f"threaded/writes 1 of {reps}" in flagged[0], lines


def test_a_long_run_still_fits_in_ten_lines(data: dict[str, Any]) -> None:
    doc = copy.deepcopy(data)
    many = []
    for i in range(12):  # twelve scenarios, every flag raised
        for e in data["results"]:
            if e["scenario"] == "writes":
                e2 = copy.deepcopy(e)
                e2["scenario"] = f"writes-{i}"
                e2["cost"]["cpu_budget"] = {"cores": 0.5, "periods": 1000, "throttled_periods": 100 + 50 * i}
                many.append(e2)
    doc["results"], doc["generator_bound"] = many, []
    doc["scenarios"] = [f"writes-{i}" for i in range(12)]
    doc["problems"] = ["asyncio/writes-3: rep 2: the sampler recorded no sample inside the measured window"]
    lines = digest.digest(doc, RUN_A, RUN_A / "index.html")
    assert len(lines) == digest.MAX_LINES, "\n".join(lines)
    assert lines[0].startswith("fixture-a: 12 scenario(s) x 2 server(s)")
    (flagged,) = [x for x in lines if x.startswith("! ")]  # the kinds share one line when room is short
    assert "throttled by the 0.5-core CPU budget in 10%-65% of its periods (most: " in flagged
    assert "1 problem(s), first: asyncio/writes-3: rep 2:" in flagged
    assert lines[-3] == "  +6 more scenario(s): see summary.md"
    assert [x.split()[0] for x in lines[1:-3]] == [f"writes-{i}" for i in range(6)]


def test_no_report_says_how_to_build_it(data: dict[str, Any]) -> None:
    assert digest.digest(data, RUN_A, None)[-1] == "no report was built; make report RUN=run-a"
