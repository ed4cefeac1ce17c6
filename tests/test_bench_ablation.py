"""lab/bench/ablation.py's plan and table from recorded samples: by default every guarantee is switched
off in turn and priced; --guarantees (LAB_BENCH_GUARANTEES) prices fewer (real run: test_bench_run)."""

from __future__ import annotations

import argparse

import pytest

from lab.bench import ablation, bench
from lab.bench.wrk import Sample
from servers.ablation import GUARANTEES

pytestmark = pytest.mark.unit

ARGS = argparse.Namespace(reps=2, duration=1.0, connections=64)


def samples_for(configs: dict[str, str]) -> dict[str, dict[str, dict[str, list[Sample]]]]:
    """asyncio in every configuration, beside its floor: each guarantee off saves 5 µs of 100."""
    rows = ablation.rows_of("asyncio", "bare-aiohttp", configs)
    by_label: dict[str, dict[str, list[Sample]]] = {}
    for row in rows:
        us = {ablation.ALL_ON: 100.0, ablation.ALL_OFF: 60.0, ablation.FLOOR: 50.0}.get(row.label, 95.0)
        by_label[row.label] = {path: [Sample(1e4, 20_000, 0, 95.0, 40.0, us * f) for f in (0.99, 1.01)]
                               for path in ablation.PATHS}
    return {"asyncio": by_label}


def test_by_default_every_guarantee_is_switched_off_in_turn() -> None:
    assert ablation.configs_of(GUARANTEES) == ablation.CONFIGS
    assert list(ablation.CONFIGS) == [ablation.ALL_ON, *(f"-{g}" for g in GUARANTEES), ablation.ALL_OFF]
    assert ablation.CONFIGS["-cap"] == "cap" and ablation.CONFIGS[ablation.ALL_OFF] == "all"
    assert bench.parse_guarantees("all") == list(GUARANTEES)


def test_every_guarantee_gets_a_row_and_a_cost() -> None:
    lines, data = ablation.report(samples_for(ablation.CONFIGS), ARGS, [0], [1])
    assert data["guarantees"] == GUARANTEES
    page = "\n".join(lines)
    for name, what in GUARANTEES.items():
        assert f"| {what} |" in page, what
        cost = data["servers"]["asyncio"]["/json"]["costs"][f"-{name}"]
        assert cost["us"] == pytest.approx(5.0, rel=1e-3) and cost["low"] <= cost["us"] <= cost["high"]
    assert data["servers"]["asyncio"]["/db"]["costs"][ablation.ALL_OFF]["us"] == pytest.approx(40.0, rel=1e-3)


def test_fewer_guarantees_price_only_those_between_all_on_and_all_off() -> None:
    names = bench.parse_guarantees(" metrics, deadline")
    assert names == ["deadline", "metrics"]  # in the table's order
    configs = ablation.configs_of(names)
    assert list(configs) == [ablation.ALL_ON, "-deadline", "-metrics", ablation.ALL_OFF]
    lines, data = ablation.report(samples_for(configs), ARGS, [0], [1])
    assert data["guarantees"] == {"deadline": GUARANTEES["deadline"], "metrics": GUARANTEES["metrics"]}
    page = "\n".join(lines)
    assert f"| {GUARANTEES['deadline']} |" in page and f"| {GUARANTEES['cap']} |" not in page
    assert set(data["servers"]["asyncio"]["/json"]["costs"]) == {"-deadline", "-metrics", ablation.ALL_OFF}


def test_an_unknown_or_empty_list_says_what_to_name() -> None:
    with pytest.raises(ValueError, match=r"unknown guarantee.*nope.*choose from deadline.*BENCH_GUARANTEES"):
        bench.parse_guarantees("deadline,nope")
    with pytest.raises(ValueError, match=r"names none: name at least one of deadline.*LAB_BENCH_GUARANTEES"):
        bench.parse_guarantees(" , ")
