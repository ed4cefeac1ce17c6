"""make compare between two runs, each server judged relative to its scenario's other servers
(lab.results.relative), on two real identical quiet default runs (tests/data/drift, see make_fixtures.py
there): the machine moved every server of a scenario alike between them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from lab.report import compare
from lab.results import relative

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data" / "drift"
CPU, CPU_REL = "CPU per request", "CPU per request" + compare.RELATIVE_LABEL
OK_RPS_REL = "ok rps" + compare.RELATIVE_LABEL


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / name / "results.json").read_text(encoding="utf-8"))
    return data


def rows(c: compare.Comparison, server: str, scenario: str) -> dict[str, compare.Row]:
    pair = next(p for p in c.pairs if p.server == server and p.scenario == scenario)
    return {r.figure: r for r in pair.rows}


def ratio(row: compare.Row) -> float:
    assert row.decision is not None and row.decision.ratio is not None, row.confidence
    return row.decision.ratio


def common(c: compare.Comparison, scenario: str, key: str) -> relative.Common:
    return next(m for m in c.commons if m.scenario == scenario and m.key == key)


def scale(entry: dict[str, Any], cpu: float = 1.0, rps: float = 1.0) -> None:
    """Every figure of one entry moved as a machine that much slower would move it."""
    for r in entry["repetitions"]:
        for key in ("cpu_us_per_request", "cpu_us_per_request_speed_adjusted"):
            if isinstance(r["cost"].get(key), int | float):
                r["cost"][key] *= cpu
        r["rps"] *= rps
        r["ok_rps"] *= rps
    for key in ("cpu_us_per_request", "cpu_us_per_request_speed_adjusted"):
        if isinstance(entry["cost"].get(key), dict):
            entry["cost"][key]["median"] *= cpu
    entry["rps"]["median"] *= rps
    entry["ok_rps"]["median"] *= rps


def test_the_machines_coherent_move_is_the_common_move_not_a_change() -> None:
    """The recorded pair: today's rule alone (the 10 % margin between runs) marked CPU per request of
    asyncio/json and multiproc/json better and three /writes servers worse; relative to peers nothing is
    marked, and the move is reported per scenario with its interval."""
    c = compare.compare(load("aa-1"), load("aa-2"), margin=0.10, margin_peers=0.03)
    assert compare.changes(c) == 0
    json_cpu, writes_cpu = common(c, "json", "cpu_per_req"), common(c, "writes", "cpu_per_req")
    assert json_cpu.ratio < 0.95 and json_cpu.ci[1] < 1 and json_cpu.servers == 4
    assert writes_cpu.ratio > 1.1 and writes_cpu.ci[0] > 1
    assert common(c, "writes", "ok_rps").ratio < 0.7
    asyncio = rows(c, "asyncio", "json")
    # The raw row stays, with its ratio and interval, and says what is in it; it is not judged.
    assert asyncio[CPU].mark == compare.INCLUDES and not asyncio[CPU].judged
    assert ratio(asyncio[CPU]) < 0.9
    rel = asyncio[CPU_REL]
    assert rel.mark == "within noise" and abs(ratio(rel) - 1) < 0.1
    assert rel.could_see().startswith("±")  # what it could have seen, as every tie says
    md, html = compare.render_md(c), compare.render_html(c)
    assert json_cpu.figure == "CPU per request at each run's reference speed"  # the verdicts' figure
    assert "**Common move of scenario json**" in md
    assert f"{json_cpu.figure} x0.9" in md
    assert 'data-common="CPU per request at each run&#x27;s reference speed"' in html
    assert '<polygon class="common"' in html
    assert 'data-label="json: common move"' in html and 'data-label="asyncio/json (rel.)"' in html


def test_a_drift_of_every_server_alike_is_not_marked_and_is_the_common_move() -> None:
    """B: every server of the pair's A run 30 % dearer per request and 30 % slower, as on a slower machine."""
    a = load("aa-1")
    b = copy.deepcopy(a)
    b["run"]["id"] = "aa-1-slower"
    for e in b["results"]:
        scale(e, cpu=1.3, rps=1 / 1.3)
    c = compare.compare(a, b, margin=0.10, margin_peers=0.03)
    assert compare.changes(c) == 0
    for scenario in ("json", "writes"):
        assert common(c, scenario, "cpu_per_req").ratio == pytest.approx(1.3, rel=1e-3)
        assert common(c, scenario, "ok_rps").ratio == pytest.approx(1 / 1.3, rel=1e-3)
    raw = rows(c, "gevent", "writes")[CPU]
    assert raw.mark == compare.INCLUDES and raw.decision is not None and raw.decision.changed  # alone: worse


@pytest.mark.parametrize("server", ["threaded", "asyncio"])
def test_one_server_dearer_by_a_fifth_among_drifting_peers_is_marked(server: str) -> None:
    """The recorded B run (the machine moved json x0.8-0.86) with one server's CPU per request 20 % higher
    and its throughput a sixth lower: that server alone is marked, relative to peers."""
    b = load("aa-2")
    changed = next(e for e in b["results"] if e["server"] == server and e["scenario"] == "json")
    scale(changed, cpu=1.2, rps=1 / 1.2)
    c = compare.compare(load("aa-1"), b, margin=0.10, margin_peers=0.03)
    rel = rows(c, server, "json")[CPU_REL]
    assert rel.mark == "worse", rel.confidence
    assert 1.1 < ratio(rel) < 1.3
    marked = {(p.server, p.scenario, r.figure) for p in c.pairs for r in p.rows if r.mark in compare.FLAGGED}
    assert {m for m in marked if m[2] == CPU_REL} == {(server, "json", CPU_REL)}
    assert not any(m[2] == CPU for m in marked)  # the raw rows are not what marks
    # The peers' median is the others' move: the common move stays near the machine's.
    assert common(c, "json", "cpu_per_req").ratio < 0.95


def test_fewer_than_three_servers_are_judged_alone_by_the_margin_between_runs() -> None:
    """Two servers per scenario: no peers' median to judge against, so today's rule judges each figure alone,
    and the machine's move on /json (CPU per request x0.81-0.82) is marked as before."""
    a, b = load("aa-1"), load("aa-2")
    for d in (a, b):
        d["results"] = [e for e in d["results"] if e["server"] in ("asyncio", "multiproc")]
    c = compare.compare(a, b, margin=0.10, margin_peers=0.03)
    assert c.commons == []
    assert not any(r.figure.endswith(compare.RELATIVE_LABEL) for p in c.pairs for r in p.rows)
    cpu = rows(c, "asyncio", "json")[CPU]
    assert cpu.judged and cpu.mark == "better" and ratio(cpu) < 0.85
    assert "relative to peers" not in compare.render_md(c)
