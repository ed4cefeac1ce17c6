"""The tune chart: one line per server over the swept values, as inline SVG."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from lab.fmt import fmt_value
from lab.report import svgplot

W, H = svgplot.WIDTH, svgplot.HEIGHT


L, R, T, B = svgplot.LEFT, svgplot.RIGHT, svgplot.TOP, svgplot.BOTTOM


def value_chart(plot_id: str, title: str, values: Sequence[float],
                series: Sequence[tuple[str, str, list[Any]]], *, param: str, y_label: str, fmt: svgplot.Fmt,
                log_y: bool = False,
                ref: tuple[float, str] | None = None, picks: Sequence[tuple[float, str, str]] = ()) -> str:
    """One line per server over the swept values, evenly spaced (sweeps are often geometric), with an
    optional horizontal reference (the SLO) and a dashed mark at each server's recommended value."""
    ys_all = [y for _n, _c, ys in series for y in ys if y is not None]
    if not ys_all or not values:
        return svgplot.empty_chart(plot_id, title, "no data recorded")
    if ref is not None:
        ys_all.append(ref[0])
    positive = [y for y in ys_all if y > 0]
    log_y = log_y and bool(positive) and len(positive) == len(ys_all)
    ticks = svgplot.log_ticks(min(positive), max(positive)) if log_y else svgplot.nice_ticks(
        min([*ys_all, 0.0]), max(ys_all))
    sy = svgplot.Scale(ticks[0], ticks[-1], H - B, T, log_y)
    step = (W - L - R) / len(values)

    def sx(i: int) -> float:
        return round(L + (i + 0.5) * step, 1)

    out = [f'<svg class="chart" data-plot="{escape(plot_id)}" viewBox="0 0 {W} {H}" role="img" '
           f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    for t in ticks:
        y = sy(t)
        out.append(f'<line class="grid" x1="{L}" x2="{W - R}" y1="{y}" y2="{y}"/><text class="tick" '
                   f'x="{L - 6}" y="{y + 4}" text-anchor="end">{escape(fmt(t))}</text>')
    for i, v in enumerate(values):
        out.append(f'<text class="tick" x="{sx(i)}" y="{H - B + 16}" text-anchor="middle">'
                   f"{escape(fmt_value(v))}</text>")
    out.append(f'<line class="axis" x1="{L}" x2="{W - R}" y1="{H - B}" y2="{H - B}"/>')
    for value, color, label in picks:
        if value in values:
            x = sx(list(values).index(value))
            out.append(f'<line class="pick" x1="{x}" x2="{x}" y1="{T}" y2="{H - B}" stroke="{color}">'
                       f"<title>{escape(label)}</title></line>")
    if ref is not None:
        y = sy(ref[0])
        out.append(f'<line class="ref" x1="{L}" x2="{W - R}" y1="{y}" y2="{y}"/>'
                   f'<text class="ref-label" x="{W - R - 4}" y="{y - 4}" text-anchor="end">'
                   f"{escape(ref[1])}</text>")
    for name, color, ys in series:
        d, pen = [], False
        for i, y in enumerate(ys):
            if y is None:
                pen = False
                continue
            d.append(f"{'L' if pen else 'M'}{sx(i)},{sy(y)}")
            pen = True
        if d:
            out.append(f'<path class="series" d="{"".join(d)}" stroke="{color}" fill="none">'
                       f"<title>{escape(name)}</title></path>")
        for i, y in enumerate(ys):
            if y is not None:
                out.append(f'<circle class="dot" cx="{sx(i)}" cy="{sy(y)}" r="3.5" fill="{color}"><title>'
                           f"{escape(name)}: {escape(fmt(y))} at {escape(param)}={fmt_value(values[i])}"
                           "</title></circle>")
    x = L
    for name, color, _ys in series:
        out.append(f'<rect class="swatch" x="{x}" y="12" width="12" height="12" rx="2" fill="{color}"/>'
                   f'<text class="legend" x="{x + 17}" y="22">{escape(name)}</text>')
        x += 17 + 7 * len(name) + 18
    out.append(f'<text class="axis-label" x="{L + (W - L - R) / 2}" y="{H - 8}" text-anchor="middle">'
               f"{escape(param)}</text>")
    out.append(f'<text class="axis-label" transform="translate(14 {T + (H - T - B) / 2}) rotate(-90)" '
               f'text-anchor="middle">{escape(y_label + (" (log scale)" if log_y else ""))}</text></svg>')
    return "".join(out)
