"""A run folder found and its results.json loaded for a report (rebuilt from the raw files when stale)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lab.results import build as results
from lab.results.records import ResultsError

REPO = Path(__file__).resolve().parents[2]
OUTPUTS = frozenset({"results.json", ".results.json.tmp", "index.html", "summary.md", "screenshot.png"})

Entry = dict[str, Any]


class ReportError(RuntimeError):
    """Something a person can fix: the message says what."""


def reports_dir() -> Path:
    return Path(os.environ.get("LAB_REPORTS_DIR") or REPO / "reports")


def find_run(arg: str | Path) -> Path:
    """A run folder from a path or a run id under reports/ (`latest` included), resolved."""
    for candidate in (Path(arg), reports_dir() / str(arg)):
        if candidate.is_dir():
            return candidate.resolve()
    raise ReportError(f"no run folder {str(arg)!r}: pass reports/<run-id> or a run id under {reports_dir()} "
                      "(make load writes one)")


def _raw_files(run_dir: Path) -> Iterable[Path]:
    for root, _dirs, files in os.walk(run_dir):
        for name in files:
            if not (Path(root) == run_dir and name in OUTPUTS):
                yield Path(root) / name


def load_results(run_dir: Path) -> dict[str, Any]:
    """results.json of a run, rebuilt from the raw files first when missing or older than them."""
    out = run_dir / "results.json"
    if (run_dir / "settings.json").exists():
        newest = max((p.stat().st_mtime for p in _raw_files(run_dir)), default=0.0)
        if not out.exists() or out.stat().st_mtime < newest:
            try:
                results.write(run_dir)
            except ResultsError as exc:
                raise ReportError(f"cannot rebuild results.json: {exc}") from None
    if not out.exists():
        raise ReportError(f"{run_dir} has neither results.json nor the raw files of a run (settings.json)")
    try:
        data = json.loads(out.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ReportError(f"{out} is not JSON ({exc}); rebuild it: python -m lab results {run_dir}") from None
    if not isinstance(data, dict) or data.get("schema") != results.SCHEMA:
        raise ReportError(f"{out} is not a serverlab results file")
    if data.get("schema_version") != results.SCHEMA_VERSION:
        raise ReportError(f"{out} has schema version {data.get('schema_version')}, this lab reads "
                          f"{results.SCHEMA_VERSION}; rebuild it: python -m lab results {run_dir}")
    return data


def by_scenario(data: dict[str, Any]) -> list[tuple[str, list[Entry]]]:
    """(scenario, entries in server order), in the run's scenario order."""
    order = list(data.get("scenarios") or []) + [e["scenario"] for e in data["results"]]
    groups = [(s, [e for e in data["results"] if e["scenario"] == s]) for s in dict.fromkeys(order)]
    return [(s, es) for s, es in groups if es]
