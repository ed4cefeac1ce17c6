"""Each Locust worker's host and CPU as its master hears them: Locust's own heartbeats, every second.

A worker tells the master once per test where it runs (host name, and the address it reaches the
master from: test hosts share a host name). The master reads every worker's latest heartbeat CPU
(percent of one core, measured by the worker itself) each second while the test runs, and at test
stop writes workers-<host>-<pid>.json into LAB_RECORD_DIR:
{"workers": {worker id: {"host", "address"}}, "polls": [[unix time, {worker id: cpu percent}], ...]}.
The results flag a worker over 90 % of its core as generator-bound (lab/results/generator.py).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import gevent
from locust import runners
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

HELLO_MESSAGE = "lab_worker_hello"  # worker -> master at test start: {"host": ..., "address": ...}
POLL_SECONDS = 1.0
MAX_POLLS = 7 * 24 * 3600  # a bound; the test stops long before
# Locust measures a worker's CPU every CPU_MONITOR_INTERVAL seconds (10 by default), longer than a
# short repetition's window: measure every second, as often as the heartbeats carry it.
runners.CPU_MONITOR_INTERVAL = 1.0


def _address_towards(host: str, port: int) -> str | None:
    """This machine's address on the route to the master (no packet is sent: UDP connect only)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((socket.gethostbyname(host), port or 5557))
            address: str = sock.getsockname()[0]
            return address
    except OSError:
        return None


class Heartbeats:
    def __init__(self, record_dir: str) -> None:
        self.record_dir = record_dir
        self.workers: dict[str, dict[str, Any]] = {}
        self.polls: list[list[Any]] = []
        self.poller: gevent.Greenlet | None = None

    def on_init(self, environment: Environment) -> None:
        if isinstance(environment.runner, MasterRunner):
            environment.runner.register_message(HELLO_MESSAGE, self._hello)

    def _hello(self, environment: Environment, msg: Any, **_: Any) -> None:
        self.workers.setdefault(str(msg.node_id), {}).update(msg.data)

    def on_test_start(self, environment: Environment) -> None:
        runner = environment.runner
        if isinstance(runner, WorkerRunner):
            opts = environment.parsed_options
            host, port = getattr(opts, "master_host", "127.0.0.1"), getattr(opts, "master_port", 5557)
            runner.send_message(HELLO_MESSAGE, {"host": socket.gethostname(),
                                                "address": _address_towards(host, int(port))})
        elif isinstance(runner, MasterRunner) and self.poller is None:
            self.poller = gevent.spawn(self._poll, runner)

    def _poll(self, runner: MasterRunner) -> None:
        for _ in range(MAX_POLLS):
            self.polls.append([round(time.time(), 3),
                               {str(w.id): w.cpu_usage for w in list(runner.clients.values())}])
            gevent.sleep(POLL_SECONDS)

    def on_test_stop(self, environment: Environment) -> None:
        if not isinstance(environment.runner, MasterRunner) or not self.record_dir:
            return
        if self.poller is not None:
            self.poller.kill(block=False)
            self.poller = None
        for worker_id in {w for _, cpus in self.polls for w in cpus}:
            self.workers.setdefault(worker_id, {})
        folder = Path(self.record_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"workers-{socket.gethostname()}-{os.getpid()}.json"
        tmp = folder / f".{path.name}.tmp"
        tmp.write_text(json.dumps({"workers": self.workers, "polls": self.polls}))
        tmp.replace(path)
