"""The report's calibration rows beside the generator's: the machine's speed and the latest fidelity check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lab.fmt import fmt_num


def speed_rows(speed: dict[str, Any] | None) -> list[tuple[str, str]]:
    """run.speed as one row: the probe's reference speed and its scatter over the repetitions."""
    if not speed:
        return [("machine speed", "not measured (no speed probe reading: LAB_SPEED_PROBE=no, or a busy CPU)")]
    sd = speed.get("log_sd")
    scatter = f", scatter {sd * 100:.1f} % between repetitions" if isinstance(sd, int | float) else ""
    return [("machine speed", f"{fmt_num(speed.get('work_per_cpu_ms'))} probe loops per CPU millisecond "
                              f"over {speed.get('reps')} repetitions{scatter} (the drift control: two runs' "
                              "readings say how far the machine moved)")]


def latest_fidelity(reports: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest fidelity.json of `make selfcheck --fidelity yes` under reports/, with its folder."""
    found = sorted(reports.glob("*/fidelity.json"), key=lambda p: p.stat().st_mtime)
    for path in reversed(found):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict):
            return path.parent, doc
    return None


def fidelity_rows(reports: Path) -> list[tuple[str, str]]:
    """One row per scenario of the latest fidelity check: each server's ratio to asyncio, default over
    full core, and whether it was shown to agree within the margin."""
    found = latest_fidelity(reports)
    if found is None:
        return [("fidelity", "not checked yet: make selfcheck SELFCHECK_ARGS=\"--skip-aa --skip-ab "
                             "--fidelity yes\" compares these ratios with a full core")]
    folder, doc = found
    ratios = [r for r in doc.get("ratios") or [] if r.get("agreement")]
    agree = sum(r.get("verdict") == "agrees" for r in ratios)
    rows = [("fidelity", f"{folder.name}: {agree} of {len(ratios)} ratios to {doc.get('reference')} shown to "
                         f"agree with a full core within {float(doc.get('margin') or 0):.0%} "
                         f"(default / full core, 90 % interval; client: {doc.get('client')})")]
    for scenario in dict.fromkeys(r["scenario"] for r in ratios):
        cells = [f"{r['server']} x{r['agreement']:.3g} [{r['ci'][0]:.3g}-{r['ci'][1]:.3g}] {r['verdict']}"
                 for r in ratios if r["scenario"] == scenario and r.get("ci")]
        rows.append((f"fidelity {scenario}", "; ".join(cells)))
    return rows
