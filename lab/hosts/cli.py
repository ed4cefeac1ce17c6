"""`python -m lab hosts up|down|status`: the test hosts (network namespaces) as a person drives them."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from lab.hosts import netns
from lab.knobs import env_flag


def add_hosts_flags(parser: argparse.ArgumentParser, env: Mapping[str, str] = os.environ) -> None:
    """--hosts-prefix and --hosts-subnet: which set of test hosts (make load takes them too)."""
    env_flag(parser, "--hosts-prefix", "LAB_HOSTS_PREFIX", netns.DEFAULT_PREFIX,
             "name prefix of the test hosts' namespaces and links (default serverlab)", env)
    env_flag(parser, "--hosts-subnet", "LAB_HOSTS_SUBNET", netns.DEFAULT_SUBNET,
             f"a /24 inside {netns.BENCHMARK_RANGE} for the test hosts (default {netns.DEFAULT_SUBNET})", env)


def hosts_from(args: argparse.Namespace) -> netns.TestHosts:
    return netns.TestHosts(prefix=args.hosts_prefix.strip(), subnet=args.hosts_subnet.strip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab hosts",
        description="Test hosts on this machine: network namespaces a (servers, PostgreSQL), b (Locust "
                    "master), c (Locust workers) on one bridge, this machine at .254. Needs root.")
    parser.add_argument("action", choices=("up", "down", "status"))
    add_hosts_flags(parser)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        hosts = hosts_from(args)
        if args.action == "up":
            made = netns.up(hosts)
            print("hosts up: " + ("; ".join(made) if made else "all there already"))
            _print_status(hosts)
        elif args.action == "down":
            removed = netns.down(hosts)
            print("hosts down: " + ("; ".join(removed) if removed else "nothing was there"))
        else:
            _print_status(hosts)
    except netns.HostsError as exc:
        print(f"lab hosts {args.action}: {exc}", file=sys.stderr)
        return 2
    return 0


def _print_status(hosts: netns.TestHosts) -> None:
    rows = netns.status(hosts)
    print(f"{'host':<5} {'namespace':<16} {'address':<15} {'state':<8} processes")
    for row in rows:
        state = "up" if row.present and row.addresses else "partial" if row.present else "absent"
        print(f"{row.name:<5} {row.namespace:<16} {row.address:<15} {state:<8} {row.processes}")
    if not any(r.present for r in rows):
        print("no test hosts: `make hosts-up` (or `python -m lab hosts up`) creates them")
    else:
        print(f"run a command on a host: {' '.join(hosts.run_in('a'))} <command>")


if __name__ == "__main__":
    sys.exit(main())
