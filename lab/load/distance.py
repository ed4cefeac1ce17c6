"""`python -m lab distance`: each server at 0, 5 and 50 ms of added round-trip time and one offered rate
(open model), through the lab's fault proxy in delay mode; peak threads, RSS, open connections, p99.

The delay: `tc netem` is used nowhere here. The proxy (lab/faults/proxy.py) sits between the load
generator and the server on loopback and holds every chunk RTT/2 in each direction, so a request
that is one chunk each way waits one RTT more. The TCP handshake to the server is not delayed (the
proxy opens its upstream at accept), which matters little: the generator keeps connections alive.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from lab import cpus as cpu_lists
from lab import knobs
from lab.faults.load import percentile
from lab.faults.proxy import FaultProxy
from lab.load.proctree import ProcessTree
from lab.load.sockdiag import SockDiag
from lab.report import distance_table
from lab.stack import database, procs

MODELS = ("threaded", "gevent", "asyncio", "multiproc")
ESTABLISHED = 1
MAX_CLIENTS = 400  # open connections the generator may hold; beyond, arrivals queue (and count late)
SAMPLE_EVERY = 0.2


class OpenLoad:
    """Arrivals at a fixed rate for a fixed time, each sent on an idle keep-alive connection or a new
    one (so connections in flight follow Little's law); latency counts from the scheduled arrival."""

    def __init__(self, host: str, port: int, path: str, rate: float, seconds: float) -> None:
        self.host, self.port, self.path = host, port, path
        self.rate, self.seconds = rate, seconds
        self.samples: list[tuple[float, int]] = []  # (seconds from due to answer, status; 0 = no answer)
        self.clients = 0
        self._jobs: queue.Queue[float | None] = queue.Queue()
        self._idle = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def run(self) -> list[tuple[float, int]]:
        start = time.monotonic() + 0.05
        for i in range(int(self.rate * self.seconds)):
            due = start + i / self.rate
            time.sleep(max(0.0, due - time.monotonic()))
            with self._lock:
                spawn = self._idle == 0 and self.clients < MAX_CLIENTS
                if spawn:
                    self.clients += 1
                else:
                    self._idle -= 1 if self._idle else 0
            if spawn:
                thread = threading.Thread(target=self._client, daemon=True)
                thread.start()
                self._threads.append(thread)
            self._jobs.put(due)
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(30.0)
        return self.samples

    def _client(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while (due := self._jobs.get()) is not None:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=10.0)
                conn.request("GET", self.path)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                status = 0
                if conn is not None:
                    conn.close()
                conn = None
            self.samples.append((time.monotonic() - due, status))
            with self._lock:
                self._idle += 1
        if conn is not None:
            conn.close()


class Peaks:
    """The server's process tree and its established connections, sampled until stop(); the peaks."""

    def __init__(self, pid: int, port: int) -> None:
        self.tree = ProcessTree([pid])
        self.port = port
        self.threads = self.rss = self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def measure(self) -> tuple[int, int, int]:
        stats = self.tree.measure()
        diag = SockDiag()
        try:
            conns = sum(diag.count_states(family, [self.port]).get(ESTABLISHED, 0)
                        for family in (socket.AF_INET, socket.AF_INET6))
        finally:
            diag.close()
        return stats.threads, stats.rss, conns

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            threads, rss, conns = self.measure()
            self.threads, self.rss = max(self.threads, threads), max(self.rss, rss)
            self.connections = max(self.connections, conns)

    def __enter__(self) -> Peaks:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5.0)


def probe_rtt(host: str, port: int, count: int = 20) -> float:
    """Median seconds of `count` sequential GET /plaintext on one connection: the sanity figure."""
    conn = http.client.HTTPConnection(host, port, timeout=10.0)
    took = []
    try:
        for _ in range(count):
            began = time.monotonic()
            conn.request("GET", "/plaintext")
            conn.getresponse().read()
            took.append(time.monotonic() - began)
    finally:
        conn.close()
    return percentile(took, 50)


def netem_check() -> str:
    """Whether `tc netem` works here, tried in a throwaway network namespace (nothing is left behind)."""
    if not (shutil.which("unshare") and shutil.which("tc")):
        return "not tried: unshare or tc missing"
    try:
        argv = ["unshare", "-n", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"not tried: {exc}"
    return "available" if done.returncode == 0 else f"unavailable: {(done.stderr or done.stdout).strip()}"


def load_cpu_seconds() -> float:
    """CPU seconds of this process: the generator and the proxy (its threads live here)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_point(server: procs.ServerProcess, rtt_ms: float, args: argparse.Namespace) -> dict[str, Any]:
    """One server at one added RTT: warm-up, the sanity probe, then the open-model load."""
    with FaultProxy((server.host, server.port)) as proxy:
        if rtt_ms:
            proxy.delay(rtt_ms / 2000)  # each way: a chunk there and one back add one RTT
        probe_rtt(proxy.host, proxy.port, 5)  # warm-up: pools and caches
        probe = probe_rtt(proxy.host, proxy.port)
        peaks = Peaks(server.pid, server.port)
        idle_threads, idle_rss, _ = peaks.measure()
        cpu0, wall0 = load_cpu_seconds(), time.monotonic()
        load = OpenLoad(proxy.host, proxy.port, args.path, args.rate, args.seconds)
        with peaks:
            samples = load.run()
        wall = time.monotonic() - wall0
        cpu = load_cpu_seconds() - cpu0
    ok = [s for s, status in samples if status == 200]
    return {
        "server": server.model, "rtt_ms": rtt_ms, "offered_rps": args.rate, "seconds": args.seconds,
        "requests": len(samples), "ok": len(ok), "errors": len(samples) - len(ok),
        "achieved_rps": round(len(ok) / wall, 1) if wall else 0.0,
        "p50_ms": round(percentile(ok, 50) * 1000, 1), "p99_ms": round(percentile(ok, 99) * 1000, 1),
        "probe_ms": round(probe * 1000, 2),
        "idle_threads": idle_threads, "idle_rss_bytes": idle_rss,
        "peak_threads": peaks.threads, "peak_rss_bytes": peaks.rss,
        "peak_connections": peaks.connections, "client_connections": load.clients,
        "load_cpu_percent": round(100 * cpu / wall, 1) if wall else 0.0,
    }


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lab distance", description=__doc__.splitlines()[0])
    knobs.env_flag(p, "--servers", "LAB_SERVERS", ",".join(MODELS), "servers, comma-separated")
    knobs.env_flag(p, "--rtt-ms", "LAB_RTT_MS", "0,5,50", "added round-trip times in ms, comma-separated")
    knobs.env_flag(p, "--rate", "LAB_DISTANCE_RATE", "50", "offered requests/s (open model), below "
                   "every server's capacity")
    knobs.env_flag(p, "--seconds", "LAB_DISTANCE_SECONDS", "10", "seconds of load per server and RTT")
    knobs.env_flag(p, "--path", "LAB_DISTANCE_PATH", "/db", "the request every arrival sends")
    knobs.env_flag(p, "--server-cpus", "LAB_SERVER_CPUS", "0", "CPUs the servers are pinned to")
    knobs.env_flag(p, "--load-cpus", "LAB_LOAD_CPUS", "1", "CPUs the generator and the proxy run on")
    knobs.env_flag(p, "--reports-dir", "LAB_REPORTS_DIR", "reports", "where the run folder goes")
    args = p.parse_args(list(argv))
    try:
        args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
        if not args.servers or set(args.servers) - set(MODELS):
            raise ValueError(f"--servers / LAB_SERVERS={','.join(args.servers)!r}: use {', '.join(MODELS)}")
        args.rtts = [knobs.number(x, "--rtt-ms / LAB_RTT_MS", 0, 1000) or 0.0
                     for x in args.rtt_ms.split(",") if x.strip()]
        args.rate = knobs.number(args.rate, "--rate / LAB_DISTANCE_RATE", 1, 2000) or 50.0
        args.seconds = knobs.number(args.seconds, "--seconds / LAB_DISTANCE_SECONDS", 1, 600) or 10.0
        args.server_cpu_list = cpu_lists.parse_cpus(args.server_cpus)
        args.load_cpu_list = cpu_lists.parse_cpus(args.load_cpus)
    except ValueError as exc:
        p.error(str(exc))
    if not args.path.startswith("/"):
        p.error(f"--path / LAB_DISTANCE_PATH={args.path!r}: a path starting with /")
    return args


def run(args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    usable = os.sched_getaffinity(0)
    server_cpus = [c for c in args.server_cpu_list if c in usable] or None
    load_cpus = [c for c in args.load_cpu_list if c in usable] or None
    url = database.provision("serverlab_distance")
    rows: list[dict[str, Any]] = []
    for model in args.servers:
        env = {"LAB_LOG_LEVEL": "warning", **({"LAB_WORKERS": "2"} if model == "multiproc" else {})}
        server = procs.start_server(model, port=procs.free_port(), database_url=url,
                                    log_dir=folder / "logs" / model, env=env, health_timeout=60.0,
                                    cpus=server_cpus)
        try:
            with cpu_lists.running_on(load_cpus):
                for rtt in args.rtts:
                    print(f"distance: {model} at +{rtt:g} ms RTT, {args.rate:g} req/s "
                          f"for {args.seconds:g} s ...", file=sys.stderr, flush=True)
                    rows.append(measure_point(server, rtt, args))
                    print("  " + distance_table.one_line(rows[-1]), file=sys.stderr, flush=True)
        finally:
            procs.stop_server(server)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    folder = Path(args.reports_dir) / datetime.now().strftime("distance-%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    netem = netem_check()
    print(f"distance: delay by the lab's fault proxy, RTT/2 each way (tc netem: {netem})", file=sys.stderr)
    rows = run(args, folder)
    meta = {"command": "python -m lab distance " + " ".join(sys.argv[2:] if argv is None else argv),
            "delay": "lab fault proxy, RTT/2 each way", "netem": netem,
            "uptime": Path("/proc/loadavg").read_text().split()[:3], "host_cpus": os.cpu_count()}
    (folder / "distance.json").write_text(json.dumps({"meta": meta, "points": rows}, indent=2) + "\n")
    table = distance_table.markdown(rows)
    (folder / "distance.md").write_text(table + "\n")
    print(table)
    print(f"wrote {folder / 'distance.json'} and distance.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
