"""The latency-dimension table: per server and added RTT, peak threads, RSS, connections and p99."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lab.fmt import fmt_bytes

HEAD = ("server", "+RTT ms", "offered/s", "achieved/s", "errors", "probe ms", "p50 ms", "p99 ms",
        "threads", "RSS", "conns", "load CPU %")


def cells(row: Mapping[str, Any]) -> list[str]:
    return [str(row["server"]), f"{row['rtt_ms']:g}", f"{row['offered_rps']:g}", f"{row['achieved_rps']:g}",
            str(row["errors"]), f"{row['probe_ms']:g}", f"{row['p50_ms']:g}", f"{row['p99_ms']:g}",
            f"{row['idle_threads']}->{row['peak_threads']}", fmt_bytes(row["peak_rss_bytes"]),
            str(row["peak_connections"]), f"{row['load_cpu_percent']:g}"]


def one_line(row: Mapping[str, Any]) -> str:
    return ", ".join(f"{h} {c}" for h, c in zip(HEAD[1:], cells(row)[1:], strict=True))


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(lines)
