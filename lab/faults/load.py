"""Bounded load for the fault cases: closed-loop clients on keep-alive connections, each request
timed and its status kept (0 for no answer). Loopback only; every loop stops by itself."""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass

from lab.faults.wire import split_url


@dataclass(frozen=True)
class Sample:
    start: float  # monotonic
    seconds: float
    status: int  # 0: no answer (reset, refused, timeout)
    retry_after: bool


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def ms(values: list[float], q: float) -> float:
    return round(percentile(values, q) * 1000, 1)


class Load:
    """`clients` threads requesting `target` until `seconds` pass (or stop()); samples in `.samples`."""

    def __init__(
        self,
        url: str,
        target: str,
        clients: int,
        seconds: float,
        timeout: float = 10.0,
        pause: float = 0.0,
        pause_after_503: float = 0.0,
    ) -> None:
        self.host, self.port = split_url(url)
        self.target = target
        self.clients = clients
        self.seconds = seconds
        self.timeout = timeout
        self.pause = pause
        self.pause_after_503 = pause_after_503  # a client that backs off a little when refused
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Load:
        self.until = time.monotonic() + self.seconds
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> list[Sample]:
        for thread in self._threads:
            thread.join(self.seconds + self.timeout + 5)
        return self.samples

    def run(self) -> list[Sample]:
        return self.start().join()

    def _client(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set() and time.monotonic() < self.until:
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            began = time.monotonic()
            try:
                conn.request("GET", self.target)
                resp = conn.getresponse()
                resp.read()
                sample = Sample(
                    began, time.monotonic() - began, resp.status, resp.getheader("Retry-After") is not None
                )
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                sample = Sample(began, time.monotonic() - began, 0, False)
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(0.01)  # a refused or reset connection: do not spin
            self.samples.append(sample)
            pause = self.pause_after_503 if sample.status == 503 else self.pause
            if pause:
                self._stop.wait(pause)
        if conn is not None:
            conn.close()


def statuses(samples: list[Sample]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in samples:
        counts[str(s.status)] = counts.get(str(s.status), 0) + 1
    return dict(sorted(counts.items()))
