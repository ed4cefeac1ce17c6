"""Small inline-SVG charts for the reports: a line chart with several series and a grouped bar chart.

No plotting dependency and no JavaScript: each function returns one `<svg>` element as a string, with
axes, ticks, a legend and `<title>` tooltips. Every chart carries `data-plot="<id>"` so tests can
find it. Sizes are in viewBox units; the page's CSS scales the SVG to its column.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 640, 300
LEFT, RIGHT, TOP, BOTTOM = 62, 18, 44, 44  # plot-area margins (legend above, x label below)
# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#7f7f7f", "#F0E442")
MARKERS_UP_TO = 12  # draw a dot per point when a series is this short
HEADROOM = 1.04  # a line at the maximum stays clear of the top edge

Fmt = Callable[[float], str]


@dataclass(frozen=True)
class Line:
    name: str
    xs: Sequence[float]
    ys: Sequence[float | None]  # None breaks the line
    color: str


@dataclass(frozen=True)
class Bars:
    name: str
    values: Sequence[float | None]  # one per group
    color: str
    lows: Sequence[float | None] | None = None  # optional whisker, e.g. the min..max of repetitions
    highs: Sequence[float | None] | None = None


def short(v: float) -> str:
    """Compact tick label: 1.5k, 20M, 0.25."""
    a = abs(v)
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= size:
            return f"{v / size:.3g}{suffix}"
    return f"{v:.3g}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering lo..hi (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    if not hi > lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks = [first]
    while ticks[-1] < hi - 1e-9 * step and len(ticks) < 50:
        ticks.append(round(first + len(ticks) * step, 12))
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten covering lo..hi (> 0), with 2 and 5 in between when the range is short."""
    lo_dec, hi_dec = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if hi_dec == lo_dec:
        hi_dec += 1
    mults = (1, 2, 5) if hi_dec - lo_dec <= 2 else (1,)
    ticks = [m * 10.0**d for d in range(lo_dec, hi_dec) for m in mults]
    ticks.append(10.0**hi_dec)
    # Trim to the ticks just around the data.
    below = [t for t in ticks if t <= lo]
    above = [t for t in ticks if t >= hi]
    return [t for t in ticks if (below[-1] if below else ticks[0]) <= t <= (above[0] if above else ticks[-1])]


class Scale:
    """Maps data values to pixels, linear or logarithmic."""

    def __init__(self, lo: float, hi: float, px_lo: float, px_hi: float, log: bool = False) -> None:
        self.log = log
        self.lo, self.hi = (math.log10(lo), math.log10(hi)) if log else (lo, hi)
        self.px_lo, self.px_hi = px_lo, px_hi

    def __call__(self, v: float) -> float:
        if self.log:
            v = math.log10(max(v, 10**self.lo))
        span = (self.hi - self.lo) or 1.0
        return round(self.px_lo + (v - self.lo) / span * (self.px_hi - self.px_lo), 1)


def _y_axis(values: Sequence[float], log: bool, zero: bool) -> tuple[list[float], Scale]:
    positive = [v for v in values if v > 0]
    if log and positive:
        ticks = log_ticks(min(positive), max(positive))
    else:
        lo = min([*values, 0.0] if zero else values, default=0.0)
        ticks = nice_ticks(lo, max(values, default=1.0) * HEADROOM)
        log = False
    return ticks, Scale(ticks[0], ticks[-1], HEIGHT - BOTTOM, TOP, log)


def _frame(plot_id: str, title: str, body: list[str], legend: Sequence[tuple[str, str]],
           x_label: str, y_label: str) -> str:
    out = [f'<svg class="chart" data-plot="{escape(plot_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
           f'role="img" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    out += body
    x = LEFT
    for name, color in legend:  # one row above the plot area
        out.append(f'<rect class="swatch" x="{x}" y="12" width="12" height="12" rx="2" fill="{color}"/>'
                   f'<text class="legend" x="{x + 17}" y="22">{escape(name)}</text>')
        x += 17 + 7 * len(name) + 18
    out.append(f'<text class="axis-label" x="{LEFT + (WIDTH - LEFT - RIGHT) / 2}" y="{HEIGHT - 8}" '
               f'text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text class="axis-label" transform="translate(14 {TOP + (HEIGHT - TOP - BOTTOM) / 2}) '
               f'rotate(-90)" text-anchor="middle">{escape(y_label)}</text>')
    out.append("</svg>")
    return "".join(out)


def _y_grid(ticks: Sequence[float], ys: Scale, fmt: Fmt) -> list[str]:
    out = []
    for t in ticks:
        y = ys(t)
        out.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}"/>'
                   f'<text class="tick" x="{LEFT - 6}" y="{y + 4}" text-anchor="end">{escape(fmt(t))}</text>')
    return out


def empty_chart(plot_id: str, title: str, message: str) -> str:
    """A placeholder that says why there is nothing to draw (still one data-plot element)."""
    return (f'<svg class="chart empty" data-plot="{escape(plot_id)}" data-empty="1" viewBox="0 0 {WIDTH} 80" '
            f'role="img" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
            f'<text class="tick" x="{WIDTH / 2}" y="44" text-anchor="middle">{escape(message)}</text></svg>')


def line_chart(plot_id: str, title: str, lines: Sequence[Line], *, x_label: str, y_label: str,
               log_y: bool = False, zero: bool = True, band: tuple[float, float] | None = None,
               band_label: str = "", fmt_y: Fmt = short, fmt_point: Fmt = short) -> str:
    """Several series over a shared x axis; `band` shades an x range (e.g. the measured window)."""
    xs = [x for ln in lines for x, y in zip(ln.xs, ln.ys, strict=False) if y is not None]
    ys_all = [y for ln in lines for y in ln.ys if y is not None]
    if not xs:
        return empty_chart(plot_id, title, "no data recorded")
    x_lo, x_hi = min(xs), max(xs)
    if band:
        x_lo, x_hi = min(x_lo, band[0]), max(x_hi, band[1])
    x_ticks = nice_ticks(x_lo, x_hi, 6)
    sx = Scale(x_ticks[0], x_ticks[-1], LEFT, WIDTH - RIGHT)
    y_ticks, sy = _y_axis(ys_all, log_y, zero)
    body: list[str] = []
    if band:
        body.append(f'<rect class="band" x="{sx(band[0])}" y="{TOP}" width="{sx(band[1]) - sx(band[0])}" '
                    f'height="{HEIGHT - TOP - BOTTOM}"><title>{escape(band_label)}</title></rect>')
        if band_label:
            body.append(f'<text class="band-label" x="{sx(band[0]) + 4}" y="{HEIGHT - BOTTOM - 5}">'
                        f'{escape(band_label)}</text>')
    body += _y_grid(y_ticks, sy, fmt_y)
    for t in x_ticks:
        body.append(f'<text class="tick" x="{sx(t)}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
                    f'{escape(short(t))}</text>')
    body.append(f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{HEIGHT - BOTTOM}" '
                f'y2="{HEIGHT - BOTTOM}"/>')
    for ln in lines:
        points = list(zip(ln.xs, ln.ys, strict=False))
        d, pen = [], False
        for x, y in points:
            if y is None:
                pen = False
                continue
            d.append(f"{'L' if pen else 'M'}{sx(x)},{sy(y)}")
            pen = True
        if not d:
            continue
        path = "".join(d)
        body.append(f'<path class="series" d="{path}" stroke="{ln.color}" fill="none">'
                    f'<title>{escape(ln.name)}</title></path>')
        drawn = [(x, y) for x, y in points if y is not None]
        if len(drawn) <= MARKERS_UP_TO:
            for x, y in drawn:
                body.append(f'<circle class="dot" cx="{sx(x)}" cy="{sy(y)}" r="3" fill="{ln.color}">'
                            f'<title>{escape(ln.name)}: {escape(fmt_point(y))} at {x:g} s</title></circle>')
    legend = [(ln.name, ln.color) for ln in lines]
    return _frame(plot_id, title, body, legend, x_label, y_label + (" (log scale)" if sy.log else ""))


def bar_chart(plot_id: str, title: str, groups: Sequence[str], bars: Sequence[Bars], *, y_label: str,
              x_label: str = "", log_y: bool = False, fmt_y: Fmt = short, fmt_value: Fmt = short) -> str:
    """Groups along x (e.g. percentiles), one bar per series in each group (e.g. servers)."""
    values = [v for b in bars for v in [*b.values, *(b.highs or ())] if v is not None]
    if not values or not groups:
        return empty_chart(plot_id, title, "no data recorded")
    y_ticks, sy = _y_axis(values, log_y, zero=True)
    base = sy(y_ticks[0])
    body = _y_grid(y_ticks, sy, fmt_y)
    group_w = (WIDTH - LEFT - RIGHT) / len(groups)
    bar_w = min(48.0, group_w * 0.8 / max(1, len(bars)))
    for g, group in enumerate(groups):
        left = LEFT + g * group_w + (group_w - bar_w * len(bars)) / 2
        body.append(f'<text class="tick" x="{LEFT + (g + 0.5) * group_w:.1f}" y="{HEIGHT - BOTTOM + 16}" '
                    f'text-anchor="middle">{escape(group)}</text>')
        for i, b in enumerate(bars):
            v = b.values[g] if g < len(b.values) else None
            if v is None:
                continue
            x = round(left + i * bar_w, 1)
            top = sy(v) if v > 0 or not sy.log else base
            tip = f"{b.name}, {group}: {fmt_value(v)}"
            lo = b.lows[g] if b.lows and g < len(b.lows) else None
            hi = b.highs[g] if b.highs and g < len(b.highs) else None
            if lo is not None and hi is not None:
                tip += f" (range {fmt_value(lo)} to {fmt_value(hi)})"
            body.append(f'<rect class="bar" x="{x}" y="{min(top, base)}" width="{bar_w - 2:.1f}" '
                        f'height="{max(abs(base - top), 1.0):.1f}" fill="{b.color}">'
                        f"<title>{escape(tip)}</title></rect>")
            if lo is not None and hi is not None:
                cx = round(x + (bar_w - 2) / 2, 1)
                body.append(f'<path class="whisker" d="M{cx},{sy(lo)}V{sy(hi)}M{cx - 5},{sy(lo)}H{cx + 5}'
                            f'M{cx - 5},{sy(hi)}H{cx + 5}"><title>{escape(tip)}</title></path>')
    body.append(f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base}" y2="{base}"/>')
    legend = [(b.name, b.color) for b in bars]
    return _frame(plot_id, title, body, legend, x_label, y_label + (" (log scale)" if sy.log else ""))
