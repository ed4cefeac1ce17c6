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

--pid 0 samples a server on another host, whose /proc and cgroup this one cannot read: processes,
rss_bytes, threads, fds and cpu_percent then come from the process_* figures of its /metrics (its own
nanosecond CPU clocks, metrics.process_cpu_seconds), tcp, USS/PSS and the /proc counters are null.

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
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import psutil

from lab.load.budget import (
    DEEP_LEAST,
    DEEP_MOST,
    DEEP_SHARE,
    DEFAULT_BUDGET_PERCENT,
    DEFAULT_INTERVAL,
    TCP_MOST,
    TCP_SHARE,
    USS_MOST,
    USS_SHARE,
    Stride,
)
from lab.load.gauges import DbCounter, MetricsScraper
from lab.load.proctree import ProcessTree
from lab.load.sockdiag import LISTEN_ONLY, TCP_STATES, SockDiag
from lab.stack.cpu_budget import read_usage

REPO = Path(__file__).resolve().parents[2]
SCHEMA_VERSION = 1
DEFAULT_MAX_SECONDS = 3600.0
MAX_MAX_SECONDS = 7 * 24 * 3600.0
DEFAULT_USS_EVERY = 4  # smaps_rollup costs ~1 ms per 50 MB process here: at most 1 Hz by default
PORT_DISCOVERY_SECONDS = 1.0


class SamplerError(RuntimeError):
    """Bad arguments or a sampler that did not start; the message says what to do."""



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
        if pid and not psutil.pid_exists(pid):
            raise SamplerError(f"no process with pid {pid}; pass the server's root pid (--pid)")
        if not pid and not metrics_url:
            raise SamplerError("a server on another host (--pid 0) is sampled from its /metrics: give "
                               "--metrics-url, e.g. http://198.18.0.1:8003/metrics")
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
        self.tree = ProcessTree([pid], Stride(DEEP_LEAST, DEEP_MOST, DEEP_SHARE * budget)) if pid else None
        self._last_cpu: tuple[float, float] | None = None  # (t, seconds) of the last remote reading
        self.generator = (ProcessTree(self.generator_pids, Stride(DEEP_LEAST, DEEP_MOST, DEEP_SHARE * budget))
                          if self.generator_pids else None)
        self.db = DbCounter(database_url, app_name) if database_url and app_name else None
        try:
            self.metrics = MetricsScraper(metrics_url) if metrics_url else None
        except ValueError as exc:
            raise SamplerError(str(exc)) from None
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
        if self.tree is None or self.ports or self.diag is None or time.monotonic() < self._next_discovery:
            return
        self._next_discovery = time.monotonic() + PORT_DISCOVERY_SECONDS
        try:
            listening = {inode: (family, port) for family in (socket.AF_INET, socket.AF_INET6)
                         for _state, port, inode in self.diag.sockets(family, LISTEN_ONLY)}
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
        if self.tree is not None:
            self.tree.measure(full=False)
        elif self.metrics is not None:
            self._remote(time.time())
        if self.generator:
            self.generator.measure(full=False)

    def _remote(self, t: float) -> dict[str, Any]:
        """A server on another host: what its /metrics says of its process tree."""
        assert self.metrics is not None
        m = self.metrics.scrape() or {}
        cpu, percent = m.get("process_cpu_seconds"), None
        if cpu is not None:
            if self._last_cpu is not None and t > self._last_cpu[0]:
                percent = round(max(0.0, cpu - self._last_cpu[1]) / (t - self._last_cpu[0]) * 100, 1)
            self._last_cpu = (t, cpu)
        return {"t": round(t, 3), "processes": m.get("process_count"),
                "rss_bytes": m.get("process_rss_bytes"), "uss_bytes": None, "pss_bytes": None,
                "cpu_percent": percent, "cpu_seconds": None, "cgroup_cpu_seconds": None,
                "threads": m.get("process_threads"), "fds": m.get("process_fds"),
                "tcp": None, "db": self.db.count() if self.db else None, "metrics": m or None,
                "generator_cpu_percent": None}

    def sample(self) -> dict[str, Any]:
        t = time.time()
        if self.tree is None:
            remote = self._remote(t)
            if self.generator:
                gen = self.generator.measure(full=False)
                remote["generator_cpu_percent"] = gen.cpu_percent if gen.processes else None
            return remote
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
                    # One last sample at the stop, which comes after the measured window: a window's
                    # end is then always bracketed by samples, whose counters are interpolated there.
                    write(self.sample())
                    written += 1
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
    parser.add_argument("--pid", type=int, required=True,
                        help="the server's root pid (its tree is sampled); 0: a server on another host, "
                             "sampled from its /metrics (needs --metrics-url)")
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
