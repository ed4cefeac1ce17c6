"""Numbers as people read them: the one set of formatters for every page, table and progress line."""

from __future__ import annotations

NONE = "-"  # what every formatter prints for a missing figure


def fmt_num(v: float | None, digits: int = 3) -> str:
    """Three significant digits, thousands separated: 2,260 / 45.8 / 7.99; '-' for no figure."""
    if v is None:
        return NONE
    a = abs(v)
    if a >= 10 ** (digits - 1) or float(v).is_integer():
        return f"{v:,.0f}"
    decimals = digits - 1 - int(f"{a:e}".split("e")[1])
    return f"{v:,.{max(0, decimals)}f}"


def fmt_us(v: float | None) -> str:
    """Microseconds with the unit: 312 µs."""
    return NONE if v is None else f"{fmt_num(v)} µs"


def fmt_ms(v: float | None) -> str:
    """Milliseconds with the unit: 45.8 ms."""
    return NONE if v is None else f"{fmt_num(v)} ms"


def fmt_bytes(v: float | None) -> str:
    """Binary units: 1.5 MiB."""
    if v is None:
        return NONE
    for size, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(v) >= size:
            return f"{fmt_num(v / size)} {unit}"
    return f"{v:.0f} B"


def fmt_pct(v: float | None, signed: bool = False) -> str:
    """A fraction as percent, no space before the sign: 0.032 -> 3.2%; tiny non-zero rates stay non-zero."""
    if v is None:
        return NONE
    if v and abs(v) < 0.0001:
        return "<0.01%" if v > 0 else ">-0.01%"
    text = fmt_num(v * 100, 2 if abs(v) < 1 else 3)
    return f"{'+' if signed and v > 0 else ''}{text}%"


def fmt_rps(v: float | None) -> str:
    """Requests per second, whole and thousands separated: 12,345."""
    return NONE if v is None else f"{v:,.0f}"


def fmt_value(v: float) -> str:
    """A knob's value as a person types it: 8, 0.25."""
    return f"{v:g}"


def fmt_seconds(seconds: float) -> str:
    """A duration for progress lines: 45s, 3m07s."""
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
