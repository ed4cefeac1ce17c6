"""`python -m lab <command>`: the one entry point of the control plane (the Makefile calls it)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from lab.stack import database, stack

# command -> (module whose main(argv) runs it, one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "load": ("lab.load.runner", "drive every server with the Locust scenarios (make load)"),
    "calibrate": ("lab.load.calibrate", "measure what the load generator can drive here"),
    "selfcheck": ("lab.selfcheck", "A/A and A/B: the same twice is no change, a known change is found"),
    "results": ("lab.results.build", "rebuild results.json from a run's raw files"),
    "report": ("lab.report.run_report", "rebuild a run's index.html and summary.md"),
    "compare": ("lab.report.compare", "compare two runs (compare.html, compare.md)"),
    "tune": ("lab.tune.cli", "sweep a server knob and recommend a value"),
    "bench": ("lab.bench.bench", "wrk side by side: rps, CPU and instructions per request"),
    "faults": ("lab.faults.suite", "every server through overload, database faults, slow clients, bad input"),
    "claims": ("lab.claims.runner", "the folklore on threads, greenlets and event loops, measured here"),
    "database": ("lab.stack.database", "the embedded PostgreSQL alone: up, down, status, url"),
    "hosts": ("lab.hosts.cli", "test hosts on this machine (network namespaces): up, down, status"),
    "distance": ("lab.load.distance", "each server at 0, 5 and 50 ms of added RTT, one offered rate"),
    "worker": ("lab.load.worker_agent", "a Locust worker for make load on another machine, kept connected"),
}
STACK = ("up", "down", "status", "logs", "clean")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:  # the command's own parser takes the rest of the line
        module, _ = COMMANDS[argv[0]]
        run: int = importlib.import_module(module).main(argv[1:])
        return run
    parser = argparse.ArgumentParser(prog="python -m lab", description="serverlab control plane")
    sub = parser.add_subparsers(dest="command", required=True)
    stacked = [
        up := sub.add_parser("up", help="start PostgreSQL and the servers (LAB_SERVERS), wait until healthy"),
        sub.add_parser("down", help="stop the servers (graceful, then SIGKILL) and the embedded PostgreSQL"),
        sub.add_parser("status", help="what runs and its health"),
        logs := sub.add_parser("logs", help="tail the logs"),
        sub.add_parser("clean", help="stop everything; remove the database's home and the run folder"),
    ]
    up.add_argument("--allow-extra-cpu", action="store_true",
                    help="start the servers with LAB_EXTRA_CPU_US, a lab-only knob that adds CPU work to "
                         "every request (refused without this) [LAB_ALLOW_EXTRA_CPU=1]")
    logs.add_argument("--no-follow", action="store_true", help="print the last lines and exit")
    logs.add_argument("-n", "--lines", type=int, default=50)
    for command in stacked:
        database.add_home_flag(command)
    for name, (_module, text) in COMMANDS.items():
        sub.add_parser(name, help=f"{text} (`python -m lab {name} --help`)", add_help=False)
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            return stack.up(allow_extra_cpu=args.allow_extra_cpu)
        if args.command == "down":
            return stack.down()
        if args.command == "status":
            return stack.status()
        if args.command == "logs":
            return stack.logs(follow=not args.no_follow, lines=args.lines)
        return stack.clean()
    except stack.StackError as exc:
        print(f"lab {args.command}: {exc}", file=sys.stderr)
        return 2


def piped_main() -> int:
    """main(), quiet when the reader of its output goes away (`python -m lab compare ... | head`)."""
    try:
        return main()
    except BrokenPipeError:
        # the rest of the output has nowhere to go: point stdout at nothing so the exit flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(piped_main())
