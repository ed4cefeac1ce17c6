"""The lab-only extra CPU work (LAB_EXTRA_CPU_US) corrects its loop to the asked cost where it runs:
the correction's arithmetic on given timings, and its cadence on real calls."""

from __future__ import annotations

import pytest

from servers import cpuwork

pytestmark = pytest.mark.unit


def test_no_work_is_none() -> None:
    assert cpuwork.Work.for_us(0) is None


def test_a_cold_fixed_cost_is_taken_out_of_the_iterations() -> None:
    work = cpuwork.Work(5.0)
    step, before = work.step_ns, work.iterations
    # every timed call cost 2 µs more than its iterations at the calibrated rate
    work._timed = [2000 + before * step] * cpuwork.SAMPLES
    work._correct()
    assert work.iterations == round(3000 / step) < before
    assert abs(2000 + work.iterations * step - 5000) <= step  # a call now costs the asked 5 µs


def test_a_fixed_cost_above_the_target_leaves_no_iterations() -> None:
    work = cpuwork.Work(1.0)
    work._timed = [5000.0] * cpuwork.SAMPLES
    work._correct()
    assert work.iterations == 0


def test_a_loop_that_runs_as_calibrated_is_left_alone() -> None:
    work = cpuwork.Work(8.0)
    before = work.iterations
    work._timed = [before * work.step_ns] * cpuwork.SAMPLES
    work._correct()
    assert work.iterations == before


def test_one_call_in_sample_every_is_timed_and_each_batch_corrects_once() -> None:
    work = cpuwork.Work(1.0)
    for _ in range(cpuwork.SAMPLE_EVERY * cpuwork.SAMPLES - 1):
        work.run()
    assert work.corrections == 0 and len(work._timed) == cpuwork.SAMPLES - 1
    work.run()
    assert work.corrections == 1 and work._timed == []
