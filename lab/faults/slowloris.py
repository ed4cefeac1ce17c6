"""Probe by hand: N sockets trickle a request head, one byte every few seconds, at a running server.

    python -m lab.faults.slowloris http://127.0.0.1:8002 [--sockets 200] [--every 2] [--seconds 15]

Prints how many the server closed, after how long, what it answered, and whether a normal client
was served meanwhile. Loopback only; it stops by itself after --seconds.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence

from lab.faults import wire
from lab.faults.client_cases import SlowLoris


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.faults.slowloris",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url")
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between bytes")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long the attack lasts at most")
    args = parser.parse_args(argv)
    if wire.split_url(args.url)[0] not in ("127.0.0.1", "::1", "localhost"):
        parser.error("loopback only")
    attack = SlowLoris(args.url, min(args.sockets, 5000), every=args.every)
    runner = threading.Thread(target=attack.run, args=(min(args.seconds, 600.0),))
    runner.start()
    time.sleep(1.0)
    normal = [wire.request(args.url, "GET", "/json", timeout=5).status for _ in range(20)]
    runner.join()
    closed = sorted(attack.closed_after)
    span = f"after {closed[0]:.1f} to {closed[-1]:.1f} s" if closed else "none"
    print(
        f"{args.url}: {len(closed)} of {args.sockets} slow sockets closed by the server ({span}); "
        f"answers {sorted({a.split(b' ')[1].decode() for a in attack.answers if b' ' in a})}; "
        f"a normal client meanwhile got {sorted(set(normal))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
