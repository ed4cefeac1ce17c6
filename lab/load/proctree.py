"""Process trees read from /proc: CPU, memory, threads and descriptors of a server and all its children."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

from lab.load.budget import DEEP_LEAST, DEEP_MOST, DEEP_SHARE, DEFAULT_BUDGET_SECONDS, Stride

FEW_THREADS = 4  # up to this many threads, every thread's children file is read every sample
DEEP_AFTER_LOSS = 8  # all threads' files for this many samples after a process of the tree ended
MAX_PROCESSES = 4096
_HAS_CHILDREN_FILES = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def _child_pids(pid: int, all_threads: bool) -> list[int]:
    """Children of pid from /proc/<pid>/task/<tid>/children (a child belongs to the thread that forked it)."""
    base = f"/proc/{pid}/task"
    try:
        tids = os.listdir(base) if all_threads else [str(pid)]
    except OSError:
        return []
    found: list[int] = []
    for tid in tids:
        try:
            with open(f"{base}/{tid}/children", "rb") as fh:
                found.extend(int(x) for x in fh.read().split())
        except OSError:  # the thread or process ended meanwhile
            continue
    return found


_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _read_stat(pid: int) -> tuple[bytes, float, int, int, float] | None:
    """(state, CPU seconds, threads, RSS bytes, start in seconds since boot) from /proc/<pid>/stat.

    One read per process: psutil's oneshot() needs three files and costs three times as much here.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    f = data[data.rindex(b")") + 2 :].split()  # the command name may hold spaces and parentheses
    cpu = (int(f[11]) + int(f[12])) / _CLK_TCK  # utime + stime
    return f[0], cpu, int(f[17]), int(f[21]) * _PAGE_SIZE, int(f[19]) / _CLK_TCK


def _count_fds(pid: int) -> int:
    try:  # Linux 6.2+ gives the count as the directory's size: no listing of thousands of sockets
        return os.stat(f"/proc/{pid}/fd").st_size or len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _read_uss_pss(pid: int) -> tuple[int, int] | None:
    """(USS, PSS) in bytes from /proc/<pid>/smaps_rollup: the kernel walks the page tables (about
    1 ms per 50 MB process on the lab machine), hence only every uss_every-th sample."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    kb = {line.split(b":", 1)[0]: int(line.split()[1]) for line in lines if line.endswith(b" kB")}
    return (kb.get(b"Private_Clean", 0) + kb.get(b"Private_Dirty", 0)) * 1024, kb.get(b"Pss", 0) * 1024


def _since_boot() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass
class TreeStats:
    processes: int = 0
    rss: int = 0
    uss: int | None = None
    pss: int | None = None
    cpu_seconds: float = 0.0  # CPU used since the previous measure()
    wall_seconds: float = 0.0
    threads: int = 0
    fds: int = 0
    root_alive: bool = False
    uss_seconds: float = 0.0  # CPU spent reading smaps_rollup

    @property
    def cpu_percent(self) -> float:
        return round(100.0 * self.cpu_seconds / self.wall_seconds, 2) if self.wall_seconds > 0 else 0.0


class ProcessTree:
    """Process trees below some root pids, re-listed on every measure() (workers come and go)."""

    def __init__(self, roots: Sequence[int], deep: Stride | None = None) -> None:
        self.roots = list(dict.fromkeys(roots))
        self.live: list[int] = []  # the tree at the last measure()
        self.deep = deep or Stride(DEEP_LEAST, DEEP_MOST, DEEP_SHARE * DEFAULT_BUDGET_SECONDS)
        self._cpu: dict[int, float] = {}
        self._threads: dict[int, int] = {}
        self._deep_left = 0
        self._last_boot = _since_boot()
        self._last_mono = time.monotonic()

    def pids(self) -> list[int]:
        """The roots and all their descendants, parents before children."""
        if not _HAS_CHILDREN_FILES:  # a kernel without CONFIG_PROC_CHILDREN: psutil scans all of /proc
            found = []
            for root in self.roots:
                with contextlib.suppress(psutil.Error):
                    found += [root, *(c.pid for c in psutil.Process(root).children(recursive=True))]
            return list(dict.fromkeys(found))
        # A child is listed under the thread that forked it. Reading every thread's file each sample
        # is costly for a thread-per-connection server: processes with many threads get their main
        # thread's file each sample and all files every `deep.every`-th sample, and for a while
        # after one of the tree ended (a replacement may come from any thread).
        deep = self.deep.due() or self._deep_left > 0
        self._deep_left = max(0, self._deep_left - 1)
        started = time.thread_time()
        order: list[int] = []
        seen: set[int] = set()
        queue = list(self.roots)
        for pid in queue:  # grows while walking; bounded by MAX_PROCESSES
            if pid in seen:
                continue
            seen.add(pid)
            order.append(pid)
            if len(queue) < MAX_PROCESSES:
                threads = self._threads.get(pid)  # None: not seen yet
                every = threads is None or (threads > 1 and (deep or threads <= FEW_THREADS))
                queue += _child_pids(pid, every)
        if deep:
            self.deep.took(time.thread_time() - started)
        return order

    def measure(self, *, full: bool = True, uss: bool = False) -> TreeStats:
        """CPU since the last call; with full, memory, threads and fds too; with uss, USS and PSS."""
        now_boot, now_mono = _since_boot(), time.monotonic()
        stats = TreeStats(wall_seconds=now_mono - self._last_mono)
        memory: list[int] | None = [0, 0] if uss else None
        live: list[int] = []
        cpu: dict[int, float] = {}
        threads: dict[int, int] = {}
        for pid in self.pids():
            stat = _read_stat(pid)
            if stat is None or stat[0] == b"Z":  # ended, or a zombie not reaped yet
                continue
            _state, used, threads[pid], rss, started = stat
            live.append(pid)
            before = self._cpu.get(pid)
            if before is None:  # new: all its CPU falls in this interval if it started in it
                before = 0.0 if started >= self._last_boot else used
            stats.cpu_seconds += max(0.0, used - before)
            cpu[pid] = used
            if full:
                stats.threads += threads[pid]
                stats.rss += rss
                stats.fds += _count_fds(pid)
            if memory is not None:
                clock = time.thread_time()
                got = _read_uss_pss(pid)
                stats.uss_seconds += time.thread_time() - clock
                memory = None if got is None else [memory[0] + got[0], memory[1] + got[1]]
        if memory is not None:
            stats.uss, stats.pss = memory
        stats.processes = len(live)
        stats.root_alive = bool(self.roots) and self.roots[0] in cpu
        if any(pid not in cpu for pid in self.live):
            self._deep_left = DEEP_AFTER_LOSS
        self.live, self._cpu, self._threads = live, cpu, threads
        self._last_boot, self._last_mono = now_boot, now_mono
        return stats

    def socket_inodes(self) -> set[int]:
        """Inodes of the sockets the tree's processes hold (one readlink per descriptor: not per sample)."""
        inodes: set[int] = set()
        for pid in self.live or self.pids():
            base = f"/proc/{pid}/fd"
            try:
                fds = os.listdir(base)
            except OSError:
                continue
            for fd in fds:
                try:
                    link = os.readlink(f"{base}/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(int(link[8:-1]))
        return inodes


