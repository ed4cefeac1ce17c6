"""The start gate: a Locust started ahead of its repetition holds, imported and idle, until told to go.

Locust's interpreter and imports take most of a second. The runner starts the next repetition's Locust
while the fresh server starts (lab/load/locust_job.py), and opens the gate once the server is up and
warm: LAB_GO_FD names the read end of a pipe. One byte on it lets the test start (the shape's clock
and the -t cap start then); end of file (the runner went away, or cancelled the repetition) ends the
process with GATE_CLOSED, before any user spawned. Without LAB_GO_FD (hand-run Locust, workers) there
is no gate. Plain standard library: the runner imports it too (in Locust, gevent has made select
cooperative, so a master's worker listener runs on while it waits).
"""

from __future__ import annotations

import os
import select

GO_FD_ENV = "LAB_GO_FD"
WAIT_SECONDS = 900.0  # bounded: a gate nobody opens or closes ends the process
GATE_CLOSED = 3  # the exit code of a Locust whose gate closed unopened


def open_pipe() -> tuple[int, int]:
    """(read end for Locust, write end for the runner)."""
    return os.pipe()


def go(fd: int) -> None:
    """Open the gate (the write end is closed after)."""
    try:
        os.write(fd, b"g")
    finally:
        os.close(fd)


def wait_for_go(fd: int, timeout: float = WAIT_SECONDS) -> bool:
    """Block until the pipe says go (True), or closes or times out (False); the read end is closed after."""
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready) and bool(os.read(fd, 1))
    finally:
        os.close(fd)


def hold(environ: dict[str, str] | os._Environ[str] = os.environ) -> int | None:
    """In Locust's init: wait at the gate when LAB_GO_FD is set; the exit code to end with when it closed
    without a go, else None."""
    raw = environ.get(GO_FD_ENV, "")
    if not raw:
        return None
    return None if wait_for_go(int(raw)) else GATE_CLOSED
