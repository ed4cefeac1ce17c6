"""make compare tests only the question asked (--servers, --scenarios, --figures; lab.report.scope): the
family its correction counts shrinks to it, every peer stays a peer, and what is outside is shown as not
tested; on two real identical quiet default runs (tests/data/drift, see make_fixtures.py there)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from lab.report import compare, scope

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data" / "drift"
CPU_REL = "CPU per request" + compare.RELATIVE_LABEL


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / name / "results.json").read_text(encoding="utf-8"))
    return data


def question(servers: str = "", scenarios: str = "", figures: str = "") -> scope.Scope:
    return scope.Scope(scope.parse(servers), scope.parse(scenarios), scope.parse(figures))


def cpu_rel(c: compare.Comparison) -> dict[str, compare.Row]:
    return {f"{p.server}/{p.scenario}": r for p in c.pairs for r in p.rows if r.figure == CPU_REL}


def ratio(row: compare.Row) -> float:
    assert row.decision is not None and row.decision.ratio is not None, row.confidence
    return row.decision.ratio


def mde(row: compare.Row) -> float:
    assert row.decision is not None and row.decision.mde is not None, row.confidence
    return row.decision.mde


def test_a_narrower_question_is_a_smaller_family_that_sees_smaller_changes() -> None:
    a, b = load("aa-1"), load("aa-2")
    full = compare.compare(a, b)
    cpu = compare.compare(a, b, question=question(figures="cpu_per_req"))
    one = compare.compare(a, b, question=question("asyncio", "json", "cpu_per_req"))
    assert full.family > 100 and cpu.family == len(cpu_rel(cpu)) == 8 and one.family == 1
    for c in (full, cpu, one):
        assert compare.changes(c) == 0  # an A/A pair: nothing marked, whatever the question
    target = "asyncio/json"
    seen = [mde(cpu_rel(c)[target]) for c in (full, cpu, one)]
    assert seen[0] > seen[1] > seen[2], seen  # alpha/258, alpha/8, alpha: each sees a smaller change
    # the test itself is the same: same ratio, same interval; only the family's alpha differs
    assert len({ratio(cpu_rel(c)[target]) for c in (full, cpu, one)}) == 1
    assert one.family == 1 and f"{full.family} tests; alpha/{full.family} each" in compare.render_md(full)
    assert "Tested: servers asyncio; scenarios json; figures cpu_per_req: 1 test; alpha 0.05." \
        in compare.render_md(one)
    assert 'data-family="1"' in compare.render_html(one)


def test_what_is_outside_the_question_is_shown_not_tested_and_never_marked() -> None:
    """B: asyncio/json 25 % dearer per request. Asked about CPU per request of threaded only, the change
    is in the table, with its ratio, but not marked; asked about asyncio, it is marked."""
    a, b = load("aa-1"), load("aa-2")
    b = copy.deepcopy(b)
    entry = next(e for e in b["results"] if e["server"] == "asyncio" and e["scenario"] == "json")
    for r in entry["repetitions"]:
        for key in ("cpu_us_per_request", "cpu_us_per_request_speed_adjusted"):
            if isinstance(r["cost"].get(key), int | float):
                r["cost"][key] *= 1.25
    other = compare.compare(a, b, question=question("threaded", figures="cpu_per_req"))
    asked = compare.compare(a, b, question=question("asyncio", figures="cpu_per_req"))
    assert cpu_rel(asked)["asyncio/json"].mark == "worse"
    row = cpu_rel(other)["asyncio/json"]
    assert row.mark == scope.NOT_TESTED and not row.judged and row.could_see() == ""
    assert row.confidence.startswith("x1.2") and "p=" not in row.confidence  # the ratio, no test
    assert compare.changes(other) == 0
    pair = next(p for p in other.pairs if p.server == "asyncio" and p.scenario == "json")
    assert all(r.mark == scope.NOT_TESTED for r in pair.rows) and scope.unmarked(pair) == scope.NOT_TESTED
    threaded = next(p for p in other.pairs if p.server == "threaded" and p.scenario == "json")
    assert {r.key for r in threaded.rows if r.mark != scope.NOT_TESTED} == {"cpu_per_req"}
    # asyncio stays threaded's peer: threaded's test is the one the full question makes
    full = compare.compare(a, b)
    assert ratio(cpu_rel(other)["threaded/json"]) == ratio(cpu_rel(full)["threaded/json"])
    md, html = compare.render_md(other), compare.render_html(other)
    assert f"| {scope.NOT_TESTED} |" in md
    assert 'data-label="asyncio/json (rel.)"' not in html and 'data-label="threaded/json (rel.)"' in html


@pytest.mark.parametrize(("flag", "value", "valid"), [("--figures", "cpu_us_per_request", "cpu_per_req"),
                                                      ("--servers", "nginx", "multiproc"),
                                                      ("--scenarios", "dbb", "writes")])
def test_an_unknown_value_is_named_with_the_valid_ones_and_exits_2(
        flag: str, value: str, valid: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = compare.main([str(DATA / "aa-1"), str(DATA / "aa-2"), flag, value, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert value in err and valid in err and scope.VARS[flag[2:]] in err and "Traceback" not in err
    assert not (tmp_path / "compare.html").exists()


def test_the_knobs_narrow_the_command_but_not_what_selfcheck_builds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LAB_COMPARE_FIGURES", "cpu_per_req")
    monkeypatch.setenv("LAB_COMPARE_SCENARIOS", "json")
    assert compare.main([str(DATA / "aa-1"), str(DATA / "aa-2"), "--out", str(tmp_path / "cli")]) == 0
    assert "Tested: scenarios json; figures cpu_per_req: 4 tests; alpha/4 each" in capsys.readouterr().out
    # make selfcheck's A/A and A/B call build() itself: the default question, every figure
    _html, _md, c = compare.build(DATA / "aa-1", DATA / "aa-2", out=tmp_path / "selfcheck")
    assert c.question == scope.FULL and c.family == compare.compare(load("aa-1"), load("aa-2")).family
