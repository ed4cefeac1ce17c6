"""The latency dimension (`python -m lab distance`), run for real: a server behind the fault proxy's
delay at 0 and 50 ms of added RTT, open-model load, figures recorded in distance.json.

Only floors on time are asserted (the proxy sleeps at least RTT/2 each way, whatever the CPU), plus
a generous ceiling so a broken delay (say, per byte) is seen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.load import distance

pytestmark = pytest.mark.integration


def test_added_rtt_shows_in_latency_and_is_recorded(tmp_path: Path, database_url: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_DATABASE_URL", database_url)
    code = distance.main(["--servers", "threaded", "--rtt-ms", "0,50", "--rate", "20", "--seconds", "3",
                          "--reports-dir", str(tmp_path)])
    assert code == 0
    (found,) = tmp_path.glob("distance-*/distance.json")
    points = json.loads(found.read_text())["points"]
    near, far = points
    assert (near["rtt_ms"], far["rtt_ms"]) == (0, 50)
    for point in points:
        assert point["ok"] == point["requests"] == 60, point
        assert point["peak_threads"] > 0 and point["peak_rss_bytes"] > 0 and point["peak_connections"] >= 1
    assert 45 <= far["probe_ms"] - near["probe_ms"] < 500, (near, far)  # the sanity figure: one RTT more
    assert 45 <= far["p50_ms"] - near["p50_ms"] < 500, (near, far)
    assert far["p99_ms"] >= near["p50_ms"] + 45, (near, far)
    assert (found.parent / "distance.md").read_text().startswith("| server |")
