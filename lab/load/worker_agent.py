"""`python -m lab worker --master HOST:PORT`: a Locust worker on another machine, kept connected.

`make load` starts a new Locust master for every repetition. This agent runs `locust --worker` and,
once the master it served is gone, starts a new worker (Locust's own distributed mode: no scheduler
here), so one command on each worker machine serves a whole run. A worker left running after its
master is stopped here, not left to join the next master half-way (that master would take its
leaving as the end of its test). A new worker retries until the next master listens. It stops on Ctrl-C,
after --max-hours, or after --max-runs workers; it says what each worker did.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lab.knobs import env_flag

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO / "loadtests" / "locustfile.py"
RETRY_SECONDS = 1.0
QUICK_EXIT = 5.0  # a worker gone sooner than this did not reach its master: wait longer


def say(message: str) -> None:
    print(f"[lab worker {time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_master(raw: str) -> tuple[str, int]:
    host, sep, port = raw.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--master {raw!r}: give the master's address and port as HOST:PORT, e.g. "
                         "192.0.2.10:5557 (the LAB_BIND and LOCUST_MASTER_PORT of `make load`)")
    return host.strip("[]"), int(port)


def listening(host: str, port: int) -> bool:
    """Whether a master listens at host:port now (a TCP connect, closed at once)."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host", host,
            "--master-port", str(port), "--loglevel", "INFO"]


def run(host: str, port: int, max_hours: float, max_runs: int) -> int:
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    deadline = time.monotonic() + max_hours * 3600
    backoff = RETRY_SECONDS
    say(f"serving the Locust master at {host}:{port}; Ctrl-C stops (at most {max_runs} workers, "
        f"{max_hours:g} h)")
    for n in range(1, max_runs + 1):
        if stopping or time.monotonic() >= deadline:
            break
        began = time.monotonic()
        worker = subprocess.Popen(command(host, port), cwd=REPO, stdin=subprocess.DEVNULL,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        seen = False  # the master was seen listening since this worker started
        try:
            while worker.poll() is None and not stopping and time.monotonic() < deadline:
                up = listening(host, port)
                if seen and not up:  # its master is gone: this worker's repetition is over
                    worker.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        worker.wait(3)
                    break
                seen = seen or up
                time.sleep(0.5)
        except KeyboardInterrupt:
            stopping.append(signal.SIGINT)
        if worker.poll() is None and (stopping or time.monotonic() >= deadline):
            worker.send_signal(signal.SIGINT)
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(5)
            break
        if worker.poll() is None:
            worker.kill()
            worker.wait(5)
        lived = time.monotonic() - began
        if lived < QUICK_EXIT:
            backoff = min(30.0, backoff * 2)
            say(f"worker {n} exited with code {worker.returncode} after {lived:.0f}s (is the master at "
                f"{host}:{port} up, and is `make load` waiting for workers?); again in {backoff:.0f}s")
        else:
            backoff = RETRY_SECONDS
            say(f"worker {n} done after {lived:.0f}s (exit {worker.returncode}): the master ended a "
                "repetition; connecting again for the next")
        time.sleep(backoff)
    say("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    env_flag(parser, "--master", "LAB_WORKER_MASTER", "", "the Locust master as HOST:PORT (required)")
    env_flag(parser, "--max-hours", "LAB_WORKER_MAX_HOURS", "24", "stop after this many hours (default 24)")
    env_flag(parser, "--max-runs", "LAB_WORKER_MAX_RUNS", "10000",
             "stop after this many workers, one per repetition (default 10000)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        host, port = parse_master(args.master)
        hours, runs = float(args.max_hours), int(args.max_runs)
        if not 0 < hours <= 24 * 30 or not 0 < runs <= 1_000_000:
            raise ValueError("--max-hours must be above 0 and at most 720, --max-runs from 1 to 1000000")
    except ValueError as exc:
        print(f"lab worker: {exc}", file=sys.stderr)
        return 2
    try:
        return run(host, port, hours, runs)
    except KeyboardInterrupt:
        say("stopped")
        return 0


if __name__ == "__main__":
    sys.exit(main())
