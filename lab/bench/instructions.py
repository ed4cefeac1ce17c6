"""Instructions per request, counted by valgrind's callgrind: `make bench` with --instructions.

Wall-clock throughput on a shared machine moves by tens of per cent between repetitions (and
so does CPU time per request, on a VM with noisy neighbours); instruction counts do not, so the
bench's two ratios can be settled on them. Each target runs under callgrind: warm up, zero the
counters of every process in its tree, drive a fixed-duration load, dump, and divide the
instructions by the requests completed. Python under callgrind runs ~50x slower, so the load is
light and the absolute figures are not throughput; only ratios between targets are quoted.

multiproc's workers are forked, and callgrind_control cannot reach a forked child (it answers only
for the process valgrind started), so their counters cannot be zeroed after warm-up. They are
counted by difference instead (`count_by_difference`): two whole runs, the second with more load,
each dumped when its processes exit; start-up, warm-up and shutdown cancel out.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

_SUMMARY = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)
STARTUP_TIMEOUT = 180.0  # seconds for a server to answer /health under valgrind


@dataclass
class Counted:
    requests: int
    instructions: int

    @property
    def per_request(self) -> float:
        return self.instructions / max(self.requests, 1)


def available() -> str | None:
    """None when valgrind can be used, else what to do."""
    if shutil.which("valgrind") and shutil.which("callgrind_control"):
        return None
    return "--instructions needs valgrind: `apt-get install valgrind`, then run it again"


def wrapper(prefix: Path) -> list[str]:
    """The command prefix that runs a target under callgrind, one output file per process."""
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={prefix}.%p", "--dump-instr=no",
            "--log-file=" + f"{prefix}.valgrind.log"]


def _totals(files: list[Path]) -> int:
    total = 0
    for f in files:
        found = _SUMMARY.findall(f.read_text(errors="replace"))
        total += int(found[-1]) if found else 0
    return total


def _control(option: str, pid: int) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], capture_output=True, timeout=60, check=False)


def count(pid: int, prefix: Path, load: Callable[[float], int], warmup: float, seconds: float) -> Counted:
    """Instructions of the process tree of `pid` while `load(seconds)` runs (it returns requests)."""
    load(warmup)
    pids = [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    for p in pids:
        _control("-z", p)
    requests = load(seconds)
    for p in pids:
        _control("-d", p)
    last: list[Path] = []
    for p in pids:
        dumps = sorted(prefix.parent.glob(f"{prefix.name}.{p}.*"), key=lambda f: f.stat().st_mtime)
        last += dumps[-1:]  # the dump after zeroing holds exactly the measured window
    return Counted(requests, _totals(last))


def count_by_difference(run: Callable[[float], tuple[int, Path, list[int]]], seconds: float) -> Counted:
    """Instructions per request from two whole runs of a target. `run(extra)` starts it under
    callgrind, drives its warm-up plus `extra` seconds of load, stops it, and returns the requests
    completed, its callgrind prefix and the pids of its processes; each of them writes
    `<prefix>.<pid>` as it exits. The second run has `seconds` more load than the first."""
    counted = []
    for extra in (1.0, 1.0 + seconds):
        requests, prefix, pids = run(extra)
        dumps = [prefix.parent / f"{prefix.name}.{pid}" for pid in pids]
        missing = [d.name for d in dumps if not d.exists()]
        if missing:
            raise RuntimeError(f"callgrind wrote no totals for {', '.join(missing)} under {prefix.parent}: "
                               "a process did not exit cleanly; read the server log there")
        counted.append(Counted(requests, _totals(dumps)))
    short, long = counted
    return Counted(long.requests - short.requests, long.instructions - short.instructions)
