"""The full-core phase of a repetition: the server's CPU budget lifted at the moment the load shape says.

A budgeted repetition measures throughput and latency under the budget. CPU per request comes from a
second window right after it, on the same server process and load, with the quota lifted: the server
then has its whole CPU and answers at the rate the load generator sustains. The budget's throttling
charges each request an overhead a full core does not, and bends the ratios between the models
(docs/method.md#cpu-per-request-at-a-full-core).

The Locust shape picks the moment (split.json in the records folder, written when measuring starts).
A thread here waits for it, reads the group's CPU counter and lifts the quota at that moment, so the
two windows split the server's CPU time exactly; stop() puts the quota back.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from lab.stack import cpu_budget

SPLIT_FILE = "split.json"
POLL_SECONDS = 0.02


class FullCore:
    """start() before Locust starts; stop() once it has ended: the mark of the split, or None."""

    def __init__(self, budget: cpu_budget.CpuBudget, records: Path, max_seconds: float) -> None:
        self.budget, self.records, self.max_seconds = budget, records, max_seconds
        self.mark: dict[str, Any] | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="full-core", daemon=True)

    def start(self) -> FullCore:
        self._thread.start()
        return self

    def _split_at(self) -> float | None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            return float(json.loads((self.records / SPLIT_FILE).read_text(encoding="utf-8"))["split_at"])
        return None

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        split_at = None
        while split_at is None and time.monotonic() < deadline:  # bounded: the job's hard timeout
            split_at = self._split_at()
            if split_at is None and self._stop.wait(POLL_SECONDS):
                return
        if split_at is None or self._stop.wait(max(0.0, split_at - time.time())):
            return
        usage_file = self.budget.usage_file
        used = cpu_budget.read_usage(usage_file) if usage_file else None
        at = time.time()
        try:
            self.budget.set_limited(False)
        except (OSError, cpu_budget.BudgetError) as exc:
            self.error = f"could not lift the CPU budget for the full-core phase: {exc}"
            return
        self.mark = {"split_at": split_at, "lifted_at": at, "late_ms": round((at - split_at) * 1000, 3),
                     "cgroup_cpu_seconds": used}

    def stop(self) -> dict[str, Any] | None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.mark is not None:
            with contextlib.suppress(OSError, cpu_budget.BudgetError):
                self.budget.set_limited(True)
        return self.mark
