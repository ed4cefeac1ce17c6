"""The load-vs-bench check's rule: an equivalence test on the load/bench ratios over cycles."""

from __future__ import annotations

import pytest

from lab.load_vs_bench import Agreement

pytestmark = pytest.mark.unit


def test_ratios_close_to_one_over_enough_cycles_agree() -> None:
    a = Agreement("asyncio", "json", (0.97, 1.02, 1.0, 0.99, 1.03, 0.98))
    assert a.agrees and a.interval is not None
    assert 0.97 < a.ratio < 1.03 and "agrees within 15%" in a.text()


def test_a_consistent_gap_beyond_the_margin_does_not_agree() -> None:
    a = Agreement("asyncio", "json", (0.80, 0.82, 0.79, 0.81, 0.80, 0.83))
    assert not a.agrees and a.interval is not None and a.interval[1] < 1 / 1.15


def test_noise_alone_is_not_agreement() -> None:
    # Centred on 1, but too noisy to show the ratio is within 15 %: equivalence is not assumed.
    a = Agreement("threaded", "db", (0.6, 1.5, 0.9, 1.2))
    assert 0.9 < a.ratio < 1.1 and not a.agrees and "not shown to agree" in a.text()


def test_one_cycle_has_no_interval_and_does_not_agree() -> None:
    a = Agreement("gevent", "json", (1.0,))
    assert a.interval is None and not a.agrees
