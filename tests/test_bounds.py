"""Capacity some repetitions only bound from below: the verdict between servers on synthetic repetitions
(a winner on lower bounds stands, a verdict against them is not judged, a tie with them on one side is
'at least tie', no lower bounds: the rule as always), in the matrix, the report's paragraph and the digest."""

from __future__ import annotations

from typing import Any

import pytest

from lab.report import digest
from lab.results import bounds, headline, matrix, stats

pytestmark = pytest.mark.unit

MARGIN = stats.DEFAULT_MARGINS[stats.WITHIN]
HIGH = [1500.0, 1540.0, 1480.0, 1520.0]
LOW = [1000.0, 1030.0, 980.0, 1010.0]
NEAR = [1490.0, 1530.0, 1500.0, 1510.0]


def entry(server: str, values: list[float], bounded: int = 0, kind: str = "generator") -> dict[str, Any]:
    """A capacity entry whose first `bounded` repetitions stopped before the knee (`kind`)."""
    caps = [{"capacity_rps": v, "slo_p99_ms": 100.0, "limited_by": kind if i < bounded else "server",
             "lower_bound": i < bounded} for i, v in enumerate(values)]
    return {"server": server, "scenario": "capacity-json", "status": "ok", "problems": [], "failures": 0,
            "generator_bound": False, "reps": len(values),
            "capacity": {"median": sorted(values)[len(values) // 2], "values": values, "slo_p99_ms": 100.0,
                         "limited_by": sorted({c["limited_by"] for c in caps}), "notes": [],
                         "lower_bounds": [c["lower_bound"] for c in caps]},
            "repetitions": [{"capacity": c} for c in caps]}


def throughput(*entries: dict[str, Any]) -> matrix.Cell:
    return matrix.cell("throughput", entries, MARGIN)


def test_without_lower_bounds_the_rule_judges_as_always() -> None:
    cell = throughput(entry("asyncio", HIGH), entry("threaded", LOW))
    assert cell.state == "winner" and cell.winner == "asyncio" and cell.note == ""
    assert cell.text().startswith("asyncio 1.50x [") and cell.text().endswith("vs threaded")
    v = headline.verdict("capacity-json", [entry("asyncio", HIGH), entry("threaded", LOW)])
    assert v.winner == "asyncio" and v.bounded is None
    tie = throughput(entry("asyncio", HIGH), entry("threaded", NEAR))
    assert tie.state == "tie" and tie.text().startswith("tie (could see ±")


def test_a_winner_on_lower_bounds_stands_and_says_so() -> None:
    entries = [entry("asyncio", HIGH, bounded=2), entry("threaded", LOW)]
    cell = throughput(*entries)
    assert cell.state == "winner" and cell.winner == "asyncio"
    assert cell.note == ("asyncio's knee lay above what the generator could offer in 2 of 4 repetitions: it "
                         "wins even on those")
    assert cell.text().endswith(f"vs threaded ({cell.note})")
    v = headline.verdict("capacity-json", entries)
    assert v.winner == "asyncio" and v.bounded is not None and "it wins even on those" in v.text
    assert "asyncio wins on capacity" in digest.scenario_line("capacity-json", entries)


def test_a_verdict_against_lower_bounds_is_not_judged_with_what_it_could_see() -> None:
    entries = [entry("asyncio", HIGH), entry("threaded", LOW, bounded=1, kind="not reached")]
    cell = throughput(*entries)
    assert cell.state == "not judged" and cell.winner == "asyncio" and cell.runner_up == "threaded"
    assert cell.note == "threaded's knee lay above the rates offered in 1 of 4 repetitions"
    assert cell.text().startswith(f"not judged ({cell.note}; could see ±"), cell.text()
    assert cell.decision is not None and cell.decision.changed  # the plain rule would have called it
    v = headline.verdict("capacity-json", entries)
    assert v.winner is None and v.tie == [] and v.bounded is not None
    assert "asyncio and threaded are not judged on capacity at the SLO" in v.text and "could see ±" in v.text
    line = digest.scenario_line("capacity-json", entries)
    assert line.startswith("not judged on capacity at p99<100ms: threaded's knee lay above"), line
    cells = matrix.as_json(entries, MARGIN)["scenarios"]["capacity-json"]  # results.json's verdicts
    assert cells["throughput"]["state"] == "not judged" and cells["throughput"]["note"] == cell.note


def test_a_tie_with_lower_bounds_on_one_side_is_at_least_a_tie() -> None:
    entries = [entry("asyncio", NEAR, bounded=3), entry("threaded", HIGH)]
    cell = throughput(*entries)
    assert cell.state == "at least tie" and cell.winner == "asyncio" and cell.runner_up == "threaded"
    assert cell.text().startswith("asyncio at least ties threaded (asyncio's knee lay above what the "
                                  "generator could offer in 3 of 4 repetitions; could see ±"), cell.text()
    v = headline.verdict("capacity-json", entries)
    assert v.winner is None and "asyncio at least ties threaded on capacity at the SLO" in v.text
    line = digest.scenario_line("capacity-json", entries)
    assert line.startswith("asyncio at least ties threaded on capacity") and "could see ±" in line, line


def test_a_tie_with_lower_bounds_on_both_sides_is_not_judged() -> None:
    cell = throughput(entry("asyncio", HIGH, bounded=1), entry("threaded", NEAR, bounded=2))
    assert cell.state == "not judged" and "asyncio's knee" in cell.note and "threaded's knee" in cell.note


def test_only_values_the_rule_tests_count_as_lower_bounds() -> None:
    e = entry("asyncio", HIGH, bounded=1)
    e["repetitions"].append({"capacity": {"capacity_rps": None, "limited_by": "generator"}})  # no value
    assert bounds.lower_bounds(e) == 1 and bounds.values(e) == 4
    assert bounds.why(entry("threaded", LOW)) == ""


def test_closed_loop_throughput_stays_generator_bound() -> None:
    def closed(server: str, rps: list[float], bound: bool) -> dict[str, Any]:
        return {"server": server, "scenario": "json", "problems": [], "generator_bound": bound,
                "ok_rps": {"median": sorted(rps)[2]}, "repetitions": [{"ok_rps": x} for x in rps]}
    cell = throughput(closed("asyncio", HIGH, True), closed("threaded", LOW, False))
    assert cell.state == "generator-bound"


def test_make_compare_reads_lower_bounds_too() -> None:
    from lab.report import compare

    def row(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, list[str]]:
        pair = compare.compare_entries(a, b)
        (cap,) = [r for r in pair.rows if r.figure == headline.FIGURES["capacity"].label]
        return cap.mark, pair.notes

    assert row(entry("asyncio", LOW), entry("asyncio", HIGH)) == ("better", [])
    mark, notes = row(entry("asyncio", HIGH), entry("asyncio", LOW, bounded=1))  # B's drop may be its bound
    assert mark == "not compared" and notes == ["capacity: not judged: B's knee lay above what the generator "
                                                "could offer in 1 of 4 repetitions"]
    mark, notes = row(entry("asyncio", LOW), entry("asyncio", HIGH, bounded=1))  # B gained even on its bound
    assert mark == "better" and "it wins even on those" in notes[0]


def test_the_pages_matrix_shows_which_it_is() -> None:
    from lab.report import verdict_matrix

    page = verdict_matrix.html([entry("asyncio", NEAR, bounded=3), entry("threaded", HIGH)], MARGIN)
    assert 'data-state="at least tie"' in page and "asyncio&#x27;s knee lay above" in page
    assert "could see ±" in page and "at least tie" in verdict_matrix.rule_note(MARGIN)
    page = verdict_matrix.html([entry("asyncio", HIGH), entry("threaded", LOW, bounded=1)], MARGIN)
    assert 'data-state="not judged"' in page and "could see ±" in page
