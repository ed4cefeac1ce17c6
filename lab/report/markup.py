"""HTML and Markdown building blocks every report page shares: the stylesheet, tables and anchors."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

CSS = """
:root{--fg:#1f2328;--muted:#5b6470;--bg:#f5f6f8;--card:#fff;--line:#dde2e8;--accent:#0b5cad;
  --accent-bg:#edf4fb;--warn:#8a5a00;--warn-bg:#fff6d6;--bad:#b42318;--bad-bg:#fdeceb;--good:#1a7f37}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
  font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1240px;margin:0 auto;padding:28px 20px 64px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:20px;margin:0 0 8px}
h3{font-size:15px;margin:18px 0 8px}
a{color:var(--accent);text-decoration:none}
a:hover{text-decoration:underline}
.sub{color:var(--muted);margin:0 0 16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:20px 24px;margin:18px 0}
nav.toc ol{margin:6px 0 0;padding-left:22px;columns:2 260px}
.status{display:inline-block;padding:1px 10px;border-radius:12px;font-size:13px;font-weight:600}
.status.ok{background:#e6f4ea;color:var(--good)}
.status.problem{background:var(--bad-bg);color:var(--bad)}
.headline{border-left:4px solid var(--accent);background:var(--accent-bg);padding:10px 14px;
  border-radius:6px;margin:10px 0 14px}
.verdicts dt{font-weight:600;margin-top:8px}
.verdicts dd{margin:2px 0 0 0}
.meta{color:var(--muted);font-size:13px;margin:0 0 8px}
.table-wrap{overflow-x:auto;margin:8px 0}
table{border-collapse:collapse;font-size:12.5px;font-variant-numeric:tabular-nums}
th,td{padding:5px 7px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th{font-weight:600;color:var(--muted);border-bottom:2px solid var(--line);white-space:normal;
  vertical-align:bottom;line-height:1.25}
th[title]{cursor:help;text-decoration:underline dotted}
td:first-child,th:first-child{text-align:left}
table.servers td:last-child,table.servers th:last-child{text-align:left}
table.kv td,table.kv th,table.wide td,table.wide th{text-align:left;white-space:normal}
table.kv td:first-child{color:var(--muted);white-space:nowrap}
tr:hover td{background:#fafbfc}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:6px}
.tag{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;margin-left:2px}
.tag.bound{background:var(--warn-bg);color:var(--warn)}
.tag.problem{background:var(--bad-bg);color:var(--bad)}
ul.notes{padding-left:20px;margin:8px 0}
ul.notes li{margin:2px 0}
li.problem{color:var(--bad)}
li.warning{color:var(--warn)}
li.info{color:var(--muted)}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(430px,1fr));gap:14px;margin-top:14px}
figure{margin:0;border:1px solid var(--line);border-radius:8px;padding:10px 12px 6px;background:#fff;
  min-width:0}
figcaption{font-weight:600;font-size:14px}
figcaption span{display:block;font-weight:400;color:var(--muted);font-size:12px}
svg.chart{width:100%;height:auto;display:block;margin-top:4px}
svg .grid{stroke:#e9ecf0}
svg .axis{stroke:#8c959f}
svg .tick{fill:#5b6470;font-size:11px}
svg .legend{font-size:12px;fill:#1f2328}
svg .axis-label{font-size:12px;fill:#5b6470}
svg .series{stroke-width:2;stroke-linejoin:round;stroke-linecap:round}
svg .band{fill:#eef1f5}
svg .band-label{font-size:11px;fill:#8c959f}
svg .whisker{stroke:#1f2328;stroke-width:1.2;fill:none}
pre{background:#f0f2f5;padding:10px 12px;border-radius:6px;white-space:pre-wrap;word-break:break-all;
  font-size:13px}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:18px;align-items:start;
  margin:18px 0}
.facts .card{margin:0}
.facts>div{display:grid;gap:18px}
footer{color:var(--muted);font-size:12px;margin-top:24px}
@media (max-width:700px){main{padding:16px 10px}.card{padding:14px}.plots,.facts{grid-template-columns:1fr}}
"""

def anchor(scenario: str) -> str:
    return "scenario-" + "".join(c if c.isalnum() else "-" for c in scenario)


def head_cells(header: Sequence[str], hints: Sequence[str] = ()) -> str:
    hints = [*hints, *[""] * len(header)]
    return "".join(f'<th title="{escape(h)}">{escape(t)}</th>' if h else f"<th>{escape(t)}</th>"
                   for t, h in zip(header, hints, strict=False))


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return (f'<div class="table-wrap"><table class="{cls}"><thead><tr>{head_cells(header)}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def kv_table(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<div class="table-wrap"><table class="kv"><tbody>{body}</tbody></table></div>'


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 1) -> list[str]:
    """A pipe table; columns from `right_from` on are right-aligned (numbers)."""
    align = [":--" if i < right_from else "--:" for i in range(len(header))]
    out = ["| " + " | ".join(md_escape(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    return out + ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
