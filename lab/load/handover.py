"""Between repetitions: a spent server process stops in the background while the next repetition gets ready.

A repetition's own work is its windows; what comes before them is overhead: Locust's interpreter and
imports, the fresh server's start and warm-up, the sampler's start, the last process's shutdown. The
runner overlaps these instead of doing them one after the other:

- the next repetition's Locust starts at once, held at its start gate (loadtests/gate.py), while the
  fresh server starts and warms up (Locust on the load CPUs, the server on the server CPUs);
- the sampler starts while the warm-up burst runs;
- a server whose repetitions are done is stopped right after its last one (`retire`), its budget lifted,
  on a thread, while the next repetition gets ready; `settle` joins it.

What must not change is what is measured: the runner settles every server before a gate opens, so
nothing started for a hand-over still runs on either CPU while a repetition is measured.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from lab.load.knees import Live

JOIN_SECONDS = 60.0  # a stop takes at most its SIGTERM wait (10 s) plus its SIGKILL waits (15 s)


class _Retire(threading.Thread):
    def __init__(self, live: Live, stop: Callable[[Live], None]) -> None:
        super().__init__(name=f"retire-{live.model}", daemon=True)
        self.live, self.stop, self.error = live, stop, ""

    def run(self) -> None:
        try:
            self.stop(self.live)
        except Exception as exc:  # reported by settle(), on the runner's own thread
            self.error = f"{type(exc).__name__}: {exc}"


def retire(live: Live, stop: Callable[[Live], None]) -> None:
    """Stop the server of `live` in the background with `stop(live)` (the runner's stop_server). Until
    settle(live) has joined it, nothing else may touch `live`."""
    if live.server is None or live.retiring is not None or live.server.pid in live.stopped:
        return
    live.retiring = _Retire(live, stop)
    live.retiring.start()


def settle(live: Live, fail: Callable[[Live, str], None]) -> bool:
    """Wait until the background stop of `live` (if any) is over; False (and `fail` told why) when it
    failed or hung."""
    thread = live.retiring
    if thread is None:
        return True
    thread.join(JOIN_SECONDS)
    live.retiring = None
    if thread.is_alive():  # failed: nothing starts over it again
        fail(live, f"stopping the server did not end within {JOIN_SECONDS:.0f}s")
        return False
    assert isinstance(thread, _Retire)
    if thread.error:
        fail(live, f"stopping the server after its repetition: {thread.error}")
        return False
    return True


def settle_all(lives: Iterable[Live], fail: Callable[[Live, str], None]) -> None:
    """Every background stop over: before a gate opens, so that no shutdown runs while measuring."""
    for live in lives:
        settle(live, fail)


class Timeline:
    """When each step of a repetition's hand-over happened (epoch seconds): run.json's `timeline`."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}

    def mark(self, name: str, at: float | None = None) -> None:
        self.marks[name] = round(at if at is not None else time.time(), 4)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.marks)
