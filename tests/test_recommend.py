"""lab.tune.recommend on recorded curves: plateau, cliff, SLO never met, single point, noisy ties, failures.

The curves are shaped like real sweeps of this lab (asyncio pool_size on `hold` and `db`); no I/O.
"""

from __future__ import annotations

import dataclasses

import pytest

from lab.results.schema import Entry
from lab.tune import budget as budgets
from lab.tune import recommend
from lab.tune.budget import Budget, Demand
from lab.tune.recommend import Point

pytestmark = pytest.mark.unit

SLO = 100.0


def curve(*rows: tuple[float, float, float, float], spread: float = 0.02,
          failures: float = 0.0) -> list[Point]:
    """(value, ok rps, p50 ms, p99 ms) rows -> points of four repetitions each, `spread` apart."""
    def reps(rps: float) -> tuple[float, ...]:
        return tuple(rps * (1 + spread * k) for k in (-0.5, -1 / 6, 1 / 6, 0.5))
    return [Point(value=v, ok_rps=rps, rps=rps, spread=spread, p50_ms=p50, p99_ms=p99, failure_rate=failures,
                  db_connections_peak=v, reps=4, values=reps(rps)) for v, rps, p50, p99 in rows]


def test_plateau_recommends_the_smallest_value_within_noise_of_the_best() -> None:
    pts = curve((1, 430, 110, 160), (2, 860, 56, 80), (4, 1700, 28, 42), (8, 2350, 20, 31),
                (16, 2400, 19, 30), (32, 2440, 19, 33), (64, 2420, 20, 35))
    r = recommend.recommend(pts, SLO, "pool_size")
    assert r.verdict == "recommended" and r.value == 8
    assert r.best is not None and r.best.value == 32
    # 8 is 3.7 % below the best, past the 3 % margin, but four repetitions 2 % apart do not show it.
    assert r.decision is not None and not r.decision.changed and r.decision.mde is not None
    assert r.sentence == ("pool_size=8: the smallest value within noise (margin 3%) of the best throughput, "
                          "2,440 rps at 32, with p99 31 ms under the 100 ms SLO "
                          "(x0.963 [0.949-0.978], p=0.12; could see ±5% (80% power, alpha 0.05, margin 3%); "
                          "5% needs 4 repetitions a side)")
    assert r.as_dict()["decision"]["mde"] == pytest.approx(r.decision.mde, rel=1e-3)
    assert r.cliff_after is None and not any("rising" in n for n in r.notes)


def test_recommended_value_is_the_best_when_nothing_smaller_comes_close() -> None:
    pts = curve((2, 500, 90, 95), (5, 1200, 40, 60), (10, 2000, 25, 45))
    r = recommend.recommend(pts, SLO, "pool_size")
    assert r.value == 10 and r.point is r.best
    assert r.sentence.startswith("pool_size=10: the best throughput, 2,000 rps, with no smaller value within")
    assert any("still rising at the largest value swept (10)" in n for n in r.notes)


def test_cliff_past_the_best_value_is_reported_and_avoided() -> None:
    pts = curve((2, 1000, 20, 40), (5, 2000, 20, 45), (10, 2100, 21, 50), (20, 2080, 30, 90),
                (40, 600, 80, 400))
    r = recommend.recommend(pts, SLO, "pool_size")
    assert r.value == 10  # 5's 2,000 is shown below 2,100 by more than the 3 % margin
    assert r.cliff_after == 20
    assert any("collapses past pool_size=20: 600 rps at 40, 71% below the best" in n for n in r.notes)


def test_cliff_where_the_collapse_is_failures() -> None:
    pts = curve((4, 1500, 20, 40), (8, 2000, 20, 45))
    pts.append(Point(value=16, ok_rps=150, rps=3000, spread=0.01, p50_ms=5, p99_ms=60, failure_rate=0.95,
                     failure_kind="http_503"))
    r = recommend.recommend(pts, SLO, "max_inflight")
    assert r.value == 8 and r.cliff_after == 8
    assert any("max_inflight=16 failed 95% of requests, mostly http_503" in n for n in r.notes)


def test_slo_never_met_names_the_lowest_p99_clearly() -> None:
    pts = curve((1, 50, 900, 1000), (2, 100, 450, 520), (4, 185, 240, 260), (8, 190, 230, 255))
    r = recommend.recommend(pts, SLO, "pool_size")
    assert r.verdict == "slo_not_met" and r.value == 8
    assert r.sentence.startswith("no value kept p99 under the 100 ms SLO; pool_size=8 came closest with "
                                 "p99 255 ms")
    assert "relax SLO_P99_MS" in r.sentence
    assert any("ignoring the SLO, pool_size=4 is the smallest value within noise (margin 3%) of the best "
               "throughput, 190 rps at 8 (p99 260 ms there)" in n for n in r.notes)


def test_single_point() -> None:
    r = recommend.recommend(curve((10, 2000, 20, 45)), SLO, "pool_size")
    assert r.verdict == "recommended" and r.value == 10
    assert "the only value swept" in r.sentence and "sweep more values" in r.sentence


def test_single_point_over_the_slo() -> None:
    r = recommend.recommend(curve((10, 2000, 20, 450)), SLO, "pool_size")
    assert r.verdict == "slo_not_met" and r.value == 10


def test_noisy_ties_take_the_smallest_value_and_say_so() -> None:
    # Repetitions 18 % apart: 2, 5 and 10 cannot be told apart, 20 can.
    pts = curve((2, 1850, 20, 50), (5, 2000, 20, 50), (10, 2100, 20, 50), spread=0.18)
    r = recommend.recommend(pts, SLO, "pool_size")
    assert r.value == 2 and r.decision is not None and r.decision.mde is not None and r.decision.mde > 0.15
    assert any("could only see a change of ±21% in throughput; 5% would take 202 repetitions per value (REPS)"
               in n for n in r.notes)


def test_too_few_repetitions_recommend_the_best_and_say_why() -> None:
    two = [dataclasses.replace(p, values=p.values[:2], reps=2)
           for p in curve((2, 1990, 20, 50), (5, 2000, 20, 50))]
    r = recommend.recommend(two, SLO, "pool_size")
    assert r.value == 5 and r.decision is not None and r.decision.p is None
    assert any("no smaller value could be called within noise of the best" in n and "REPS=4" in n
               for n in r.notes)


def test_the_margin_is_the_knob_between_values() -> None:
    pts = curve((2, 1900, 20, 50), (5, 2000, 20, 50), spread=0.01)
    assert recommend.recommend(pts, SLO, "pool_size").value == 5  # 5 % lower, clearly past 3 %
    assert recommend.recommend(pts, SLO, "pool_size", margin=0.10).value == 2


def test_a_difference_beyond_noise_is_not_a_tie() -> None:
    pts = curve((2, 1800, 20, 50), (5, 2000, 20, 50), spread=0.03)
    assert recommend.recommend(pts, SLO, "pool_size").value == 5


def test_high_failures_rule_a_value_out() -> None:
    pts = curve((1, 950, 18, 60), (2, 1000, 19, 62))
    pts[1] = Point(value=2, ok_rps=2000, rps=2100, spread=0.01, p50_ms=10, p99_ms=40, failure_rate=0.05,
                   failure_kind="http_503")
    r = recommend.recommend(pts, SLO, "pool_size")
    assert r.value == 1
    assert any("pool_size=2 failed 5% of requests, mostly http_503" in n for n in r.notes)


def test_every_value_failing_recommends_nothing() -> None:
    r = recommend.recommend(curve((1, 100, 5, 10), (2, 150, 5, 10), failures=0.4), SLO, "pool_size")
    assert r.verdict == "none" and r.value is None
    assert "every value of pool_size failed more than 1% of requests" in r.sentence


def test_no_points_and_broken_points() -> None:
    assert recommend.recommend([], SLO).verdict == "none"
    broken = Point(value=4, ok_rps=None, ok=False, problems=("the server did not start",))
    r = recommend.recommend([broken, *curve((8, 900, 20, 40))], SLO, "pool_size")
    assert r.value == 8
    assert any("pool_size=4 was not measured cleanly" in n and "did not start" in n for n in r.notes)


def test_faster_value_over_the_slo_is_mentioned() -> None:
    pts = curve((4, 1000, 20, 60), (8, 1500, 30, 90), (16, 2500, 60, 180))
    r = recommend.recommend(pts, SLO, "pool_size")
    assert r.value == 8
    assert any("pool_size=16 reached 2,500 rps" in n and "breaks the SLO" in n for n in r.notes)


def test_generator_bound_best_is_flagged() -> None:
    pts = curve((4, 1000, 20, 60), (8, 1500, 30, 90))
    pts[1] = Point(**{**pts[1].__dict__, "generator_bound": True})
    r = recommend.recommend(pts, SLO, "pool_size")
    assert any("load generator was the limit" in n for n in r.notes)


def test_point_from_a_results_entry() -> None:
    entry: Entry = {  # the fields of a results.json entry that matter (lab/results/schema.md)
        "status": "ok", "reps": 2, "rps": {"median": 2010.0}, "ok_rps": {"median": 2000.0, "spread": 0.031},
        "latency_ms": {"p50": 12.5, "p99": 48.0}, "failure_rate": 0.002,
        "failures_by_kind": {"http_503": 3, "timeout": 1}, "db_connections_peak": 10,
        "generator_bound": False, "problems": [],
    }
    p = recommend.point_from_entry(10, entry)
    assert (p.ok_rps, p.rps, p.spread, p.p50_ms, p.p99_ms) == (2000.0, 2010.0, 0.031, 12.5, 48.0)
    assert p.failure_kind == "http_503" and p.db_connections_peak == 10 and p.ok and p.reps == 2
    broken = entry.copy()
    broken["status"] = "problem"
    assert not recommend.point_from_entry(10, broken).ok


def test_connections_the_values_imply() -> None:
    budget = Budget(max_connections=300, others=5)
    t = budgets.connection_total(10, [Demand("asyncio", 10, 1)], budget)
    assert (t.total, t.fits) == (17, True)
    assert t.describe("pool_size") == (
        "pool_size=10 implies 10 database connections for the asyncio server (10 per process x 1 process) + "
        "2 lab sessions + 5 other sessions open now = 17 of max_connections 300 (6%)")
    big = budgets.connection_total(150, [Demand("asyncio", 150, 1), Demand("multiproc", 150, 2)], budget)
    assert big.total == 300 + 2 + 5 and not big.fits  # one server at a time: the larger one counts
    both = budgets.connection_total(150, big.demands, budget, concurrent=2)
    assert both.servers_part == 450
    reserved = Budget(max_connections=100, reserved=3)
    assert reserved.limit == 97
    assert budgets.largest_fitting_pool(2, reserved) == 47
    assert not budgets.connection_total(48, [Demand("multiproc", 48, 2)], reserved).fits
    assert budgets.connection_total(47, [Demand("multiproc", 47, 2)], reserved).fits


def test_a_pool_larger_than_the_load_uses_is_pointed_out() -> None:
    pts = curve((16, 760, 64, 101), (32, 1510, 33, 44), (64, 1760, 26, 48), (128, 1750, 27, 50))
    pts = [Point(**{**p.__dict__, "db_connections_peak": min(p.value, 50)}) for p in pts]
    r = recommend.recommend(pts, SLO, "pool_size")
    assert r.value == 64
    assert any("at most 50 database sessions open" in n and "a pool of about 50" in n for n in r.notes)
    assert not any("still rising" in n for n in r.notes)


def test_idle_pool_at_the_largest_value_is_not_called_still_rising() -> None:
    pts = curve((32, 1510, 33, 44), (64, 1760, 26, 48))
    pts = [Point(**{**p.__dict__, "db_connections_peak": min(p.value, 50)}) for p in pts]
    r = recommend.recommend(pts, SLO, "pool_size")
    assert r.value == 64 and not any("still rising" in n for n in r.notes)
    assert any("a pool of about 50" in n for n in r.notes)
