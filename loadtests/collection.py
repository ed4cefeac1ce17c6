"""Locust event hooks: phases to workers, every process's record to disk via the master, progress files.

Importing this module registers them. Every process that sends requests rewrites
progress-<host>-<pid>.json in LAB_RECORD_DIR each second (phase, users, requests so far, the newest
whole second's rate): the runner's live line. At test stop a worker sends its record to the master,
which writes it (loadtests/recorder.py); any other process writes its own.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.rpc import Message
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner

from loadtests import open_model
from loadtests.heartbeats import Heartbeats
from loadtests.recorder import RECORD_DIR, RECORDER, failure_kind, write_record

MEASURE_MESSAGE = "lab_measure"  # master -> workers: {"phase": "measure" | "full" | "tail", "at": epoch}
RECORD_MESSAGE = "lab_record"  # worker -> master at test stop: {"record": {...}, "acks": "tsv"}
PROGRESS_SECONDS = 1.0
HEARTBEATS = Heartbeats(RECORD_DIR)  # the master's record of its workers' hosts and CPU


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    # Custom options travel from the master to every worker, on this machine or another.
    parser.add_argument("--lab-run-tag", env_var="LAB_RUN_TAG", default="manual", include_in_web_ui=False,
                        help="serverlab: prefix of every order's Idempotency-Key")
    parser.add_argument("--lab-duration", env_var="LAB_DURATION", default="", include_in_web_ui=False,
                        help="serverlab: measured seconds of the load shape (set by lab.load.runner)")


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    RECORDER.run_tag = str(getattr(opts, "lab_run_tag", "") or RECORDER.run_tag)
    HEARTBEATS.on_test_start(environment)
    if not isinstance(environment.runner, MasterRunner) and not _PROGRESS:
        _PROGRESS.append(gevent.spawn(_write_progress, environment))
    if RECORDER.told:
        return
    if getattr(opts, "lab_duration", ""):  # a shape runs: warm-up until it says "measure"
        RECORDER.phase, RECORDER.measure_start = "warmup", None
    elif RECORDER.phase == "warmup":  # hand-run Locust: no shape, everything counts
        RECORDER.set_phase("measure")


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    HEARTBEATS.on_init(environment)
    if isinstance(runner, MasterRunner):
        RECORDER.role = "master"
        runner.register_message(RECORD_MESSAGE, _received_record)
    elif isinstance(runner, WorkerRunner):
        RECORDER.role = "worker"
        runner.register_message(MEASURE_MESSAGE, lambda msg, **_kw: RECORDER.set_phase(msg.data["phase"]))


RECORDS_RECEIVED: list[str] = []  # the master: workers whose record it has written
RECORD_WAIT_SECONDS = 15.0  # the master waits this long at most for its workers' records, after the
# --stop-timeout a worker may spend letting its users' requests in flight finish


def _received_record(msg: Any, **_: Any) -> None:
    write_record(msg.data["record"], msg.data["acks"])
    RECORDS_RECEIVED.append(str(msg.node_id))


def missing_message(missing: list[str], workers: dict[str, dict[str, Any]], waited: float) -> str:
    """What the master logs when workers' records did not arrive: which worker, where, what to read."""
    where = {w: workers.get(w, {}) for w in missing}
    named = ", ".join(f"{w} (on {h.get('host') or '?'}, {h.get('address') or '?'})" for w, h in where.items())
    return (f"serverlab: no latency record from Locust worker(s) {named} within {waited:.0f} s of the end: "
            "their requests are missing from this repetition. Read those workers' logs "
            "(locust-worker-*.log in the repetition folder, or the output of `python -m lab worker` on "
            "their host): a worker that stopped, was killed or lost its network did not report.")


def stop_workers_and_collect(runner: MasterRunner) -> list[str]:
    """At the master's test stop: tell every worker to stop, and wait (bounded) until each has handed in
    its record; log the workers whose record did not come, and return their ids.

    Locust's own shutdown ends the master's message loop 0.5 s after it quits, so this must run before
    anything lets Locust's main greenlet go on: the shape stops the test from Locust's shape greenlet
    (LabShape.tick returns None), on which that main greenlet waits. A worker stops its users and sends
    its record before it answers "client_stopped", so a worker gone from runner.clients, or silent
    (missing heartbeats), sends nothing more: the wait ends when only such workers are left."""
    expected = {str(c.id) for c in runner.clients.all}
    for worker_id in expected:  # each stops its users and sends its record (its test_stop)
        runner.server.send_to_client(Message("stop", None, worker_id))
    waited = RECORD_WAIT_SECONDS + float(runner.environment.stop_timeout or 0)
    deadline = time.time() + waited
    for _ in range(int(waited / 0.05) + 1):  # bounded by the deadline
        outstanding = expected - set(RECORDS_RECEIVED)
        live = {w for w in outstanding if w in runner.clients and runner.clients[w].state != STATE_MISSING}
        if not live or time.time() >= deadline:
            break
        gevent.sleep(0.05)
    missing = sorted(expected - set(RECORDS_RECEIVED))
    if missing:
        logging.error(missing_message(missing, HEARTBEATS.workers, waited))
    return missing


@events.request.add_listener
def _on_request(name: str, response_time: float, response: Any = None,
                exception: BaseException | None = None, context: dict[str, Any] | None = None,
                **_: Any) -> None:
    RECORDER.record(name, response_time or 0.0, exception is not None,
                    failure_kind(response, exception) if exception is not None else "",
                    (context or {}).get("intended"))


def _write_progress(environment: Environment) -> None:
    """progress-<host>-<pid>.json every second until the test stops (the runner's live line)."""
    if not RECORD_DIR:
        return
    folder = Path(RECORD_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"progress-{socket.gethostname()}-{os.getpid()}.json"
    tmp = folder / f".{path.name}.tmp"
    for _ in range(int(7 * 24 * 3600 / PROGRESS_SECONDS)):  # bounded; killed at test stop long before
        users = environment.runner.user_count if environment.runner is not None else 0
        # the offered rate first: current_rate() may add a step (open_model.extend)
        offered = (open_model.current_rate(time.time()) or 0.0) if RECORDER.open_model else None
        rates = open_model.RATES
        progress = RECORDER.progress(users, offered, len(rates), len(rates) - open_model.EXTENSION["planned"])
        tmp.write_text(json.dumps(progress))
        tmp.replace(path)
        gevent.sleep(PROGRESS_SECONDS)


_PROGRESS: list[gevent.Greenlet] = []


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_: Any) -> None:
    if RECORDER.role == "master":  # a master sends no requests; its workers report to it
        if isinstance(environment.runner, MasterRunner):
            stop_workers_and_collect(environment.runner)
        HEARTBEATS.on_test_stop(environment)
        return
    for greenlet in _PROGRESS:
        greenlet.kill(block=False)
    RECORDER.set_phase("tail")
    if RECORDER.role == "worker" and environment.runner is not None:
        # Workers (on this machine or another) hand their record to the master, which writes it.
        environment.runner.send_message(RECORD_MESSAGE, {"record": RECORDER.as_json(),
                                                         "acks": RECORDER.acks_tsv()})
    else:
        write_record(RECORDER.as_json(), RECORDER.acks_tsv())
