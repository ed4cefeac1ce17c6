"""The `multiproc` server: N worker processes, each its own event loop, app and asyncpg pool.

The parent binds one listening socket, forks the workers (before any event loop exists) and
supervises them: a worker that dies is restarted (with back-off if it keeps dying at start),
SIGTERM/SIGINT are forwarded, and the parent exits 0 once they are gone. Each worker writes
its metrics snapshot to a per-server directory every METRICS_INTERVAL seconds; /metrics on
any worker merges its live snapshot with the others' files.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from servers.async_app import app_state, make_app
from servers.run_asyncio import BACKLOG, SHUTDOWN_TIMEOUT, loop_factory, run_app
from servers.settings import Settings

log = logging.getLogger("serverlab")

METRICS_INTERVAL = 0.5  # seconds between a worker's metrics snapshots
STOP_TIMEOUT = SHUTDOWN_TIMEOUT + 10.0  # seconds the parent waits for workers after SIGTERM
QUICK_EXIT = 5.0  # a worker dying sooner than this after its start counts as crash-looping
MAX_BACKOFF = 30.0
POLL = 0.1  # supervisor tick, seconds


# --- the worker ---------------------------------------------------------------------------


def _snapshot_path(directory: str, pid: int) -> str:
    return os.path.join(directory, f"{pid}.json")


def read_peers(directory: str, own_pid: int) -> list[dict[str, Any]]:
    """The other workers' latest metrics snapshots (files vanish when a worker is reaped)."""
    own = f"{own_pid}.json"
    snapshots = []
    for name in os.listdir(directory):
        if not name.endswith(".json") or name == own:
            continue
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as file:
                snapshots.append(json.load(file))
        except (OSError, ValueError):  # reaped meanwhile; writes are atomic, so never partial
            continue
    return snapshots


def _write_snapshot(path: str, snapshot: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as file:
        json.dump(snapshot, file, separators=(",", ":"))
    os.replace(tmp, path)


def _snapshot_writer(directory: str) -> Any:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        metrics = app_state(app).metrics
        path = _snapshot_path(directory, os.getpid())

        async def write_forever() -> None:
            while True:
                try:
                    _write_snapshot(path, metrics.snapshot())
                except OSError as exc:
                    log.warning("cannot write metrics snapshot %s: %s", path, exc)
                await asyncio.sleep(METRICS_INTERVAL)

        task = asyncio.create_task(write_forever())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for stale in (path, f"{path}.tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)

    return ctx


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGTERM this worker if the parent dies (so no orphan keeps the port)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker(settings: Settings, sock: socket.socket, directory: str, parent: int) -> int:
    """A forked worker's life; returns its exit code."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)  # the loop installs its own handlers
    _die_with_parent(parent)
    app = make_app(settings, metrics_peers=lambda: read_peers(directory, os.getpid()))
    app_state(app).metrics.tree_root = parent  # process_* sums the supervisor and every worker
    app.cleanup_ctx.append(_snapshot_writer(directory))
    with asyncio.Runner(loop_factory=loop_factory(settings)) as runner:
        runner.run(run_app(app, settings, sock=sock))
    return 0


# --- the supervisor -----------------------------------------------------------------------


@dataclass
class _Slot:
    pid: int = 0  # 0: not running
    started: float = 0.0
    failures: int = 0  # consecutive quick exits
    restart_at: float = 0.0


class Supervisor:
    def __init__(self, settings: Settings, sock: socket.socket, directory: str) -> None:
        self.settings = settings
        self.sock = sock
        self.directory = directory
        self.slots = [_Slot() for _ in range(settings.workers)]
        self.stop_signal: int | None = None

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum

    def _spawn(self, index: int) -> None:
        slot = self.slots[index]
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's code
            code = 1
            try:
                code = _worker(self.settings, self.sock, self.directory, parent)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        slot.pid, slot.started = pid, time.monotonic()
        log.info("worker %d started (pid %d)", index, pid)

    def _reap(self) -> None:
        """Collect exited workers and schedule their restart."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for index, slot in enumerate(self.slots):
                if slot.pid == pid:
                    self._exited(index, slot, status)

    def _exited(self, index: int, slot: _Slot, status: int) -> None:
        stale = _snapshot_path(self.directory, slot.pid)
        for path in (stale, f"{stale}.tmp"):  # its metrics no longer count
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        now = time.monotonic()
        lived = now - slot.started
        code = os.waitstatus_to_exitcode(status)
        how = f"(pid {slot.pid}) " + (
            f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        )
        slot.pid = 0
        if self.stop_signal is not None:
            log.info("worker %d %s", index, how)
            return
        slot.failures = slot.failures + 1 if lived < QUICK_EXIT else 0
        delay = 0.0 if slot.failures == 0 else min(MAX_BACKOFF, 0.5 * 2 ** (slot.failures - 1))
        slot.restart_at = now + delay
        log.warning("worker %d %s after %.1f s; restarting it in %.1f s%s", index, how, lived,
                    delay, " (it keeps dying at start: see the log above)" if delay else "")

    def _running(self) -> list[int]:
        return [slot.pid for slot in self.slots if slot.pid]

    def run(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        for index in range(len(self.slots)):
            self._spawn(index)
        log.info("listening on http://%s:%d with %d workers", self.settings.host,
                 self.settings.port, len(self.slots))
        while self.stop_signal is None:
            self._reap()
            now = time.monotonic()
            for index, slot in enumerate(self.slots):
                if not slot.pid and slot.restart_at <= now and self.stop_signal is None:
                    self._spawn(index)
            time.sleep(POLL)
        self._stop()

    def _stop(self) -> None:
        signum = self.stop_signal or signal.SIGTERM
        log.info("%s: stopping %d workers (up to %g s)", signal.Signals(signum).name,
                 len(self._running()), STOP_TIMEOUT)
        self.sock.close()  # new connections are refused once the workers close their copies too
        for pid in self._running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while self._running() and time.monotonic() < deadline:
            self._reap()
            time.sleep(POLL / 2)
        for pid in self._running():
            log.warning("worker pid %d did not stop in time; killing it", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        log.info("stopped")


def _listen(settings: Settings) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.listen(BACKLOG)
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings) -> None:
    try:
        sock = _listen(settings)
    except OSError as exc:  # typically the port is taken
        log.error("cannot listen on %s:%d: %s; choose another --port (LAB_PORT)",
                  settings.host, settings.port, exc)
        sys.exit(1)
    directory = tempfile.mkdtemp(prefix="serverlab-multiproc-")
    try:
        Supervisor(settings, sock, directory).run()
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)
