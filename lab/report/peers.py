"""What `make compare` says of each scenario's peers: which figures are judged relative to them, and the
scenario's common move (the machine's) as lines for compare.md, compare.html, the terminal and the forest."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from lab.report import forest
from lab.results import headline, relative, stats
from lab.results.headline import FIGURES

COMMON = "common move"
WHAT = ("the median B/A of the scenario's servers: the machine's move between the runs, or anything shared "
        "by every server (a kernel, a Python, a library); no server is credited with it, and a change common "
        "to every server shows only here")


def scenarios(a: dict[str, Any], b: dict[str, Any],
              order: Sequence[tuple[str, str]]) -> dict[str, dict[str, relative.Scenario]]:
    """Per scenario, the figures judged relative to peers (where relative.MIN_SERVERS servers or more can
    take part). CPU per request is the verdicts' figure (each repetition at its run's reference speed,
    headline.cpu_figure) when both runs have it for every repetition, else the raw figure."""
    ea = {(e["scenario"], e["server"]): e for e in a["results"]}
    eb = {(e["scenario"], e["server"]): e for e in b["results"]}
    at_speed = all(headline.cpu_figure(d["results"]) is headline.CPU_AT_SPEED for d in (a, b))
    figs = {key: headline.CPU_AT_SPEED if key == "cpu_per_req" and at_speed else FIGURES[key]
            for key in relative.RELATIVE}
    noises = {key: stats.pooled_noise([fig.values(e) for e in [*a["results"], *b["results"]]])
              for key, fig in figs.items()}
    out: dict[str, dict[str, relative.Scenario]] = {}
    for scn in dict.fromkeys(s for s, _ in order):
        both = [(ea[k], eb[k]) for k in order if k[0] == scn]
        for key, fig in figs.items():
            if (found := relative.scenario(fig, both, noises[key])) is not None:
                out.setdefault(scn, {})[key] = found
    return out


def rule(margin: float) -> str:
    """The relative judgement in one paragraph, for the pages' method line."""
    return (f"In a scenario with {relative.MIN_SERVERS} servers or more in both runs, "
            f"{', '.join(FIGURES[k].label for k in relative.RELATIVE)} are judged relative to peers: each "
            "server's B/A over the median B/A of the scenario's other servers, so the machine's move "
            f"between the runs cancels; margin {margin:.0%} ({stats.MARGIN_VARS[stats.PEERS]}, "
            f"{stats.MARGIN_FLAGS[stats.PEERS]}; a figure's own floor where larger), the test's standard "
            "error carrying the peers' median's own uncertainty (a parametric bootstrap from every "
            "server's repetitions). Its B column is A times that ratio: B net of the peers' move. The raw "
            f"row stays, marked 'includes the machine's move', and each scenario's {COMMON} ({WHAT}) is "
            "given with its 95% interval. CPU per request is taken at each run's reference speed where "
            "both runs have every reading. With fewer servers the figure is judged alone, against the "
            "margin between runs.")


def of(commons: Sequence[relative.Common], scenario: str) -> list[relative.Common]:
    return [c for c in commons if c.scenario == scenario]


def md_lines(commons: Sequence[relative.Common], scenario: str) -> list[str]:
    mine = of(commons, scenario)
    if not mine:
        return []
    return [f"**{COMMON.capitalize()} of scenario {scenario}** ({WHAT}): "
            + "; ".join(f"{c.figure} {c.text()}" for c in mine), ""]


def html_block(commons: Sequence[relative.Common], scenario: str) -> str:
    mine = of(commons, scenario)
    if not mine:
        return ""
    items = "".join(f'<li data-common="{escape(c.figure)}">{escape(c.figure)}: {escape(c.text())}</li>'
                    for c in mine)
    return (f'<div class="common" data-scenario="{escape(scenario)}"><p><b>{COMMON.capitalize()} of '
            f"scenario {escape(scenario)}</b> ({escape(WHAT)}):</p><ul class=\"notes\">{items}</ul></div>")


def terminal(commons: Sequence[relative.Common]) -> list[str]:
    """One line per scenario: its common move of each figure judged relative to peers."""
    return [f"{scn}: {COMMON} (the machine's, or shared by every server): "
            + "; ".join(f"{c.figure} {c.text()}" for c in of(commons, scn))
            for scn in dict.fromkeys(c.scenario for c in commons)]


def forest_rows(commons: Sequence[relative.Common], key: str) -> list[forest.Row]:
    """One forest row per scenario: its common move of the figure with this key."""
    return [forest.Row(f"{c.scenario}: {COMMON}", c.ratio, c.ci, forest.COMMON,
                       f"{c.figure} {c.text()}: {WHAT}") for c in commons if c.key == key]
