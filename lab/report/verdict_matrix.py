"""The verdict matrix as a run's pages show it first: scenario x headline figure, HTML and Markdown."""

from __future__ import annotations

from html import escape
from typing import Any

from lab.report.markup import anchor, md_table
from lab.results import matrix, stats
from lab.results.headline import Entry
from lab.results.matrix import Cell

CSS = """
table.matrix{font-size:13.5px;width:100%;table-layout:fixed}
table.matrix th:first-child{width:12%}
table.matrix td,table.matrix th{text-align:left;white-space:normal;vertical-align:top;padding:8px 10px}
table.matrix td.winner{background:#e6f4ea}
table.matrix td.tie{background:#f3f4f6;color:#3d4450}
table.matrix td.other{color:#5b6470;background:#fafbfc}
table.matrix b{display:block}
table.matrix small{display:block;color:#5b6470;font-size:12px}
"""


def margin_of(data: dict[str, Any], given: float | None = None) -> float:
    """The margin between servers the pages judge with: `given` (a flag), else the one results.json's
    verdicts were built with, else LAB_MARGIN_WITHIN or the rule's default."""
    if given is not None:
        return given
    recorded = ((data.get("verdicts") or {}).get("rule") or {}).get("margin")
    return float(recorded) if isinstance(recorded, int | float) else stats.margin(stats.WITHIN)


def rule_note(margin: float) -> str:
    return (f"Each cell: the best server on the figure against the runner-up. A winner only when the "
            f"repetitions show the difference exceeds {margin:.0%} (the margin between servers of one run, "
            f"{stats.MARGIN_VARS[stats.WITHIN]}), one-sided t-test on the logs, p < {stats.ALPHA:g}; the "
            f"ratio is winner / runner-up with its 95% interval. A tie says the change it could have seen: "
            f"the minimum detectable effect at {stats.POWER:.0%} power, from the repetitions' scatter, never "
            f"less than the margin (or the figure's own floor: p99 30%, memory per connection 50%). Hover a "
            f"cell for p and the repetitions a side that {stats.TARGET:.0%} would take. A capacity some "
            f"repetitions only bound from below (the generator or the steps stopped before the SLO was "
            f"missed) is judged on them as measured: a winner on lower bounds stands, a verdict against "
            f"them is not judged, a tie with them on one side is 'at least tie'.")


def _html_cell(c: Cell) -> str:
    d = c.decision
    if c.state == "winner" and d is not None and d.ratio is not None:
        ci = f" [{d.ci[0]:.2f}-{d.ci[1]:.2f}]" if d.ci else ""
        body = (f"<b>{escape(c.winner or '')}</b>{d.ratio:.2f}x{ci}"
                f"<small>vs {escape(c.runner_up or '')}</small>")
        body += f"<small>{escape(c.note)}</small>" if c.note else ""  # it stands on lower bounds
        cls = "winner"
    elif c.state in ("tie", "at least tie"):
        seen = d.could_see() if d is not None else ""
        body = f"<b>{escape(c.state)}</b>" + (f"could see {escape(seen)}" if seen else "")
        body += f"<small>{escape(c.winner or '')} vs {escape(c.runner_up or '')}</small>"
        body += f"<small>{escape(c.note)}</small>" if c.note else ""
        cls = "tie"
    else:
        seen = d.could_see() if d is not None and c.state == "not judged" else ""
        body = (f"<b>{escape(c.state)}</b>" + (f"could see {escape(seen)}" if seen else "")
                + (f"<small>{escape(c.note)}</small>" if c.note else ""))
        cls = "other"
    return (f'<td class="{cls}" data-column="{c.column}" data-state="{escape(c.state)}" '
            f'title="{escape(c.detail())}">{body}</td>')


def html(entries: list[Entry], margin: float) -> str:
    rows = matrix.matrix(entries, margin)
    head = "".join(f"<th>{escape(matrix.LABELS[c])}</th>" for c in matrix.COLUMNS)
    body = "".join(
        f'<tr data-scenario="{escape(s)}"><th><a href="#{anchor(s)}">{escape(s)}</a></th>'
        + "".join(_html_cell(cells[c]) for c in matrix.COLUMNS) + "</tr>"
        for s, cells in rows.items())
    return (f'<div class="table-wrap"><table class="matrix"><thead><tr><th>scenario</th>{head}</tr></thead>'
            f'<tbody>{body}</tbody></table></div><p class="meta">{escape(rule_note(margin))}</p>')


def md(entries: list[Entry], margin: float) -> list[str]:
    rows = matrix.matrix(entries, margin)
    return [*md_table(["scenario", *(matrix.LABELS[c] for c in matrix.COLUMNS)],
                      [[s, *(cells[c].text() for c in matrix.COLUMNS)] for s, cells in rows.items()],
                      right_from=99),
            "", f"_{rule_note(margin)}_"]
