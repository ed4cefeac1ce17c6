"""The server's own process tree as Prometheus `process_*` metrics: CPU, memory, fds, threads.

A lab on another host cannot read this host's cgroup or /proc, so each server reports its own cost on
/metrics, under the Prometheus client conventions' names. Figures cover the whole tree below the
server's root process (multiproc: the supervisor and its workers) and are read fresh on each scrape.

CPU comes from each process's CPU-time clock (clock_gettime on the clock clock_getcpuclockid would
give, the scheduler's nanosecond runtime of all its threads, including threads that have ended): the
same counter /proc/<pid>/schedstat shows per thread and a cgroup sums, not /proc/<pid>/stat's 10 ms
ticks, which are 5 % of the 0.2 CPU-seconds a 2 s window may hold. Where that clock cannot be read,
the live threads' /proc/<pid>/task/*/schedstat are summed instead.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
MAX_PROCESSES = 1024  # a bound on the walk; a server tree is 1 + workers


def _cpu_clock(pid: int) -> int:
    """The clock id of a process's CPU time (glibc's clock_getcpuclockid, which Python lacks):
    CPUCLOCK_SCHED (2) for the whole thread group, pid encoded as ~pid << 3."""
    return ((~pid) << 3) | 2


def cpu_ns(pid: int) -> int:
    """CPU nanoseconds a process has used, all its threads (ended ones too); raises OSError if gone."""
    if pid == os.getpid():
        return time.process_time_ns()
    try:
        return time.clock_gettime_ns(_cpu_clock(pid))
    except OSError:
        if not os.path.exists(f"/proc/{pid}"):
            raise
    total = 0  # the clock was refused: the live threads' runtimes (ended threads are missed)
    for tid in os.listdir(f"/proc/{pid}/task"):
        path = f"/proc/{pid}/task/{tid}/schedstat"
        with contextlib.suppress(OSError), open(path, encoding="ascii") as file:
            total += int(file.read().split()[0])
    return total


def _children(pid: int) -> list[int]:
    """A process's children. Forks happen on the main thread in every server, so its children file
    is enough; without that file (CONFIG_PROC_CHILDREN off) /proc is scanned for the parent pid."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as file:
            return [int(x) for x in file.read().split()]
    except FileNotFoundError:
        if not os.path.exists(f"/proc/{pid}"):
            return []
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if _stat(int(name))[4] == pid:
                    found.append(int(name))
    return found


def _stat(pid: int) -> list[int]:
    """/proc/<pid>/stat's numbers, indexed by field number as proc(5) counts them (1-based; fields 1-3,
    pid, name and state, read 0): the name in parentheses may hold spaces, so split after its ")"."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
        text = file.read()
    return [0, 0, 0, 0] + [int(x) for x in text[text.rindex(")") + 2:].split()[1:]]


def tree(root: int) -> list[int]:
    """The root and all its descendants, root first."""
    pids: list[int] = []
    queue = [root]
    while queue and len(pids) < MAX_PROCESSES:
        pid = queue.pop(0)
        pids.append(pid)
        queue.extend(_children(pid))
    return pids


@dataclass(frozen=True)
class TreeFigures:
    cpu_seconds: float
    resident_bytes: int
    virtual_bytes: int
    open_fds: int
    max_fds: int
    threads: int
    processes: int
    start_time: float


def _boot_time() -> float:
    with open("/proc/stat", encoding="ascii") as file:
        for line in file:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


def _max_fds(pid: int) -> int:
    with open(f"/proc/{pid}/limits", encoding="ascii") as file:
        for line in file:
            if line.startswith("Max open files"):
                soft = line.split()[3]
                return -1 if soft == "unlimited" else int(soft)
    return -1


def measure(root: int) -> TreeFigures:
    """Sum the figures over the tree below `root`; processes that end meanwhile are skipped."""
    cpu = rss = vms = fds = threads = processes = 0
    start = 0.0
    for pid in tree(root):
        try:
            fields = _stat(pid)
            with open(f"/proc/{pid}/statm", encoding="ascii") as file:  # stat's rss may be approximate
                size, resident = (int(x) for x in file.read().split()[:2])
            used = cpu_ns(pid)
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, ValueError):
            continue
        cpu += used
        threads += fields[20]
        vms += size * PAGE_SIZE
        rss += resident * PAGE_SIZE
        processes += 1
        if pid == root:
            start = _boot_time() + fields[22] / TICKS
    try:
        max_fds = _max_fds(root)
    except OSError:
        max_fds = -1
    return TreeFigures(cpu / 1e9, rss, vms, fds, max_fds, threads, processes, start)


FAMILIES = (
    ("process_cpu_seconds_total", "counter", "cpu_seconds",
     "Total user and system CPU time spent in seconds (the process tree; nanosecond clock)."),
    ("process_resident_memory_bytes", "gauge", "resident_bytes",
     "Resident memory size in bytes (summed over the process tree)."),
    ("process_virtual_memory_bytes", "gauge", "virtual_bytes",
     "Virtual memory size in bytes (summed over the process tree)."),
    ("process_open_fds", "gauge", "open_fds", "Number of open file descriptors (the process tree)."),
    ("process_max_fds", "gauge", "max_fds", "Maximum number of open file descriptors (the root process)."),
    ("process_threads", "gauge", "threads", "Number of OS threads (the process tree)."),
    ("process_start_time_seconds", "gauge", "start_time",
     "Start time of the root process since the unix epoch in seconds."),
    ("serverlab_process_tree_processes", "gauge", "processes",
     "Processes these process_* figures sum over (multiproc: the supervisor and its workers)."),
)


def render(figures: TreeFigures) -> str:
    """The figures in Prometheus text format 0.0.4."""
    out = []
    for name, kind, attr, text in FAMILIES:
        value = getattr(figures, attr)
        shown = repr(round(value, 9)) if isinstance(value, float) else str(value)
        out.append(f"# HELP {name} {text}\n# TYPE {name} {kind}\n{name} {shown}\n")
    return "".join(out)


def render_tree(root: int | None = None) -> str:
    """The tree below `root` (default: this process) in Prometheus text; empty off Linux."""
    if not os.path.isdir("/proc/self"):
        return ""
    return render(measure(os.getpid() if root is None else root))
