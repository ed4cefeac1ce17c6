"""lab/fmt.py: one text for one figure on every page (three significant digits, "3.2%" with no space)."""

from __future__ import annotations

import pytest

from lab.fmt import fmt_bytes, fmt_ms, fmt_num, fmt_pct, fmt_rps, fmt_seconds, fmt_value

pytestmark = pytest.mark.unit


def test_numbers_have_three_significant_digits_and_separated_thousands() -> None:
    assert [fmt_num(v) for v in (2259.7, 45.83, 7.987, 5, 0.0312, -12.34, 0, None)] == \
        ["2,260", "45.8", "7.99", "5", "0.0312", "-12.3", "0", "-"]
    assert fmt_num(1234.5, digits=5) == "1,234.5"


def test_units_ride_on_the_same_digits() -> None:
    assert [fmt_ms(v) for v in (0.43, 12.0, 1234.6, None)] == ["0.430 ms", "12 ms", "1,235 ms", "-"]
    assert [fmt_bytes(v) for v in (512, 45752320, 3 * 2**30, None)] == ["512 B", "43.6 MiB", "3 GiB", "-"]
    assert [fmt_rps(v) for v in (2259.7, 0.4, None)] == ["2,260", "0", "-"]


def test_percent_has_no_space_and_tiny_rates_stay_visible() -> None:
    assert [fmt_pct(v) for v in (0.032, 0.01, 0.5, 1.0, 0.0058, 0.00005, 0, None)] == \
        ["3.2%", "1%", "50%", "100%", "0.58%", "<0.01%", "0%", "-"]
    assert fmt_pct(0.25, signed=True) == "+25%" and fmt_pct(-0.25, signed=True) == "-25%"
    assert fmt_pct(-0.00005) == ">-0.01%"


def test_knob_values_and_durations() -> None:
    assert [fmt_value(v) for v in (8, 8.0, 0.25, 1e-3)] == ["8", "8", "0.25", "0.001"]
    assert [fmt_seconds(s) for s in (0.4, 45, 59.6, 187, -3)] == ["0s", "45s", "1m00s", "3m07s", "0s"]
