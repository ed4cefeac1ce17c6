"""Resource sampler: a separate process that records what a server costs, several times a second.

    python -m lab.load.sampler --pid PID --out samples.jsonl [--app-name serverlab-asyncio]
        [--database-url URL] [--metrics-url http://127.0.0.1:8003/metrics] [--generator-pid PID ...]
        [--interval 0.25] [--max-seconds 3600]

Writes JSON Lines, one object per line, flushed as written: a header ({"kind": "header", ...}), one
object per sample, and on stop a footer ({"kind": "footer", ...}) with the sampler's own CPU cost.
It stops on SIGTERM/SIGINT, after --max-seconds, or when the server's root process is gone (that
last sample says "server_gone": true).

Per sample, for the server's whole process tree (re-listed every sample: multiproc restarts workers):
- t: unix time; processes, threads, fds: sums over the tree; rss_bytes: sum of RSS;
- uss_bytes, pss_bytes: from /proc/<pid>/smaps_rollup every `uss_every`-th sample (see the header),
  null in between and where the OS does not give them;
- cpu_percent: CPU of the tree over the last interval, in percent of one core (200 = two cores busy);
- cpu_seconds: the tree's CPU seconds since the sampler started (/proc, 10 ms ticks per process);
  cgroup_cpu_seconds: the server's cgroup CPU counter where it has one (a CPU budget), exact;
- tcp: the server's TCP sockets on its listening port(s), by state ({"ESTABLISHED": n, "TIME_WAIT": n,
  "LISTEN": n, ...}): the client side of the server, including connections not yet accepted and
  TIME_WAIT (which belongs to no process). Read with one netlink sock_diag query filtered in the kernel:
  psutil's per-process connections() reads the whole /proc/net/tcp table per process (about 9 ms per
  process on the lab machine, over 10 % of a core at 4 Hz) and misses TIME_WAIT. The server's own
  database connections are counted from the database side, in `db`;
- db: pg_stat_activity rows with the server's application_name, by state, plus "total";
- metrics: scraped from the server's /metrics (values include the scrape's own connection and request);
- generator_cpu_percent: CPU of the load generator's process trees, percent of one core.
A part that cannot be read is null for that sample; its error is counted in the footer, never fatal.

The sampler's own CPU stays within --budget-percent of one core (default 1.5): the expensive parts
(USS/PSS: the kernel walks page tables; tcp: the kernel walks its connection table; finding children
forked by any thread of a thread-per-connection server) run every n-th sample, n adapted to their
measured cost, and are null on the samples in between. The footer reports the cost and the strides.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import psutil
import psycopg2

from lab.stack.cpu_budget import read_usage

REPO = Path(__file__).resolve().parents[2]
SCHEMA_VERSION = 1
DEFAULT_INTERVAL = 0.25
DEFAULT_MAX_SECONDS = 3600.0
MAX_MAX_SECONDS = 7 * 24 * 3600.0
DEFAULT_USS_EVERY = 4  # smaps_rollup costs ~1 ms per 50 MB process here: at most 1 Hz by default
DEFAULT_BUDGET_PERCENT = 1.5  # of one core, for the sampler's own CPU
# Expensive parts run every n-th sample, n adapted to keep each within its share of the budget
# (the rest, about 0.3 of it, is what every sample costs: /proc/<pid>/stat, database, /metrics):
TCP_SHARE, TCP_MOST = 0.40, 8  # tcp: every sample while cheap, at least every 8th (2 s)
USS_SHARE, USS_MOST = 0.25, 40  # USS/PSS: every uss_every-th sample at most, at least every 40th
DEEP_SHARE, DEEP_LEAST, DEEP_MOST = 0.05, 8, 400  # all threads' children files (see ProcessTree.pids)
_DEFAULT_BUDGET_SECONDS = DEFAULT_INTERVAL * DEFAULT_BUDGET_PERCENT / 100  # CPU per sample
SAMPLER_APP_NAME = "serverlab-sampler"
METRICS_TIMEOUT = 0.5
DB_RETRY_SECONDS = 2.0
PORT_DISCOVERY_SECONDS = 1.0
FEW_THREADS = 4  # up to this many threads, every thread's children file is read every sample
DEEP_AFTER_LOSS = 8  # all threads' files for this many samples after a process of the tree ended
MAX_PROCESSES = 4096

TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
              12: "SYN_RECV"}  # 12 is the kernel's NEW_SYN_RECV (a request socket); ss shows SYN-RECV too
DB_STATES = ("active", "idle", "idle in transaction")
METRIC_FIELDS = {
    "serverlab_pool_size": "pool_size",
    "serverlab_pool_in_use": "pool_in_use",
    "serverlab_pool_waiting": "pool_waiting",
    "serverlab_rejections_total": "rejections",  # summed over reasons
    "serverlab_inflight_requests": "inflight",
    "serverlab_open_connections": "open_connections",
    "serverlab_processes": "processes",
}
_METRIC_LINE = re.compile("^(" + "|".join(METRIC_FIELDS) + r")(?:\{[^}\n]*\})? (\S+)$", re.MULTILINE)
_HAS_CHILDREN_FILES = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


class SamplerError(RuntimeError):
    """Bad arguments or a sampler that did not start; the message says what to do."""


class Stride:
    """Runs an expensive part every n-th sample, n chosen so that its mean CPU cost per sample stays
    within `share` seconds: never more often than every `least`-th sample, never rarer than `most`."""

    def __init__(self, least: int, most: int, share: float) -> None:
        self.least, self.most, self.share = least, max(least, most), share
        self.every = least
        self.runs = 0
        self._left = 0
        self._cost = 0.0

    def due(self) -> bool:
        self._left -= 1
        if self._left > 0:
            return False
        self._left = self.every
        return True

    def took(self, seconds: float) -> None:
        self.runs += 1
        self._cost = seconds if self.runs == 1 else 0.7 * self._cost + 0.3 * seconds
        wanted = math.ceil(self._cost / self.share) if self.share > 0 else self.least
        self.every = min(self.most, max(self.least, wanted))


# --- the process tree ------------------------------------------------------------------------------


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
        self.deep = deep or Stride(DEEP_LEAST, DEEP_MOST, DEEP_SHARE * _DEFAULT_BUDGET_SECONDS)
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


# --- TCP sockets by state, from the kernel's sock_diag netlink interface ---------------------------

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x301
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_BC_JMP, _BC_S_EQ = 1, 11
_INET_DIAG_REQ_BYTECODE = 1
_ALL_STATES = 0xFFFFFFFF
_LISTEN_ONLY = 1 << 10


def _port_filter(ports: Sequence[int]) -> bytes:
    """inet_diag bytecode: source port is one of ports (the kernel's OR, built as `ss` builds it)."""
    ops = b""
    for i, port in enumerate(ports):
        ops += struct.pack("=BBH", _BC_S_EQ, 8, 12) + struct.pack("=BBH", 0, 0, port)
        if i < len(ports) - 1:  # matched: jump past the remaining tests to the end (accept)
            ops += struct.pack("=BBH", _BC_JMP, 4, 12 * (len(ports) - 1 - i))
    return struct.pack("=HH", 4 + len(ops), _INET_DIAG_REQ_BYTECODE) + ops


class SockDiag:
    """TCP sockets (state, local port, inode) of one address family, dumped by the kernel."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG)
        self._sock.settimeout(2.0)
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def _messages(self, family: int, states: int, ports: Sequence[int]) -> Iterator[tuple[bytes, int]]:
        """(buffer, offset) of each inet_diag_msg in the kernel's answer."""
        self._seq += 1
        req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, states) + bytes(48)
        if ports:
            req += _port_filter(ports)
        self._sock.sendall(struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP,
                                       self._seq, 0) + req)
        for _ in range(100_000):  # 64 KiB per read: enough for millions of sockets
            data = self._sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, off)
                if length < 16:
                    raise OSError("sock_diag: malformed netlink message")
                if seq == self._seq:  # else the tail of an earlier, abandoned dump
                    if kind == _NLMSG_DONE:
                        return
                    if kind == _NLMSG_ERROR:
                        err = -struct.unpack_from("=i", data, off + 16)[0]
                        raise OSError(err, f"sock_diag: {os.strerror(err)}")
                    yield data, off + 16
                off += (length + 3) & ~3
        raise OSError("sock_diag: the dump did not end")

    def sockets(self, family: int, states: int) -> list[tuple[int, int, int]]:
        """(state, local port, inode) of each socket in the given states."""
        # inet_diag_msg: family, state, timer, retrans, then the sockid (source port first), ... inode at 68
        return [(data[o + 1], int.from_bytes(data[o + 4 : o + 6], "big"),
                 int.from_bytes(data[o + 68 : o + 72], sys.byteorder))
                for data, o in self._messages(family, states, ())]

    def count_states(self, family: int, ports: Sequence[int]) -> dict[int, int]:
        """Sockets by state whose local port is one of ports (filtered in the kernel)."""
        counts: dict[int, int] = {}
        for data, o in self._messages(family, _ALL_STATES, ports):
            state = data[o + 1]
            counts[state] = counts.get(state, 0) + 1
        return counts


# --- database and /metrics --------------------------------------------------------------------------

_DB_QUERY = ("SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity "
             "WHERE application_name = %s GROUP BY 1")


class DbCounter:
    """pg_stat_activity rows of one application_name, over one persistent autocommit connection."""

    def __init__(self, url: str, app_name: str) -> None:
        self.url, self.app_name = url, app_name
        self.conn: Any = None
        self.errors = 0
        self.last_error: str | None = None
        self._retry_at = 0.0

    def count(self) -> dict[str, int] | None:
        try:
            if self.conn is None:
                if time.monotonic() < self._retry_at:
                    return None
                # autocommit: pg_stat_activity is a per-transaction snapshot, so each query needs its own
                self.conn = psycopg2.connect(self.url, application_name=SAMPLER_APP_NAME, connect_timeout=2,
                                             options="-c statement_timeout=1000")
                self.conn.autocommit = True
            with self.conn.cursor() as cur:
                cur.execute(_DB_QUERY, (self.app_name,))
                rows = cur.fetchall()
        except psycopg2.Error as exc:
            self.errors += 1
            self.last_error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.close()
            self._retry_at = time.monotonic() + DB_RETRY_SECONDS
            return None
        counts = dict.fromkeys(DB_STATES, 0)
        for state, n in rows:
            counts[state] = int(n)
        counts["total"] = sum(counts.values())
        return counts

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self.conn.close()
            self.conn = None


def parse_metrics(text: str) -> dict[str, int]:
    """The gauges the sampler records, from Prometheus text; rejections summed over reasons."""
    found: dict[str, int] = {}
    for name, value in _METRIC_LINE.findall(text):  # one regex pass: the text is mostly histograms
        field = METRIC_FIELDS[name]
        found[field] = found.get(field, 0) + int(float(value))
    if not found:
        raise ValueError("no serverlab_ gauges in the answer; is this a serverlab /metrics URL?")
    return found


class MetricsScraper:
    """GET /metrics with a short timeout; a new connection each time, closed by us first (so its
    TIME_WAIT lands on our side, not among the server's sockets)."""

    def __init__(self, url: str, timeout: float = METRICS_TIMEOUT) -> None:
        parts = urlsplit(url)
        try:
            port = parts.port or 80
        except ValueError:  # a port that is not a number
            port = 0
        if parts.scheme != "http" or not parts.hostname or not port:
            raise SamplerError(f"--metrics-url must be an http:// URL such as "
                               f"http://127.0.0.1:8003/metrics, got {url!r}")
        self.url = url
        self.host, self.port = parts.hostname, port
        self.path = (parts.path or "/metrics") + (f"?{parts.query}" if parts.query else "")
        self.timeout = timeout
        self._request = (f"GET {self.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                         f"User-Agent: {SAMPLER_APP_NAME}\r\n\r\n").encode("latin-1")
        self.errors = 0
        self.last_error: str | None = None

    def scrape(self) -> dict[str, int] | None:
        try:
            return parse_metrics(self._get().decode("utf-8", "replace"))
        except (OSError, ValueError) as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return None

    def _get(self) -> bytes:
        """The body of a 200 answer. Plain HTTP/1.1 over a socket: a third of http.client's CPU."""
        deadline = time.monotonic() + self.timeout
        with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
            sock.sendall(self._request)
            buf, head, length = b"", b"", -1
            for _ in range(100_000):
                if not head and b"\r\n\r\n" in buf:
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    length = self._check_head(head)
                if head and 0 <= length <= len(buf):
                    return buf[:length]
                if time.monotonic() > deadline:
                    raise TimeoutError(f"GET {self.url}: no complete answer within {self.timeout}s")
                chunk = sock.recv(65536)
                if not chunk:  # the server closed: the body is what came
                    if head and length < 0:
                        return buf
                    raise ValueError(f"GET {self.url}: the answer was cut off")
                buf += chunk
        raise ValueError(f"GET {self.url}: answer too long")

    def _check_head(self, head: bytes) -> int:
        """Content-Length from the status line and headers (-1: read to the end); ValueError unless 200."""
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or not status[0].startswith("HTTP/") or status[1] != "200":
            raise ValueError(f"GET {self.url} answered {lines[0][:100]!r}")
        length = -1
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                raise ValueError(f"GET {self.url}: chunked answers are not supported")
        return length


# --- the sampler ----------------------------------------------------------------------------------


class Sampler:
    """Samples one server (and optionally its load generator); `run()` writes the JSON Lines file."""

    def __init__(
        self,
        pid: int,
        *,
        app_name: str | None = None,
        database_url: str | None = None,
        metrics_url: str | None = None,
        generator_pids: Sequence[int] = (),
        interval: float = DEFAULT_INTERVAL,
        uss_every: int = DEFAULT_USS_EVERY,
        ports: Sequence[int] = (),
        budget_percent: float = DEFAULT_BUDGET_PERCENT,
        cpu_usage_file: str | None = None,
    ) -> None:
        check_interval(interval, "interval")
        if not 1 <= uss_every <= 1000:
            raise SamplerError(f"--uss-every must be from 1 to 1000, got {uss_every}")
        if not 0.1 <= budget_percent <= 100:
            raise SamplerError(f"--budget-percent must be from 0.1 to 100, got {budget_percent}")
        if not os.path.exists("/proc/self/stat"):
            raise SamplerError("the sampler reads /proc and netlink sock_diag: it runs on Linux only")
        if not psutil.pid_exists(pid):
            raise SamplerError(f"no process with pid {pid}; pass the server's root pid (--pid)")
        if database_url and not app_name:
            raise SamplerError("a database URL needs --app-name (the server's application_name, "
                               "e.g. serverlab-asyncio) to count its connections")
        if database_url and urlsplit(database_url).scheme not in {"postgres", "postgresql"}:
            raise SamplerError("--database-url must be a postgresql:// URL such as "
                               "postgresql://serverlab@127.0.0.1:54320/serverlab")
        self.pid, self.app_name, self.interval, self.budget_percent = pid, app_name, interval, budget_percent
        budget = interval * budget_percent / 100  # CPU seconds per sample
        self.uss_stride = Stride(uss_every, USS_MOST, USS_SHARE * budget)
        self.tcp_stride = Stride(1, TCP_MOST, TCP_SHARE * budget)
        self.generator_pids = list(generator_pids)
        self.tree = ProcessTree([pid], Stride(DEEP_LEAST, DEEP_MOST, DEEP_SHARE * budget))
        self.generator = (ProcessTree(self.generator_pids, Stride(DEEP_LEAST, DEEP_MOST, DEEP_SHARE * budget))
                          if self.generator_pids else None)
        self.db = DbCounter(database_url, app_name) if database_url and app_name else None
        self.metrics = MetricsScraper(metrics_url) if metrics_url else None
        self.ports = sorted(set(ports))
        self.families: list[int] = [socket.AF_INET, socket.AF_INET6]
        self.diag: SockDiag | None = None
        self.tcp_errors = 0
        self.tcp_last_error: str | None = None
        try:
            self.diag = SockDiag()
        except OSError as exc:
            self.tcp_errors, self.tcp_last_error = 1, f"no sock_diag netlink: {exc}"
        self._next_discovery = 0.0
        self.cpu_total = 0.0  # the tree's CPU seconds since the sampler started, from /proc (10 ms ticks)
        self.cpu_usage_file = cpu_usage_file

    def close(self) -> None:
        if self.db:
            self.db.close()
        if self.diag:
            self.diag.close()

    # The server's listening ports: given, or found once from its LISTEN sockets.
    def discover_ports(self) -> None:
        if self.ports or self.diag is None or time.monotonic() < self._next_discovery:
            return
        self._next_discovery = time.monotonic() + PORT_DISCOVERY_SECONDS
        try:
            listening = {inode: (family, port) for family in (socket.AF_INET, socket.AF_INET6)
                         for _state, port, inode in self.diag.sockets(family, _LISTEN_ONLY)}
        except OSError as exc:
            self.tcp_errors += 1
            self.tcp_last_error = str(exc)
            return
        mine = [listening[i] for i in self.tree.socket_inodes() if i in listening]
        if mine:
            self.ports = sorted({port for _f, port in mine})
            self.families = sorted({family for family, _p in mine})

    def tcp_states(self) -> dict[str, int] | None:
        self.discover_ports()
        if self.diag is None or not self.ports:
            return None
        counts = dict.fromkeys(("ESTABLISHED", "TIME_WAIT", "LISTEN"), 0)
        try:
            for family in self.families:
                for state, n in self.diag.count_states(family, self.ports).items():
                    name = TCP_STATES.get(state, str(state))
                    counts[name] = counts.get(name, 0) + n
        except OSError as exc:
            self.tcp_errors += 1
            self.tcp_last_error = str(exc)
            return None
        return counts

    def prime(self) -> None:
        """Take the CPU baseline: the first sample then covers one full interval."""
        self.tree.measure(full=False)
        if self.generator:
            self.generator.measure(full=False)

    def sample(self) -> dict[str, Any]:
        t = time.time()
        uss = self.uss_stride.due()
        tree = self.tree.measure(uss=uss)
        if not tree.root_alive:
            return {"t": round(t, 3), "server_gone": True}
        self.cpu_total += tree.cpu_seconds
        exact = read_usage(self.cpu_usage_file) if self.cpu_usage_file else None
        if uss:
            self.uss_stride.took(tree.uss_seconds)
        tcp = None
        if self.tcp_stride.due():  # before the scrape, which would count itself
            clock = time.thread_time()
            tcp = self.tcp_states()
            self.tcp_stride.took(time.thread_time() - clock)
        out: dict[str, Any] = {
            "t": round(t, 3),
            "processes": tree.processes,
            "rss_bytes": tree.rss,
            "uss_bytes": tree.uss,
            "pss_bytes": tree.pss,
            "cpu_percent": tree.cpu_percent,
            "cpu_seconds": round(self.cpu_total, 4),
            "cgroup_cpu_seconds": None if exact is None else round(exact, 6),
            "threads": tree.threads,
            "fds": tree.fds,
            "tcp": tcp,
            "db": self.db.count() if self.db else None,
            "metrics": self.metrics.scrape() if self.metrics else None,
            "generator_cpu_percent": None,
        }
        if self.generator:
            gen = self.generator.measure(full=False)
            out["generator_cpu_percent"] = gen.cpu_percent if gen.processes else None
        return out

    def header(self) -> dict[str, Any]:
        return {
            "kind": "header",
            "schema": SCHEMA_VERSION,
            "pid": self.pid,
            "app_name": self.app_name,
            "interval": self.interval,
            "started": round(time.time(), 3),
            "sampler_pid": os.getpid(),
            "budget_percent": self.budget_percent,
            "uss_every": self.uss_stride.least,
            "uss_every_most": self.uss_stride.most,
            "tcp_every_most": self.tcp_stride.most,
            "ports": self.ports,
            "metrics_url": self.metrics.url if self.metrics else None,
            "db": self.db is not None,
            "generator_pids": self.generator_pids,
            "cpu_count": psutil.cpu_count() or 1,
            "notes": "cpu_percent: percent of one core. USS/PSS are read every uss_every-th sample "
                     "(null between), TCP every sample; both less often (up to *_most) when costly, to "
                     "keep the sampler within budget_percent of a core. tcp: sockets on the server's "
                     "listening ports by state. metrics include the scrape's own connection and request.",
        }

    def run(self, out: str | Path | IO[str], *, max_seconds: float = DEFAULT_MAX_SECONDS,
            stop: threading.Event | None = None, startup_cpu_seconds: float | None = None,
            exit_with_parent: bool = False) -> dict[str, Any]:
        """Sample until stop is set, max_seconds pass or the server is gone; returns the footer."""
        check_max_seconds(max_seconds)
        stop = stop or threading.Event()
        with contextlib.ExitStack() as stack:
            fh: IO[str] = out if not isinstance(out, str | Path) else stack.enter_context(
                Path(out).open("w", encoding="utf-8"))
            return self._loop(fh, max_seconds, stop, startup_cpu_seconds, exit_with_parent)
        raise AssertionError("unreachable")  # for mypy: ExitStack may swallow exceptions

    def _loop(self, fh: IO[str], max_seconds: float, stop: threading.Event,
              startup_cpu_seconds: float | None, exit_with_parent: bool) -> dict[str, Any]:
        def write(obj: dict[str, Any]) -> None:
            fh.write(json.dumps(obj, separators=(",", ":")) + "\n")
            fh.flush()

        parent = os.getppid()
        self.discover_ports()
        self.prime()
        write(self.header())
        cpu0, wall0 = time.thread_time(), time.monotonic()  # thread time: right in-process too
        deadline = wall0 + max_seconds
        next_at = wall0 + self.interval
        reason, late, written = "max_seconds", 0, 0
        try:
            for _ in range(int(max_seconds / self.interval) + 2):
                wait = min(next_at, deadline) - time.monotonic()
                if stop.wait(wait) if wait > 0 else stop.is_set():
                    reason = "stopped"
                    break
                if exit_with_parent and os.getppid() != parent:
                    reason = "parent_gone"
                    break
                if time.monotonic() >= deadline:
                    break
                sample = self.sample()
                write(sample)
                written += 1
                if sample.get("server_gone"):
                    reason = "server_gone"
                    break
                next_at += self.interval
                behind = time.monotonic() - next_at
                if behind > 0:  # a slow sample: skip the missed slots instead of bursting
                    late += 1
                    next_at += math.ceil(behind / self.interval) * self.interval
        except BaseException as exc:
            reason = f"error: {type(exc).__name__}: {exc}"
            raise
        finally:
            cpu, wall = time.thread_time() - cpu0, time.monotonic() - wall0
            footer = {
                "kind": "footer",
                "samples": written,
                "sampler_cpu_seconds": round(cpu, 4),
                "wall_seconds": round(wall, 3),
                "sampler_cpu_percent": round(100.0 * cpu / wall, 3) if wall > 0 else 0.0,
                "startup_cpu_seconds": None if startup_cpu_seconds is None else round(startup_cpu_seconds, 3),
                "stop_reason": reason,
                "late_samples": late,
                "ports": self.ports,
                "tcp_samples": self.tcp_stride.runs,
                "uss_samples": self.uss_stride.runs,
                "tcp_every": self.tcp_stride.every,
                "uss_every": self.uss_stride.every,
                "tcp_errors": self.tcp_errors,
                "db_errors": self.db.errors if self.db else 0,
                "metrics_errors": self.metrics.errors if self.metrics else 0,
                "last_errors": {k: v for k, v in (
                    ("tcp", self.tcp_last_error),
                    ("db", self.db.last_error if self.db else None),
                    ("metrics", self.metrics.last_error if self.metrics else None),
                ) if v},
            }
            with contextlib.suppress(OSError, ValueError):
                write(footer)
        return footer


def check_interval(value: float, name: str = "--interval") -> None:
    if not (0.01 <= value <= 60):
        raise SamplerError(f"{name} must be from 0.01 to 60 seconds (default {DEFAULT_INTERVAL}), "
                           f"got {value}")


def check_max_seconds(value: float) -> None:
    if not (0 < value <= MAX_MAX_SECONDS):
        raise SamplerError(f"--max-seconds must be above 0 and at most {MAX_MAX_SECONDS:.0f}, got {value}")


# --- reading the file -------------------------------------------------------------------------------


def read_samples(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """(header, samples, footer) of a sampler file; footer is None when the sampler was killed.

    A cut-off last line (a killed sampler) is ignored; any other bad line raises ValueError.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    objs: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON line ({exc})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object")
        objs.append(obj)
    if not objs or objs[0].get("kind") != "header":
        raise ValueError(f"{path}: no header line; is it a sampler file (python -m lab.load.sampler --out)?")
    footer = objs.pop() if len(objs) > 1 and objs[-1].get("kind") == "footer" else None
    return objs[0], objs[1:], footer


# --- running it as a process ------------------------------------------------------------------------


def start_sampler(
    out: str | Path,
    pid: int,
    *,
    app_name: str | None = None,
    database_url: str | None = None,
    metrics_url: str | None = None,
    generator_pids: Sequence[int] = (),
    interval: float | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    uss_every: int | None = None,
    budget_percent: float | None = None,
    ports: Sequence[int] = (),
    cpus: Sequence[int] | None = None,
    cpu_usage_file: str | Path | None = None,
    log_path: str | Path | None = None,
    ready_timeout: float = 15.0,
) -> subprocess.Popen[bytes]:
    """Start `python -m lab.load.sampler` and return once it sampled its CPU baseline and wrote its header.

    The sampler stops by itself if this process goes away. Without database_url it uses
    LAB_DATABASE_URL when set; interval defaults to LAB_SAMPLE_INTERVAL, else 0.25 s. cpus pins it.
    Raises SamplerError (quoting its stderr) when it does not start.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)  # so an old header is never taken for the new one
    cmd = [sys.executable, "-m", "lab.load.sampler", "--out", str(out), "--pid", str(pid),
           "--max-seconds", str(max_seconds), "--exit-with-parent"]
    for flag, value in (("--app-name", app_name), ("--database-url", database_url),
                        ("--metrics-url", metrics_url), ("--interval", interval), ("--uss-every", uss_every),
                        ("--budget-percent", budget_percent), ("--cpu-usage-file", cpu_usage_file)):
        if value is not None:
            cmd += [flag, str(value)]
    for gen in generator_pids:
        cmd += ["--generator-pid", str(gen)]
    for port in ports:
        cmd += ["--port", str(port)]
    with contextlib.ExitStack() as stack:
        err: IO[bytes] = (stack.enter_context(Path(log_path).open("a+b")) if log_path
                          else stack.enter_context(tempfile.TemporaryFile()))
        popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=REPO)
        try:
            if cpus:
                psutil.Process(popen.pid).cpu_affinity(list(cpus))
            _wait_header(out, popen, ready_timeout)
        except BaseException as exc:
            stop_sampler(popen, timeout=2)
            if isinstance(exc, SamplerError):
                err.seek(0)
                text = err.read()[-4000:].decode("utf-8", "replace").strip()
                raise SamplerError(f"{exc}; its output:\n{text or '(none)'}") from None
            raise
    return popen


def _wait_header(out: Path, popen: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.02) + 2):  # bounded: one look per 20 ms
        if popen.poll() is not None:
            raise SamplerError(f"the sampler exited with code {popen.returncode} while starting")
        with contextlib.suppress(OSError), out.open("rb") as fh:
            if fh.readline().endswith(b"\n"):
                return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    raise SamplerError(f"the sampler wrote no header to {out} within {timeout:.0f}s")


def stop_sampler(popen: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM the sampler (it writes its footer and exits), SIGKILL after timeout; its exit code."""
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(5)
    code = popen.returncode
    assert code is not None
    return code


def _env_interval() -> float:
    raw = os.environ.get("LAB_SAMPLE_INTERVAL", "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        return float(raw)
    except ValueError:
        raise SamplerError(f"LAB_SAMPLE_INTERVAL={raw!r} is not a number of seconds (e.g. 0.25)") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.load.sampler", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON Lines file to write")
    parser.add_argument("--pid", type=int, required=True, help="the server's root pid (its tree is sampled)")
    parser.add_argument("--app-name", help="the server's application_name in pg_stat_activity")
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL [env LAB_DATABASE_URL]")
    parser.add_argument("--metrics-url", help="the server's /metrics URL (optional)")
    parser.add_argument("--generator-pid", type=int, action="append", default=[],
                        help="a load generator pid whose tree's CPU to sample (repeatable)")
    parser.add_argument("--interval", type=float, default=None,
                        help=f"seconds between samples [env LAB_SAMPLE_INTERVAL, default {DEFAULT_INTERVAL}]")
    parser.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                        help=f"stop after this long (default {DEFAULT_MAX_SECONDS:.0f})")
    parser.add_argument("--uss-every", type=int, default=DEFAULT_USS_EVERY,
                        help=f"read USS/PSS every Nth sample (default {DEFAULT_USS_EVERY})")
    parser.add_argument("--budget-percent", type=float, default=DEFAULT_BUDGET_PERCENT,
                        help="CPU budget of the sampler, percent of one core: TCP and USS/PSS are read less "
                             f"often when they would exceed it (default {DEFAULT_BUDGET_PERCENT})")
    parser.add_argument("--port", type=int, action="append", default=[],
                        help="the server's listening port (repeatable; found from its sockets when absent)")
    parser.add_argument("--exit-with-parent", action="store_true", help="stop when the parent process ends")
    parser.add_argument("--cpu-usage-file", default=None,
                        help="the server's cgroup CPU counter (cpuacct.usage or cpu.stat): exact CPU seconds")
    args = parser.parse_args(argv)
    stop = threading.Event()
    try:
        interval = _env_interval() if args.interval is None else args.interval
        check_interval(interval)
        check_max_seconds(args.max_seconds)
        database_url = args.database_url or os.environ.get("LAB_DATABASE_URL") or None
        if database_url and not args.app_name and args.database_url:
            raise SamplerError("--database-url needs --app-name (e.g. serverlab-asyncio)")
        sampler = Sampler(args.pid, app_name=args.app_name,
                          database_url=database_url if args.app_name else None,
                          metrics_url=args.metrics_url, generator_pids=args.generator_pid,
                          interval=interval, uss_every=args.uss_every, ports=args.port,
                          budget_percent=args.budget_percent, cpu_usage_file=args.cpu_usage_file)
    except SamplerError as exc:
        print(f"sampler: {exc}", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as fh:
            sampler.run(fh, max_seconds=args.max_seconds, stop=stop, exit_with_parent=args.exit_with_parent,
                        startup_cpu_seconds=time.process_time())
    except OSError as exc:
        print(f"sampler: cannot write {args.out}: {exc}", file=sys.stderr)
        return 2
    finally:
        sampler.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
