"""Probe by hand: non-2xx answers under `wrk -c64` on the pool-bound endpoints (issue 11, defect 8).

    python -m lab.faults.fairness http://127.0.0.1:8102 [--seconds 10] [--connections 64]

An unfair pool queue (a newcomer takes a just-released connection while a woken waiter re-queues)
shows as 503s at a load the pool can serve; a first-come gate shows none. Loopback only.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence

from lab.faults.wire import split_url

TARGETS = ("/fortunes", "/queries?queries=20", "/db")


def wrk(url: str, target: str, seconds: float, connections: int) -> dict[str, float]:
    host, _ = split_url(url)
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise SystemExit(f"loopback only, not {host}")
    exe = shutil.which("wrk")
    if exe is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk (make bench installs it)")
    out = subprocess.run(
        [exe, "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", url + target],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else 0.0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.faults.fairness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    for target in TARGETS:
        for url in args.urls:
            got = wrk(url, target, args.seconds, args.connections)
            print(
                f"{url}{target}: {got['rps']:.0f} rps, p99 {got['p99_ms']:.1f} ms, non-2xx {got['non_2xx']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
