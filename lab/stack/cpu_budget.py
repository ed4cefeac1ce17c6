"""A kernel-enforced CPU budget for a server's process tree: a cgroup CPU quota (v1 `cpu` or v2 `cpu.max`).

With a budget a server on a small machine saturates below the load generator's ceiling, so the
figures are the server's. The quota is `cores x period` per period: a short period (10 ms by
default) keeps the throttling a budget adds to a request's latency below a period, where the
kernel's 100 ms default could stall a request for most of 100 ms. Processes forked later (multiproc
workers, restarted ones) inherit the group. `stat()` reports how often the kernel throttled it, and
`usage_file` is the group's CPU time in ns or us: exact, where /proc counts in 10 ms ticks.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

V1_ROOT = Path("/sys/fs/cgroup/cpu")
V1_ACCT = Path("/sys/fs/cgroup/cpuacct")  # v1 counts CPU time (in ns) in a hierarchy of its own
V2_ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
DEFAULT_PERIOD_US = 10_000
MIN_PERIOD_US, MAX_PERIOD_US = 1_000, 1_000_000  # the kernel's bounds for cfs_period_us
MIN_QUOTA_US = 1_000  # the kernel refuses a smaller quota
GROUP_PREFIX = "serverlab-"


class BudgetError(RuntimeError):
    """The quota cannot be set here; the message says why and what to do."""


def parse(text: str | None, name: str = "LAB_SERVER_CPU") -> float | None:
    """'0.5' -> 0.5 cores; '', 'none', 'off', '0' -> None (no budget); anything else BudgetError."""
    raw = (text or "").strip().lower()
    if raw in {"", "none", "off", "0", "unlimited"}:
        return None
    try:
        cores = float(raw)
    except ValueError:
        raise BudgetError(f"{name}={text!r} is not a number of cores: write e.g. 0.5 (half a core), "
                          "or none for no budget") from None
    top = os.cpu_count() or 1
    if not 0.01 <= cores <= top:
        raise BudgetError(f"{name}={text!r} is out of range: 0.01 to {top} cores, or none")
    return cores


def _v2_root() -> Path | None:
    for root in V2_ROOTS:
        if (root / "cgroup.controllers").exists():
            return root
    return None


@dataclass
class CpuBudget:
    """One server's cgroup: create(), add(pids), set_limited(), stat(), remove()."""

    cores: float
    period_us: int = DEFAULT_PERIOD_US
    name: str = ""
    path: Path | None = None
    version: int = 0
    acct: Path | None = None  # v1: the twin cpuacct group that counts the CPU time

    @property
    def quota_us(self) -> int:
        return round(self.cores * self.period_us)

    def create(self) -> CpuBudget:
        if not MIN_PERIOD_US <= self.period_us <= MAX_PERIOD_US:
            raise BudgetError(f"LAB_SERVER_CPU_PERIOD_US={self.period_us} is out of range "
                              f"({MIN_PERIOD_US}..{MAX_PERIOD_US} microseconds)")
        if self.quota_us < MIN_QUOTA_US:  # raising it to the minimum would hand out more than was asked
            raise BudgetError(f"LAB_SERVER_CPU={self.cores:g} over a {self.period_us} us period is a "
                              f"{self.quota_us} us quota, below the kernel's {MIN_QUOTA_US} us minimum: set "
                              f"LAB_SERVER_CPU_PERIOD_US to {math.ceil(MIN_QUOTA_US / self.cores)} or more")
        self.name = self.name or f"{GROUP_PREFIX}{secrets.token_hex(4)}"
        errors = []
        if (V1_ROOT / "cpu.cfs_quota_us").exists():
            try:
                self._create_v1()
                return self
            except OSError as exc:
                errors.append(f"cgroup v1 {V1_ROOT}: {exc}")
        root = _v2_root()
        if root is not None:
            try:
                self._create_v2(root)
                return self
            except OSError as exc:
                errors.append(f"cgroup v2 {root}: {exc}")
        found = "; ".join(errors) or "no cgroup cpu controller is mounted (neither v1 cpu nor v2 cpu.max)"
        raise BudgetError(f"cannot set a CPU quota of {self.cores:g} cores for the servers: {found}. "
                          "Run as root (or with a delegated cgroup), or ask for no budget with "
                          "LAB_SERVER_CPU=none (--server-cpu none): the run is then unbudgeted and says so")

    def _create_v1(self) -> None:
        path = V1_ROOT / self.name
        path.mkdir()
        self.path, self.version = path, 1
        try:
            (path / "cpu.cfs_period_us").write_text(str(self.period_us))
            (path / "cpu.cfs_quota_us").write_text(str(self.quota_us))
            burst = path / "cpu.cfs_burst_us"
            if burst.exists():
                burst.write_text("0")  # no saved-up bursts: the budget holds in every period
            if (V1_ACCT / "cpuacct.usage").exists():
                self.acct = V1_ACCT / self.name
                self.acct.mkdir()
        except OSError:
            self.remove()
            raise

    def _create_v2(self, root: Path) -> None:
        controllers = (root / "cgroup.subtree_control").read_text().split()
        if "cpu" not in controllers:
            (root / "cgroup.subtree_control").write_text("+cpu")
        path = root / self.name
        path.mkdir()
        self.path, self.version = path, 2
        try:
            (path / "cpu.max").write_text(f"{self.quota_us} {self.period_us}")
        except OSError:
            self.remove()
            raise

    def set_limited(self, limited: bool) -> None:
        """Hold the group to its quota (True), or let it use whole CPUs (False) while its CPU time is
        still counted: the full-core phase of a repetition (lab/load/full_core.py)."""
        if self.path is None:
            raise BudgetError("the budget's cgroup was not created")
        quota = str(self.quota_us) if limited else ("-1" if self.version == 1 else "max")
        if self.version == 1:
            (self.path / "cpu.cfs_quota_us").write_text(quota)
        else:
            (self.path / "cpu.max").write_text(f"{quota} {self.period_us}")

    def add(self, pids: list[int]) -> None:
        """Move processes (all their threads) into the group."""
        if self.path is None:
            raise BudgetError("the budget's cgroup was not created")
        for group in (g for g in (self.path, self.acct) if g is not None):
            for pid in pids:
                try:
                    (group / "cgroup.procs").write_text(str(pid))
                except OSError as exc:
                    if exc.errno == 3:  # ESRCH: the process ended meanwhile
                        continue
                    raise BudgetError(f"cannot move pid {pid} into {group}: {exc}") from None

    @property
    def usage_file(self) -> Path | None:
        """The file with the group's CPU time so far: cpuacct.usage (ns, v1) or cpu.stat (usage_usec, v2)."""
        if self.acct is not None:
            return self.acct / "cpuacct.usage"
        return self.path / "cpu.stat" if self.path is not None and self.version == 2 else None

    def pids(self) -> list[int]:
        if self.path is None:
            return []
        try:
            return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def stat(self) -> dict[str, Any]:
        """Periods, throttled periods and throttled time since creation (the kernel's counters)."""
        out: dict[str, Any] = {"cores": self.cores, "period_us": self.period_us,
                               "quota_us": self.quota_us, "cgroup_version": self.version,
                               "cgroup": str(self.path) if self.path else None}
        if self.path is None:
            return out
        try:
            fields = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines()
                          if len(line.split()) == 2)
        except OSError:
            return out
        throttled = (int(fields.get("throttled_time", 0)) / 1e9 if self.version == 1  # v1: ns, v2: us
                     else int(fields.get("throttled_usec", 0)) / 1e6)
        out["periods"] = int(fields.get("nr_periods", 0))
        out["throttled_periods"] = int(fields.get("nr_throttled", 0))
        out["throttled_seconds"] = round(throttled, 6)
        return out

    def remove(self) -> None:
        """Remove the group once its processes are gone (those left go back to the root group)."""
        for group in (self.path, self.acct):
            if group is None:
                continue
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (group.parent / "cgroup.procs").write_text(pid)
            with contextlib.suppress(OSError):
                group.rmdir()
        self.path = self.acct = None


def read_usage(path: str | Path) -> float | None:
    """CPU seconds so far from a group's usage file (see CpuBudget.usage_file); None when unreadable."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError:
        return None
    if path.name == "cpuacct.usage":
        return int(text.strip()) / 1e9
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) / 1e6
    return None


def describe(cores: float | None, period_us: int = DEFAULT_PERIOD_US) -> str:
    if cores is None:
        return "no CPU budget (servers may use their whole CPUs)"
    return (f"a CPU budget of {cores:g} cores per server (cgroup quota {round(cores * period_us)} us "
            f"per {period_us} us)")
