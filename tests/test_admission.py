"""Unit tests of the pieces the servers share for fairness and deadlines (no I/O): FairGate,
HoldClock (servers/admission.py) and Deadlines (servers/deadlines.py)."""

from __future__ import annotations

import threading
import time

import pytest

from servers.admission import FAIL_FAST_SHARE, FairGate, HoldClock
from servers.deadlines import Deadlines

pytestmark = pytest.mark.unit


def test_fair_gate_hands_slots_over_in_arrival_order() -> None:
    gate = FairGate(1)
    assert gate.try_take()
    order: list[int] = []

    def wait(n: int, ready: threading.Event) -> None:
        ready.set()
        if gate.take(5.0):
            order.append(n)
            gate.give()

    threads = []
    for n in range(5):
        ready = threading.Event()
        thread = threading.Thread(target=wait, args=(n, ready))
        thread.start()
        ready.wait(5)
        deadline = time.monotonic() + 5
        while gate.waiting < n + 1 and time.monotonic() < deadline:  # queued before the next one comes
            time.sleep(0.001)
        threads.append(thread)
    assert not gate.try_take(), "a newcomer must not barge past the queue"
    gate.give()
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3, 4]
    assert gate.free == 1 and gate.waiting == 0


def test_fair_gate_wait_times_out_and_leaves_the_queue() -> None:
    gate = FairGate(1)
    assert gate.try_take()
    assert gate.take(0.05) is False
    assert gate.waiting == 0
    gate.give()
    assert gate.free == 1 and gate.try_take()


def test_hold_clock_refuses_only_a_hopeless_wait() -> None:
    clock = HoldClock(horizon=1.0, size=10)
    assert not clock.hopeless(1000, 10, 1.0, now=0.0)  # no measurement yet: never refuse
    for n in range(200):
        clock.held(0.5, now=n * 0.05)
    now = 200 * 0.05
    assert clock.typical(now) == 0.5
    # 10 connections, 0.5 s each: 13 waiting clear in ~0.7 s, within 0.75 of a 1 s timeout.
    assert not clock.hopeless(12, 10, 1.0, now)
    assert clock.hopeless(20, 10, 1.0, now)
    assert clock.expected_wait(20, 10, now) > FAIL_FAST_SHARE * 1.0


def test_hold_clock_shrugs_off_a_stall_of_the_holds_in_progress() -> None:
    """Holds of 50-200 ms (an event loop under 64 clients), then the ten in progress stretched by a
    0.3 s stall: the 42 waiting behind clear in about 42 x 0.125 / 10 s, and the clock must say so
    (a plain median of the window would be the 75th percentile of the unstretched holds)."""
    clock = HoldClock(horizon=1.0, size=10)
    now = 0.0
    for n in range(100):
        now += 0.001
        clock.held(0.05 * (1 + n % 4), now)
    now += 0.3
    for _ in range(10):
        clock.held(0.4, now)
    assert clock.typical(now) < 0.16
    assert not clock.hopeless(42, 10, 1.0, now)


def test_hold_clock_follows_a_workload_that_turned_slow() -> None:
    """Short holds, then the pool's holds turn to 0.5 s: within two rounds of the pool (the
    overload case's first second) the queue past the line is refused."""
    clock = HoldClock(horizon=1.0, size=10)
    for n in range(60):
        clock.held(0.02, now=n * 0.002)
    for batch in (1, 2):
        for _ in range(10):
            clock.held(0.5, now=0.12 + batch * 0.5)
    assert clock.typical(now=1.12) == 0.5
    assert clock.hopeless(20, 10, 1.0, now=1.12)


def test_hold_clock_forgets_an_idle_pool() -> None:
    """Holds of 2 s that ended long ago say nothing about a burst arriving now: no refusal."""
    clock = HoldClock(horizon=1.0, size=10)
    for n in range(20):
        clock.held(2.0, now=n * 0.2)
    assert clock.hopeless(9, 10, 1.0, now=4.0)  # while they are recent, they count
    assert clock.typical(now=10.0) == 0.0 and not clock.hopeless(9, 10, 1.0, now=10.0)


def test_deadlines_separate_receiving_from_idle() -> None:
    table = Deadlines(request_timeout=1.0, keepalive_timeout=5.0)
    table.receiving("slow", since=100.0)
    table.idle("quiet")
    table.busy("quiet")  # its next request runs: no deadline
    table.receiving("fresh", since=103.0)
    late, expired = table.overdue(now=101.5)
    assert late == ["slow"] and expired == []
    assert table.overdue(now=101.5) == ([], [])  # taken out once
    table.idle("ka")
    table.wake("ka")  # bytes arrived on an idle connection: it is receiving now
    assert table.is_receiving("ka")
    table.wake("fresh")  # already receiving: its deadline stays
    assert table.victim() == ("fresh", True)  # the longest-receiving goes first
    assert table.victim() == ("ka", True)
    assert table.victim() is None


def test_hold_clock_counts_one_connect_while_sessions_open() -> None:
    """A pool reopening its sessions makes the queue wait one connect longer, not each hold."""
    clock = HoldClock(horizon=1.0, size=10)
    clock.connecting, clock.connect_seconds = 3, 0.2
    assert clock.expected_wait(9, 10, now=0.0) == 0.0  # nothing learnt yet: no refusal either
    clock.held(0.05, now=0.0)
    assert abs(clock.expected_wait(9, 10, now=0.0) - (0.05 + 0.2)) < 1e-9
    clock.connecting = 0
    assert abs(clock.expected_wait(9, 10, now=0.0) - 0.05) < 1e-9
