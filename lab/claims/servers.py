"""Start a server for one experiment on a free loopback port, and read what its processes use."""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil

from lab.stack import procs
from lab.stack.procs import ServerProcess

# /json and /cpu need no database; the health check needs one connection.
BASE_ENV = {"LAB_POOL_SIZE": "2", "LAB_LOG_LEVEL": "warning"}


@contextlib.contextmanager
def running(
    model: str,
    database_url: str,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    health_timeout: float = 60.0,
) -> Iterator[ServerProcess]:
    """The server, started and healthy; always stopped afterwards."""
    proc = None
    for attempt in range(3):
        try:
            proc = procs.start_server(
                model,
                port=procs.free_port(),
                database_url=database_url,
                log_dir=log_dir,
                env={**BASE_ENV, **(env or {})},
                health_timeout=health_timeout,
            )
            break
        except procs.PortInUseError:  # lost a race for the port
            if attempt == 2:
                raise
    assert proc is not None
    try:
        yield proc
    finally:
        procs.stop_server(proc, timeout=15)


def usage(pid: int) -> dict[str, Any]:
    """RSS (bytes), threads and open fds of a process and its children; its fd limit."""
    rss = threads = fds = 0
    fd_limit = None
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
        fd_limit = root.rlimit(psutil.RLIMIT_NOFILE)[0]
    except psutil.Error:
        tree = []
    for p in tree:
        with contextlib.suppress(psutil.Error):
            rss += p.memory_info().rss
            threads += p.num_threads()
            fds += p.num_fds()
    return {"rss": rss, "threads": threads, "fds": fds, "fd_limit": fd_limit, "processes": len(tree)}


def raise_fd_limit(wanted: int) -> tuple[int, int]:
    """Raise this process's fd limit (inherited by the servers it starts) toward `wanted`, as far as
    allowed: the soft limit up to the hard one, and the hard one too when root. (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if wanted > hard:
        try:
            nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            nr_open = hard
        with contextlib.suppress(ValueError, OSError):  # not root: keep the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, nr_open), min(wanted, nr_open)))
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(wanted, hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def usable_cpus() -> int:
    """CPUs this process may run on."""
    from servers.settings import usable_cpus as cpus

    return cpus()
