"""Where a run's parts live: the servers' listening address, the Locust master's, and the test hosts.

- One machine (default): servers listen on 127.0.0.1 (LAB_BIND), Locust runs here.
- Real hosts: servers here, listening on LAB_BIND (this machine's address the workers reach, never
  every interface unless asked); the master listens on the same address (LOCUST_MASTER_BIND to
  differ) and waits for LOCUST_REMOTE_WORKERS workers that `python -m lab worker` keeps connected.
- Test hosts (LAB_TEST_HOSTS=1): the lab's network namespaces stand in for machines. PostgreSQL and
  the servers on host a, the Locust master on b, LOCUST_WORKERS workers (default 2) on c. The lab
  then reads the servers as it would on another machine: over the network, from /metrics.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, replace
from pathlib import Path

from lab.hosts import netns
from lab.stack import database, pg_config

LOOPBACK = "127.0.0.1"
WILDCARDS = frozenset({"0.0.0.0", "::", ""})
TEST_HOST_WORKERS = 2


class TopologyError(ValueError):
    """A placement that cannot work, with what to set instead."""


@dataclass(frozen=True)
class Topology:
    bind: str = LOOPBACK  # where the servers listen
    target_host: str = LOOPBACK  # the servers' address as the load generator sees it
    master_bind: str = LOOPBACK  # where the Locust master listens for its workers
    hosts: netns.TestHosts | None = None  # the lab's test hosts, when the run uses them

    @property
    def remote_servers(self) -> bool:
        """The lab reads the servers from outside only (their /metrics), as on another machine."""
        return self.hosts is not None

    def master_prefix(self) -> list[str]:
        return self.hosts.run_in("b") if self.hosts else []

    def worker_prefix(self) -> list[str]:
        return self.hosts.run_in("c") if self.hosts else []

    def worker_master_host(self) -> str:
        """The address workers started by the lab connect to."""
        return self.master_bind if self.hosts else LOOPBACK

    def describe(self, workers: int, remote_workers: int) -> str:
        if self.hosts:
            h = self.hosts
            return (f"test hosts: servers and PostgreSQL on a ({h.address('a')}), the Locust master on b "
                    f"({h.address('b')}), {workers} workers on c ({h.address('c')})")
        where = f"servers on {self.bind}" + (f" (reached at {self.target_host})"
                                             if self.target_host != self.bind else "")
        if remote_workers:
            here = f" and {workers} here" if workers else ""
            return (f"{where}; the Locust master on {self.master_bind}, {remote_workers} workers on other "
                    f"machines{here}")
        return f"one machine: {where}, " + (f"a Locust master and {workers} workers" if workers
                                            else "Locust as one process")

    def as_dict(self, workers: int, remote_workers: int) -> dict[str, object]:
        out: dict[str, object] = {
            "kind": "test-hosts" if self.hosts else "remote-workers" if remote_workers else "local",
            "bind": self.bind, "target_host": self.target_host, "master_bind": self.master_bind,
            "workers_here": 0 if self.hosts else workers, "remote_workers": remote_workers,
            "text": self.describe(workers, remote_workers)}
        if self.hosts:
            out["hosts"] = {h: self.hosts.address(h) for h in ("a", "b", "c")}
            out["workers_on_c"] = workers
        return out


def _is_local(address: str) -> bool:
    """Whether this machine has the address (so a server can listen on it)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True


def _address(raw: str, knob: str) -> str:
    text = raw.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    try:
        return socket.gethostbyname(text)
    except OSError:
        raise TopologyError(f"{knob}={text!r} is neither an IP address nor a name this machine resolves; "
                            "give this machine's address, e.g. 192.0.2.10") from None


def resolve(bind: str, target: str, master_bind: str, remote_workers: int,
            hosts: netns.TestHosts | None) -> Topology:
    """The run's placement from its knobs (each "" when not given)."""
    if hosts is not None:
        if remote_workers:
            raise TopologyError("LAB_TEST_HOSTS runs every Locust worker on test host c: drop "
                                "LOCUST_REMOTE_WORKERS (LOCUST_WORKERS sets how many)")
        a, b = hosts.address("a"), hosts.address("b")
        for knob, given, placed in (("LAB_BIND", bind, a), ("LAB_TARGET_HOST", target, a),
                                    ("LOCUST_MASTER_BIND", master_bind, b)):
            if given.strip() and given.strip() != placed:
                raise TopologyError(f"{knob}={given} conflicts with LAB_TEST_HOSTS, which puts it at "
                                    f"{placed}: unset {knob}")
        return Topology(bind=a, target_host=a, master_bind=b, hosts=hosts)
    listen = _address(bind, "LAB_BIND") if bind.strip() else ""
    aim = _address(target, "LAB_TARGET_HOST") if target.strip() else ""
    if not listen:
        listen = aim if aim and _is_local(aim) else LOOPBACK
    if listen in WILDCARDS and not aim:
        raise TopologyError(f"LAB_BIND={listen} listens on every interface: also give LAB_TARGET_HOST, the "
                            "address the load generator reaches the servers at (or bind to that address)")
    if listen not in WILDCARDS and not _is_local(listen):
        raise TopologyError(f"LAB_BIND={listen} is not an address of this machine, so the servers cannot "
                            "listen on it: give one of this machine's addresses (`ip -br addr`)")
    aim = aim or listen
    if master_bind.strip():
        master = _address(master_bind, "LOCUST_MASTER_BIND")
    elif remote_workers:
        if ipaddress.ip_address(listen).is_loopback or listen in WILDCARDS:
            raise TopologyError("workers on other machines cannot reach a Locust master on "
                                f"{listen}: set LAB_BIND (or LOCUST_MASTER_BIND) to this machine's address "
                                "that they reach")
        master = listen
    else:
        master = LOOPBACK
    return Topology(bind=listen, target_host=aim, master_bind=master)


def database_cfg(hosts: netns.TestHosts) -> pg_config.PgConfig:
    """The embedded PostgreSQL, placed on test host a: a data dir of its own beside the usual one."""
    cfg = pg_config.PgConfig.from_env()
    return replace(cfg, data_dir=Path(cfg.data_dir.parent / f"pgdata-{hosts.prefix}"),
                   listen=hosts.address("a"), netns=hosts.namespace("a"), trust_subnet=hosts.subnet)


def provision_on(hosts: netns.TestHosts) -> str:
    """Start PostgreSQL on host a (the hosts made first when missing); the URL of its ready database."""
    netns.up(hosts)
    cfg = database_cfg(hosts)
    database.start(cfg)
    url = f"postgresql://{database.SUPERUSER}@{cfg.listen}:{cfg.port}/serverlab"
    database.ensure_database(url, "serverlab")
    database.apply_schema(url)
    return url


def stop_database(hosts: netns.TestHosts) -> None:
    database.stop(database_cfg(hosts))
