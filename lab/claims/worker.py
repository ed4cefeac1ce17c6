"""Run one measurement in a fresh Python process and read back its one JSON line.

Each variant gets its own interpreter, so gevent's imports (and any monkey-patching) and the
memory of one measurement never leak into the next.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from lab.claims.plan import REPO


class WorkerError(RuntimeError):
    """A measurement process failed; the message quotes its stderr."""


def run(
    module: str, args: Sequence[str], timeout: float, python: str = sys.executable, script: bool = False
) -> dict[str, Any]:
    """`python -m module args` (or `python module-path args` when `script`); its last JSON line."""
    target = [str(REPO / (module.replace(".", "/") + ".py"))] if script else ["-m", module]
    cmd = [python, *target, *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        raise WorkerError(f"{' '.join(cmd[1:])} did not finish within {timeout:.0f}s") from None
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip()[-800:]
        raise WorkerError(f"{' '.join(cmd[1:])} failed (exit {done.returncode}): {tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def emit(result: dict[str, Any]) -> None:
    """The worker side: print the result as one JSON line."""
    print(json.dumps(result), flush=True)
