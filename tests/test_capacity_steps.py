"""Where a capacity scenario places its steps, how far it adds them, and what a knee not reached means."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from lab.results import openmodel, records
from loadtests import catalogue

pytestmark = pytest.mark.unit


def test_later_repetitions_step_finely_across_the_first_knee_each_shifted() -> None:
    reps = 4
    grids = [catalogue.knee_rates(1000.0, rep, reps) for rep in range(2, reps + 1)]
    for grid in grids:
        assert len(grid) == catalogue.KNEE_STEPS and list(grid) == sorted(grid)
        # The highest step lies above the knee's capacity; a floor step well below it, so that a
        # repetition whose knee moved lower than the fine steps still has a capacity.
        assert grid[-1] > 1000.0 > grid[1] and grid[0] < 0.8 * 1000.0
        ratios = [b / a for a, b in itertools.pairwise(grid[1:])]
        assert all(r == pytest.approx(catalogue.KNEE_RATIO, rel=0.01) for r in ratios)
    # Each repetition's grid is shifted by a fraction of a step: no two share a top step, and the
    # shifts cover less than one step, so the capacities fall between the steps over the repetitions.
    tops = [g[-1] for g in grids]
    assert len(set(tops)) == len(tops)
    span = math.log(max(tops) / min(tops)) / math.log(catalogue.KNEE_RATIO)
    assert 0.3 < span < 1.0


def test_an_added_step_is_geometric_and_stops_at_the_generators_sustainable_rate() -> None:
    assert catalogue.extend_rate(1000.0, 1.15, None) == 1150.0
    assert catalogue.extend_rate(1000.0, 1.15, 1100.0) == 1100.0  # held to the ceiling
    assert catalogue.extend_rate(1100.0, 1.15, 1100.0) is None  # at the ceiling: nothing more to offer
    assert catalogue.extend_rate(3.0, 1.1, None) == 4.0  # a low rate still moves up


def _step(rate: float, meets: bool = True) -> dict[str, Any]:
    return {"rate": rate, "meets_slo": meets, "misses": [] if meets else ["p99 300 ms >= 100 ms"],
            "generator_limited": False, "generator_reasons": [], "achieved_rps": rate, "dropped": 0}


def test_a_knee_not_reached_at_the_sustainable_rate_is_the_generators_limit() -> None:
    cap = openmodel.capacity([_step(500), _step(900)], 100, sustainable=900)
    assert cap and cap["limited_by"] == "generator" and cap["capacity_rps"] == 900
    assert "generator's calibrated sustainable rate" in cap["note"] and "not the server's" in cap["note"]


def test_a_knee_not_reached_below_the_sustainable_rate_says_why_the_steps_stopped() -> None:
    ext = {"stop": "8 steps added, the most allowed"}
    cap = openmodel.capacity([_step(500), _step(900)], 100, sustainable=3000, extension=ext)
    assert cap and cap["limited_by"] == "not reached" and cap["capacity_rps"] == 900
    assert "8 steps added" in cap["note"] and "EXTEND_STEPS=" in cap["note"]
    # A miss is the server's knee, wherever the sustainable rate lies.
    cap = openmodel.capacity([_step(500), _step(900, meets=False)], 100, sustainable=900)
    assert cap and cap["limited_by"] == "server" and cap["capacity_rps"] == 500


def test_no_planned_step_lies_past_the_generators_sustainable_rate() -> None:
    rates = catalogue.probe_rates(1800.0, ceiling=500.0)
    assert rates[-1] <= 500.0 and len(rates) == len(catalogue.PROBE_SHARES)  # shares of a lower base
    assert catalogue.probe_rates(200.0, ceiling=500.0) == catalogue.probe_rates(200.0)
    grid = catalogue.knee_rates(480.0, 3, 4, ceiling=500.0)[1:]
    assert grid[-1] == 500.0 and list(grid) == sorted(set(grid))


def test_the_repetitions_notes_are_said_once_each_with_their_repetitions() -> None:
    assert openmodel.notes_by_rep(["a", "a", "a"]) == "a"
    assert openmodel.notes_by_rep(["a", "b", "a"]) == "rep 1,3: a; rep 2: b"
    assert openmodel.notes_by_rep([]) == ""


def _blob(ms: float, n: int = 200) -> str:
    h = HdrHistogram(1, 120_000_000, 2)
    h.record_value(int(ms * 1000), n)
    return records.encode(h)


def _open_step(p99_ms: float, sent_p99_ms: float, lag_ms: float, failed: int = 0,
               polls: list[Any] | None = None, rate: float = 200.0) -> dict[str, Any]:
    """One 1 s step, 200 offered, each request taking p99_ms from its schedule, sent_p99_ms from the send."""
    shape = {"stages": [{"start": 0.0, "end": 1.0, "rate": rate}]}
    acc = {0: [200, failed, [_blob(p99_ms)], 200, 0, 0, [_blob(sent_p99_ms)], [_blob(lag_ms)]]}
    run = {"generator": {"polls": polls or []}}
    (step,) = openmodel.open_steps(shape, acc, 100.0, run, {"open_sustainable_rps": 2000.0}, 100.0)
    return step


def test_a_miss_the_servers_own_answers_show_is_the_servers_whatever_the_generators_lag() -> None:
    # Lagging starts past a saturated server's knee: timed from the send its answers missed the SLO too.
    step = _open_step(p99_ms=500, sent_p99_ms=450, lag_ms=60)
    assert step["generator_limited"] and not step["meets_slo"] and step["servers_miss"]
    cap = openmodel.capacity([_step(100), step], 100, sustainable=2000)
    assert cap and cap["limited_by"] == "server" and cap["capacity_rps"] == 100 and not cap["lower_bound"]
    # Timed from the send it missed by less than the lag: a loop that starts requests late reads their
    # answers late too, so the miss may be the generator's.
    assert not _open_step(p99_ms=200, sent_p99_ms=140, lag_ms=60)["servers_miss"]
    # Requests failed: late starts explain no failure.
    assert _open_step(p99_ms=150, sent_p99_ms=50, lag_ms=60, failed=10)["servers_miss"]
    # The lag alone put p99 over the SLO: the server answered in time once asked; the miss is in doubt.
    step = _open_step(p99_ms=150, sent_p99_ms=50, lag_ms=100)
    assert step["generator_limited"] and not step["meets_slo"] and not step["servers_miss"]
    cap = openmodel.capacity([_step(100), step], 100, sustainable=2000)
    assert cap and cap["limited_by"] == "generator" and cap["capacity_rps"] == 100 and cap["lower_bound"]
    # Locust at a full core: even the time from the send is its own, so no miss is the server's for sure.
    busy = [[100.0, {"1": 0.0}], [100.5, {"1": 0.49}], [101.0, {"1": 0.98}]]
    step = _open_step(p99_ms=500, sent_p99_ms=450, lag_ms=60, polls=busy)
    assert step["generator_saturated"] and not step["servers_miss"]
    # So is a rate above the generator's calibrated sustainable one.
    assert _open_step(p99_ms=500, sent_p99_ms=450, lag_ms=60, rate=2500.0)["generator_saturated"]
    # Without lag a miss is the server's, as ever.
    step = _open_step(p99_ms=500, sent_p99_ms=450, lag_ms=1)
    assert not step["generator_limited"] and step["servers_miss"]


def test_the_fine_steps_follow_the_knee_found_so_far() -> None:
    server = {"capacity_rps": 870.0, "lower_bound": False}
    # After repetition 1: its capacity (coarse steps can put it well below the knee).
    assert catalogue.next_knee([870.0], server, None, 870.0) == 870.0
    # After more: the median, so one far-off repetition does not place them all.
    assert catalogue.next_knee([870.0, 1491.0], {"capacity_rps": 1491.0}, 870.0, 870.0) == 1180.5
    assert catalogue.next_knee([870.0, 1491.0, 1453.0], {"capacity_rps": 1453.0}, 1180.5, 870.0) == 1453.0
    # A repetition whose steps ran out below its knee: the next starts from that bound at least.
    bound = {"capacity_rps": 1783.0, "lower_bound": True}
    assert catalogue.next_knee([870.0, 1783.0], bound, 870.0, 870.0) == 1783.0
    # Every step missed and nothing found yet: half the first step; later, where it was.
    missed = {"capacity_rps": None, "lower_bound": False}
    assert catalogue.next_knee([], missed, None, 570.0) == 285.0
    assert catalogue.next_knee([], missed, 400.0, 570.0) == 400.0


def test_requests_in_flight_when_the_run_ended_count_when_the_generator_saw_them_overdue() -> None:
    # The last step of a CI run: 186 offered, 135 answered within the SLO, 51 still in flight when Locust
    # stopped; as the step ended the generator counted 6 of them waiting past the SLO. The records hold
    # only the 135, so the step's own p99 met the SLO; the generator's miss stands for the rest.
    judged: dict[str, Any] = {"rate": 373.0, "met": False,
                              "miss": "6 of 186 failed, dropped or still waiting past the SLO"}
    shape = {"stages": [{"start": 0.0, "end": 0.5, "rate": 373.0}], "extension": {"judged": [judged]}}
    acc = {0: [135, 0, [_blob(178, 135)], 186, 0, 0, [_blob(176, 135)], [_blob(3, 135)]]}
    run: dict[str, Any] = {"generator": {"polls": []}}
    (step,) = openmodel.open_steps(shape, acc, 100.0, run, {"open_sustainable_rps": 2000.0}, 200.0)
    assert step["unanswered"] == 51 and not step["meets_slo"] and step["servers_miss"], step
    assert "51 of 186 unanswered when the run ended" in step["misses"][0]
    # Every request answered: the step is judged from its records alone, whatever the generator said.
    judged["miss"] = "p99 210 ms >= 200 ms"
    acc = {0: [186, 0, [_blob(178, 186)], 186, 0, 0, [_blob(176, 186)], [_blob(3, 186)]]}
    (step,) = openmodel.open_steps(shape, acc, 100.0, run, {"open_sustainable_rps": 2000.0}, 200.0)
    assert step["unanswered"] == 0 and step["meets_slo"], step
