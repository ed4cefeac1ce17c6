"""Compare two `make claims` runs (two machines, say): `make compare A=<claims-id> B=<claims-id>`.

Writes compare.md and compare.html into reports/compare-<A>-vs-<B>/: both machines, then each
claim with A's and B's figure and verdict and the ratio B/A of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from lab.claims import report
from lab.report import markup

REPORTS = Path(__file__).resolve().parents[2] / "reports"


def find(arg: str | Path) -> Path | None:
    """The claims run folder for a path or an id under reports/, or None when it holds no claims.json."""
    base = Path(os.environ.get("LAB_REPORTS_DIR") or REPORTS)
    for candidate in (Path(arg), base / str(arg)):
        if (candidate / "claims.json").is_file():
            return candidate.resolve()
    return None


def both_claims(a: str | Path, b: str | Path) -> bool:
    return find(a) is not None and find(b) is not None


def load(run: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run / "claims.json").read_text())
    return data


def rows(a: dict[str, Any], b: dict[str, Any]) -> list[list[str]]:
    """Per claim: folk, A figure, A verdict, B figure, B verdict, B/A."""
    by_a = {c["id"]: c for c in a.get("claims", [])}
    by_b = {c["id"]: c for c in b.get("claims", [])}
    out = []
    for cid in dict.fromkeys([*by_a, *by_b]):
        ca, cb = by_a.get(cid), by_b.get(cid)
        va, vb = (ca or {}).get("value"), (cb or {}).get("value")
        ratio = (
            f"{vb / va:.2f}×" if isinstance(va, int | float) and isinstance(vb, int | float) and va else "n/a"
        )
        out.append(
            [
                (ca or cb or {}).get("folk", cid),
                ca["figure"] if ca else "not measured",
                ca["verdict"] if ca else "",
                cb["figure"] if cb else "not measured",
                cb["verdict"] if cb else "",
                ratio,
            ]
        )
    return out


HEADER = ["Folk claim", "A: measured", "A: verdict", "B: measured", "B: verdict", "B / A"]


def render_md(a: dict[str, Any], b: dict[str, Any]) -> str:
    lines = [
        f"# Claims compared: {a['id']} (A) vs {b['id']} (B)",
        "",
        f"- A: {report.machine_line(a)}; `{a['command']}`",
        f"- B: {report.machine_line(b)}; `{b['command']}`",
        "",
    ]
    lines += report.md_table(HEADER, rows(a, b))
    return "\n".join(lines) + "\n"


def render_html(a: dict[str, Any], b: dict[str, Any]) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>claims {escape(a['id'])} vs {escape(b['id'])}</title>"
        f"<style>{markup.CSS}{report.VERDICT_CSS}</style></head><body><main>"
        f"<header><h1>Claims compared: {escape(a['id'])} (A) vs {escape(b['id'])} (B)</h1>"
        f'<p class="sub">A: {escape(report.machine_line(a))}<br>'
        f"B: {escape(report.machine_line(b))}</p></header>"
        f'<section class="card">{report.table(HEADER, rows(a, b))}</section></main></body></html>'
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab compare", description=__doc__)
    p.add_argument("a", help="claims run A: reports/<claims-id> or its id")
    p.add_argument("b", help="claims run B: reports/<claims-id> or its id")
    p.add_argument("--out", type=Path, help="output folder (default: compare-<A>-vs-<B> beside run A)")
    args = p.parse_args(argv)
    a_dir, b_dir = find(args.a), find(args.b)
    if a_dir is None or b_dir is None:
        missing = args.a if a_dir is None else args.b
        print(
            f"compare: {missing} holds no claims.json; pass two `make claims` runs (ls reports/)",
            file=sys.stderr,
        )
        return 2
    if a_dir == b_dir:
        print(f"compare: A and B are the same run ({a_dir}); pass two different runs", file=sys.stderr)
        return 2
    a, b = load(a_dir), load(b_dir)
    a["id"], b["id"] = a_dir.name, b_dir.name  # as the person named them (a copied run keeps its old id)
    out = args.out or a_dir.parent / f"compare-{a_dir.name}-vs-{b_dir.name}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(render_md(a, b))
    (out / "compare.html").write_text(render_html(a, b))
    for row in rows(a, b):
        print(f"{row[0]}  A: {row[1]} [{row[2]}]  B: {row[3]} [{row[4]}]  B/A {row[5]}")
    print(f"wrote {out / 'compare.html'}\nwrote {out / 'compare.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
