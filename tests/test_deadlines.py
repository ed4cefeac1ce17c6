"""The receive-deadline tables (servers/deadlines.py): the locked one gevent uses, the event loops'
lock-free one and the lock-free one of `threaded` keep the same rules, and threaded's holds them with
many threads."""

from __future__ import annotations

import threading
import time

import pytest

from servers.deadlines import Deadlines, LoopDeadlines, ThreadDeadlines

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("kind", [Deadlines, LoopDeadlines, ThreadDeadlines])
def test_the_same_rules(kind: type[Deadlines] | type[ThreadDeadlines]) -> None:
    table = kind(request_timeout=1.0, keepalive_timeout=5.0)
    table.receiving("slow", since=100.0)
    table.idle("quiet")
    table.busy("quiet")  # its next request runs: no deadline
    table.receiving("fresh", since=103.0)
    table.receiving("fresh", since=104.0)  # still receiving: its deadline stays
    late, expired = table.overdue(now=101.5)
    assert late == ["slow"] and expired == []
    assert table.overdue(now=101.5) == ([], [])  # named once
    assert table.overdue(now=104.5) == (["fresh"], [])  # from 103, not 104
    table.receiving("long", since=200.0)
    table.idle("ka")
    assert not table.is_receiving("ka")
    table.wake("ka")  # bytes arrived on an idle connection: it is receiving now
    assert table.is_receiving("ka")
    table.wake("long")  # already receiving: its deadline stays
    assert table.victim() == ("long", True)  # the longest-receiving goes first
    assert table.victim() == ("ka", True)
    table.idle("rest")
    assert table.victim() == ("rest", False)  # then the longest idle
    assert table.victim() is None  # "quiet" runs a request: never chosen
    table.forget("quiet")
    table.idle("gone")
    now = time.monotonic()
    assert table.overdue(now=now + 6) == ([], ["gone"])


@pytest.mark.parametrize("kind", [Deadlines, LoopDeadlines, ThreadDeadlines])
def test_a_connection_idle_again_is_the_newest_idle(kind: type[Deadlines] | type[ThreadDeadlines]) -> None:
    table = kind(request_timeout=1.0, keepalive_timeout=5.0)
    table.idle("a")
    table.idle("b")
    table.wake("a")  # its next request arrives, runs, and it idles again: after "b"
    table.busy("a")
    table.idle("a")
    assert table.victim() == ("b", False)
    assert table.victim() == ("a", False)
    assert table.victim() is None


def test_many_threads_move_their_stamps_while_a_sweeper_sweeps() -> None:
    """16 threads move their own connection receiving -> busy -> idle as fast as they can while a
    sweeper with tiny timeouts sweeps and evicts: nothing raises (a table changed under an iteration
    would), and the sweeper does name connections."""
    table = ThreadDeadlines(request_timeout=1e-9, keepalive_timeout=1e-9)
    stop = threading.Event()
    errors: list[BaseException] = []
    named = 0

    def owner(key: int) -> None:
        try:
            table.receiving(key)
            while not stop.is_set():
                table.busy(key)
                table.idle(key)
                table.receiving(key)
        except BaseException as exc:
            errors.append(exc)

    def sweeper() -> None:
        nonlocal named
        try:
            while not stop.is_set():
                late, expired = table.overdue()
                found = table.victim()
                named += len(late) + len(expired) + (found is not None)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=owner, args=(k,)) for k in range(16)]
    threads.append(threading.Thread(target=sweeper))
    for t in threads:
        t.start()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(5)
    assert not errors, errors
    assert named > 0, "the sweeper named no connection at all"
    assert not any(t.is_alive() for t in threads)
