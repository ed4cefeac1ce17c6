"""A forest plot as inline SVG: one row per entry, its B/A ratio with the 95 % interval on a log axis,
the margin drawn as a band around 1; what compare.html opens with."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from lab.report.svgplot import Scale, log_ticks

WIDTH = 640
LABEL = 170  # the entries' names, left of the plot area
RIGHT, TOP, BOTTOM, ROW = 70, 30, 40, 20
CLIP = (0.2, 5.0)  # ratios beyond are drawn at the edge with an arrow
COLORS = {"better": "#1a7f37", "worse": "#b42318", "higher": "#0b5cad", "lower": "#0b5cad"}
LINE_COLORS = {**COLORS, "common": "#8250df"}
QUIET = "#6e7781"
COMMON = "common"  # a scenario's common move (the machine's), not an entry: drawn as a purple diamond
COMMON_COLOR = "#8250df"


@dataclass(frozen=True)
class Row:
    label: str  # e.g. "asyncio/json"
    ratio: float | None  # B / A; None: not compared
    ci: tuple[float, float] | None  # its 95 % interval; None: not tested
    mark: str  # the compare's mark: better, worse, within noise, not compared, ...
    note: str = ""  # the tooltip: confidence and what it could see


def _ticks(lo: float, hi: float) -> list[float]:
    ticks = log_ticks(lo, hi)
    return ticks if len(ticks) <= 9 else ticks[:: math.ceil(len(ticks) / 9)]


def forest(plot_id: str, title: str, rows: Sequence[Row], margin: float) -> str:
    """The ratios of `rows` against 1 (no change), with the band 1/(1+margin)..1+margin shaded."""
    height = TOP + ROW * max(1, len(rows)) + BOTTOM
    values = [v for r in rows for v in ((r.ratio,) + (r.ci or ())) if v is not None and v > 0]
    lo = max(CLIP[0], min([*values, 1 / (1 + margin)]) / 1.05)
    hi = min(CLIP[1], max([*values, 1 + margin]) * 1.05)
    ticks = _ticks(lo, hi)
    xs = Scale(min(ticks[0], lo), max(ticks[-1], hi), LABEL, WIDTH - RIGHT, log=True)
    out = [f'<svg class="chart forest" data-plot="{escape(plot_id)}" viewBox="0 0 {WIDTH} {height}" '
           f'role="img" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    bottom = height - BOTTOM
    band_lo, band_hi = xs(1 / (1 + margin)), xs(1 + margin)
    out.append(f'<rect class="band" x="{band_lo}" y="{TOP - 6}" width="{round(band_hi - band_lo, 1)}" '
               f'height="{bottom - TOP + 6}" fill="#eef1f5"><title>margin ±{margin:.0%}: a change inside it '
               f"is no change</title></rect>")
    for t in ticks:
        x = xs(t)
        out.append(f'<line class="grid" x1="{x}" x2="{x}" y1="{TOP - 6}" y2="{bottom}"/>'
                   f'<text class="tick" x="{x}" y="{bottom + 14}" text-anchor="middle">{t:g}</text>')
    one = xs(1.0)
    out.append(f'<line class="axis" x1="{one}" x2="{one}" y1="{TOP - 6}" y2="{bottom}" stroke="#8c959f"/>')
    out.append(f'<text class="legend" x="{LABEL}" y="16">{escape(title)}</text>'
               f'<text class="tick" x="{WIDTH - RIGHT}" y="16" text-anchor="end">band: margin ±{margin:.0%}'
               "</text>")
    for i, r in enumerate(rows):
        y = TOP + ROW * i + ROW / 2
        color = LINE_COLORS.get(r.mark, QUIET)
        out.append(f'<g class="row" data-label="{escape(r.label)}" data-mark="{escape(r.mark)}">'
                   f"<title>{escape(r.label)}: {escape(r.note or r.mark)}</title>"
                   f'<text class="tick" x="{LABEL - 8}" y="{y + 4}" text-anchor="end">'
                   f"{escape(r.label)}</text>")
        if r.ratio is None or r.ratio <= 0:
            out.append(f'<text class="tick" x="{one + 6}" y="{y + 4}">{escape(r.mark)}</text></g>')
            continue
        if r.ci is not None:
            a, b = (min(max(v, xs_lo(xs)), xs_hi(xs)) for v in r.ci)
            out.append(f'<line class="ci" x1="{xs(a)}" x2="{xs(b)}" y1="{y}" y2="{y}" stroke="{color}" '
                       f'stroke-width="2"/>')
        v = min(max(r.ratio, xs_lo(xs)), xs_hi(xs))
        fill = color if r.mark in COLORS else "#fff"  # hollow: within noise
        if r.mark == COMMON:
            x = xs(v)
            out.append(f'<polygon class="common" points="{x},{y - 5} {x + 5},{y} {x},{y + 5} {x - 5},{y}" '
                       f'fill="{COMMON_COLOR}"/>')
        else:
            out.append(f'<circle class="dot" cx="{xs(v)}" cy="{y}" r="4" fill="{fill}" stroke="{color}" '
                       f'stroke-width="1.5"/>')
        out.append(f'<text class="tick" x="{WIDTH - RIGHT + 6}" y="{y + 4}">x{r.ratio:.2f}</text></g>')
    out.append(f'<text class="axis-label" x="{LABEL + (WIDTH - RIGHT - LABEL) / 2}" y="{height - 6}" '
               'text-anchor="middle">B / A (log scale; 1 = no change)</text></svg>')
    return "".join(out)


def xs_lo(xs: Scale) -> float:
    return float(10**xs.lo)


def xs_hi(xs: Scale) -> float:
    return float(10**xs.hi)
