"""`python -m lab <command>`: the lab's control plane (the Makefile calls these)."""

from __future__ import annotations

import argparse
import sys

from lab import stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description="serverlab control plane")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start PostgreSQL and the servers (LAB_SERVERS), wait until healthy")
    sub.add_parser("down", help="stop the servers (graceful, then SIGKILL) and the embedded PostgreSQL")
    sub.add_parser("status", help="what runs and its health")
    logs = sub.add_parser("logs", help="tail the logs")
    logs.add_argument("--no-follow", action="store_true", help="print the last lines and exit")
    logs.add_argument("-n", "--lines", type=int, default=50)
    sub.add_parser("clean", help="stop everything; remove the database data and the run folder")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            return stack.up()
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


if __name__ == "__main__":
    sys.exit(main())
