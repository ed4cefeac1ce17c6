"""Test hosts on this machine: network namespaces on one bridge, addressed from 198.18.0.0/15.

    hosts a, b, c   namespaces <prefix>-a, -b, -c, each with eth0 at .1, .2, .3 of the subnet
    switch          namespace <prefix>-sw holding the bridge br0 (so the host's firewall never sees
                    the traffic between hosts), one veth port per host
    this machine    a veth <prefix>-lab at .254, so the lab reaches every host from here

The range is RFC 2544's benchmarking block: traffic to it never leaves the machine. `up` creates what
is missing and leaves the rest (idempotent); `down` stops what still runs inside the hosts, deletes
every namespace (their veths go with them) and checks that nothing is left.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

BENCHMARK_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
DEFAULT_SUBNET = "198.18.0.0/24"
DEFAULT_PREFIX = "serverlab"
HOSTS = ("a", "b", "c")  # a: servers and PostgreSQL; b: the Locust master; c: Locust workers
LAB_OCTET = 254
STOP_SECONDS = 5.0


class HostsError(RuntimeError):
    """What went wrong and what to do next."""


@dataclass(frozen=True)
class TestHosts:
    """Names and addresses of one set of test hosts."""

    prefix: str = DEFAULT_PREFIX
    subnet: str = DEFAULT_SUBNET

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,10}", self.prefix):
            raise HostsError(f"host prefix {self.prefix!r}: 1 to 11 lower-case letters or digits, "
                             "starting with a letter (interface names are limited to 15 characters)")
        try:
            net = ipaddress.ip_network(self.subnet)
        except ValueError as exc:
            raise HostsError(f"subnet {self.subnet!r}: {exc}; give one such as {DEFAULT_SUBNET}") from None
        if not isinstance(net, ipaddress.IPv4Network) or not net.subnet_of(BENCHMARK_RANGE) \
                or net.prefixlen != 24:
            raise HostsError(f"subnet {self.subnet}: give a /24 inside {BENCHMARK_RANGE} (the benchmarking "
                             f"range, never routed off this machine), e.g. {DEFAULT_SUBNET}")

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    def namespace(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    @property
    def lab_link(self) -> str:
        return f"{self.prefix}-lab"

    def address(self, host: str) -> str:
        """The host's address; "lab" is this machine's leg on the bridge."""
        octet = LAB_OCTET if host == "lab" else HOSTS.index(host) + 1
        return str(self.network.network_address + octet)

    def run_in(self, host: str) -> list[str]:
        """The command prefix that runs a program on the host."""
        return ["ip", "netns", "exec", self.namespace(host)]

    @property
    def namespaces(self) -> list[str]:
        return [*(self.namespace(h) for h in HOSTS), self.switch]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise HostsError(f"`ip {' '.join(args)}` failed: {done.stderr.strip() or done.returncode}")
    return done


def refused() -> str | None:
    """Why test hosts cannot be made here (None: they can). Tries it: a namespace made and removed."""
    if not os.path.isdir("/proc/self/ns"):
        return "network namespaces need Linux"
    if shutil.which("ip") is None:
        return "the `ip` command is missing: install iproute2 (apt-get install iproute2)"
    probe = f"{DEFAULT_PREFIX}-probe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        why = made.stderr.strip() or f"exit {made.returncode}"
        return (f"network namespaces are refused here ({why}): test hosts need root or CAP_NET_ADMIN "
                "and CAP_SYS_ADMIN; run as root (e.g. sudo make hosts-up)")
    _ip("netns", "del", probe, check=False)
    return None


def existing_namespaces() -> set[str]:
    done = _ip("netns", "list", check=False)
    return {line.split()[0] for line in done.stdout.splitlines() if line.strip()}


def _has_link(name: str, namespace: str | None = None) -> bool:
    where = ["-n", namespace] if namespace else []
    return _ip(*where, "link", "show", name, check=False).returncode == 0


def _addresses(link: str, namespace: str | None = None) -> list[str]:
    where = ["-n", namespace] if namespace else []
    done = _ip(*where, "-4", "-o", "addr", "show", "dev", link, check=False)
    return [line.split()[3] for line in done.stdout.splitlines() if len(line.split()) > 3]


def _set_address(link: str, cidr: str, namespace: str | None = None) -> None:
    where = ["-n", namespace] if namespace else []
    others = [a for a in _addresses(link, namespace) if a != cidr]
    if others:
        where_text = f" in {namespace}" if namespace else ""
        raise HostsError(f"{link}{where_text} already has {', '.join(others)}, not {cidr}: these hosts are "
                         "up with another subnet; run `python -m lab hosts down` first")
    _ip(*where, "addr", "replace", cidr, "dev", link)
    _ip(*where, "link", "set", link, "up")


def up(hosts: TestHosts) -> list[str]:
    """Create whatever is missing; returns what was created (empty: all was there already)."""
    why = refused()
    if why:
        raise HostsError(why)
    made: list[str] = []
    have = existing_namespaces()
    for ns in hosts.namespaces:
        if ns not in have:
            _ip("netns", "add", ns)
            made.append(f"namespace {ns}")
        _ip("-n", ns, "link", "set", "lo", "up")
    sw = hosts.switch
    if not _has_link("br0", sw):
        _ip("-n", sw, "link", "add", "br0", "type", "bridge")
        made.append(f"bridge br0 in {sw}")
    _ip("-n", sw, "link", "set", "br0", "up")
    bits = hosts.network.prefixlen
    for host in HOSTS:
        ns, port = hosts.namespace(host), f"port-{host}"
        if not _has_link(port, sw) or not _has_link("eth0", ns):
            _ip("-n", sw, "link", "del", port, check=False)  # half a pair from an interrupted `up`
            _ip("link", "add", port, "netns", sw, "type", "veth", "peer", "name", "eth0", "netns", ns)
            made.append(f"veth {ns}:eth0 - {sw}:{port}")
        _ip("-n", sw, "link", "set", port, "master", "br0", "up")
        _set_address("eth0", f"{hosts.address(host)}/{bits}", ns)
    if not _has_link(hosts.lab_link) or not _has_link("port-lab", sw):
        _ip("link", "del", hosts.lab_link, check=False)
        _ip("link", "add", hosts.lab_link, "type", "veth", "peer", "name", "port-lab", "netns", sw)
        made.append(f"veth {hosts.lab_link} - {sw}:port-lab")
    _ip("-n", sw, "link", "set", "port-lab", "master", "br0", "up")
    _set_address(hosts.lab_link, f"{hosts.address('lab')}/{bits}")
    return made


def lock_path(hosts: TestHosts) -> Path:
    """One lock file per set of test hosts, machine-wide (namespace names are)."""
    folder = Path("/run/lock")
    if not (folder.is_dir() and os.access(folder, os.W_OK)):
        folder = Path(tempfile.gettempdir())
    return folder / f"serverlab-hosts-{hosts.prefix}.lock"


HELD_ENV = "LAB_HOSTS_HELD"  # the locks this process holds, so that its children (one session) pass


@contextlib.contextmanager
def claimed(hosts: TestHosts, holder: str, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold this set of test hosts for one user (a test session, a load run) for the block. Another user
    of the same set waits up to wait_seconds, then fails with who holds it, instead of taking the hosts
    down under the first; a process the holder started (LAB_HOSTS_HELD names the lock) is the same user
    and passes. The kernel drops the lock when its holder exits, however it ends."""
    path = lock_path(hosts)
    held = os.environ.get(HELD_ENV, "")
    if str(path) in held.split(os.pathsep):
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_seconds
        for _ in range(int(wait_seconds / 0.5) + 1):  # bounded by the deadline
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    held_by = os.pread(fd, 500, 0).decode(errors="replace").strip() or "another process"
                    raise HostsError(
                        f"test hosts {hosts.prefix} ({hosts.subnet}) are in use by {held_by} (lock {path}); "
                        f"wait until it ends, or use another set of hosts: another --hosts-prefix and "
                        f"--hosts-subnet (LAB_HOSTS_PREFIX, LAB_HOSTS_SUBNET)") from None
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({holder})\n".encode(), 0)
        os.environ[HELD_ENV] = os.pathsep.join(filter(None, (held, str(path))))
        try:
            yield
        finally:
            if held:
                os.environ[HELD_ENV] = held
            else:
                os.environ.pop(HELD_ENV, None)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def pids_in(namespace: str) -> list[int]:
    done = _ip("netns", "pids", namespace, check=False)
    return [int(x) for x in done.stdout.split() if x.isdigit()]


def _stop(pids: Sequence[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
            time.sleep(0.05)


def leftovers(hosts: TestHosts) -> list[str]:
    """Whatever of these hosts still exists (empty after a clean `down`)."""
    left = [f"namespace {ns}" for ns in hosts.namespaces if ns in existing_namespaces()]
    if _has_link(hosts.lab_link):
        left.append(f"link {hosts.lab_link}")
    return left


def down(hosts: TestHosts) -> list[str]:
    """Stop every process inside the hosts, delete them; returns what was removed. Raises when
    something is left."""
    removed: list[str] = []
    have = existing_namespaces()
    for ns in hosts.namespaces:
        if ns not in have:
            continue
        pids = pids_in(ns)
        if pids:
            _stop(pids)
            removed.append(f"{len(pids)} process(es) in {ns}")
        _ip("netns", "del", ns)
        removed.append(f"namespace {ns}")
    if _has_link(hosts.lab_link):  # gone with its peer in the switch, unless `up` was interrupted
        _ip("link", "del", hosts.lab_link)
        removed.append(f"link {hosts.lab_link}")
    left = leftovers(hosts)
    if left:
        raise HostsError(f"still there after down: {', '.join(left)}; see `ip netns list` and `ip link`")
    return removed


@dataclass(frozen=True)
class HostStatus:
    name: str
    namespace: str
    address: str
    present: bool
    addresses: tuple[str, ...]
    processes: int


def status(hosts: TestHosts) -> list[HostStatus]:
    have = existing_namespaces()
    out = []
    for host in HOSTS:
        ns = hosts.namespace(host)
        present = ns in have
        out.append(HostStatus(host, ns, hosts.address(host), present,
                              tuple(_addresses("eth0", ns)) if present else (),
                              len(pids_in(ns)) if present else 0))
    lab_present = _has_link(hosts.lab_link)
    out.append(HostStatus("lab", "(this machine)", hosts.address("lab"), lab_present,
                          tuple(_addresses(hosts.lab_link)) if lab_present else (), 0))
    return out


_CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def call_in(namespace: str, fn: Callable[[], T]) -> T:
    """fn() on a thread that entered the network namespace: what it starts (subprocess) runs on that
    host, even where privileges are dropped before exec (PostgreSQL runs as another user when root)."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise HostsError(f"cannot enter {namespace}: {os.strerror(code)}")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)

    thread = threading.Thread(target=run, name=f"in-{namespace}")  # gone with its namespace at its end
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
