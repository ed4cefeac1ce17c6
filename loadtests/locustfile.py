"""Locust user classes (one per scenario) and the lab's load shape: the file Locust is given (-f).

Runs inside Locust processes only (Locust monkey-patches the standard library on import); the lab
starts it as a subprocess (lab/load/runner.py). Environment, set by the runner:

  LAB_SHAPE, LAB_USERS, LAB_SPAWN_RATE, LAB_DURATION, LAB_WARMUP  the load shape (catalogue.schedule);
      without LAB_DURATION there is no shape and Locust's own -u/-r/-t apply (hand-run use)
  LAB_RECORD_DIR  where record-<host>-<pid>.json lands for every process that sends requests:
      an HDR histogram of every request's latency (microseconds), counts, failures by kind and a
      per-second timeline (loadtests/recorder.py); workers (on this machine or others) send theirs to
      the master, which writes them (loadtests/collection.py). The process that runs the shape also
      writes shape.json (window, stages).
  LAB_RUN_TAG     prefix of the Idempotency-Key of every order; acknowledged orders go to
      acks-<host>-<pid>.tsv (key, id, status) so the runner can check them against the database
  LAB_RATES, LAB_PATH, LAB_ARRIVAL  the open model (OpenUser, scheduled by loadtests/open_model.py):
      offered requests/s per step of LAB_DURATION seconds, the request, uniform or poisson arrivals.
      LAB_OPEN_MAX_INFLIGHT caps the requests in flight (a start refused for it is "dropped"); a start
      more than LAB_LATE_MS after its scheduled time is "late" (the generator fell behind).
  LAB_EXTEND_MAX, LAB_EXTEND_FACTOR, LAB_RATE_CEILING, LAB_SLO_P99_MS  while the last step met the SLO,
      add up to LAB_EXTEND_MAX steps, each LAB_EXTEND_FACTOR higher, never past LAB_RATE_CEILING (the
      generator's sustainable rate); shape.json says what was added and why it stopped.
  LAB_GO_FD       the start gate (loadtests/gate.py): the process holds, imported, until the runner
      writes to this pipe; the runner starts Locust ahead of its repetition this way
  LAB_FULL_CORE_SECONDS  a steady closed-loop shape goes on this long after its measured window (phase
      "full": requests counted only); split.json, written when measuring starts, says when it begins, so
      that the runner lifts the server's CPU budget at that moment (lab/load/full_core.py)

Every process that sends requests also rewrites progress-<host>-<pid>.json in LAB_RECORD_DIR each
second: the runner's live line (loadtests/collection.py).

The shape first spawns the users of its first stage, waits LAB_WARMUP seconds at that load (not
counted: Locust's stats are reset and the recorders start then), then runs the measured stages.

By hand: `locust -f loadtests/locustfile.py -H http://127.0.0.1:8003 JsonUser`.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from pathlib import Path

import gevent
from locust import FastHttpUser, LoadTestShape, between, constant, events, task
from locust.runners import MasterRunner

from loadtests import catalogue, gate, open_model
from loadtests.collection import MEASURE_MESSAGE  # importing collection registers the event hooks
from loadtests.open_model import EXTENSION, RATES, extend
from loadtests.recorder import OPEN_MAX_INFLIGHT, RECORD_DIR, RECORDER, env_float

# --- users ----------------------------------------------------------------------------------------


class LabUser(FastHttpUser):
    abstract = True
    wait_time = constant(0)  # closed loop: the next request as soon as the last one is answered
    network_timeout = 10.0
    connection_timeout = 5.0


class JsonUser(LabUser):
    @task
    def hello_json(self) -> None:
        self.client.get("/json")


class PlaintextUser(LabUser):
    @task
    def plaintext(self) -> None:
        self.client.get("/plaintext")


class DbUser(LabUser):
    @task
    def db(self) -> None:
        self.client.get("/db")


class QueriesUser(LabUser):
    @task
    def queries(self) -> None:
        self.client.get("/queries?queries=20", name="/queries?queries=20")


class UpdatesUser(LabUser):
    @task
    def updates(self) -> None:
        self.client.get("/updates?queries=5", name="/updates?queries=5")


class FortunesUser(LabUser):
    @task
    def fortunes(self) -> None:
        self.client.get("/fortunes")


class IoUser(LabUser):
    @task
    def io(self) -> None:
        self.client.get("/io?ms=50", name="/io?ms=50")


class CpuUser(LabUser):
    @task
    def cpu(self) -> None:
        self.client.get("/cpu?n=20000", name="/cpu?n=20000")


class HoldUser(LabUser):
    @task
    def hold(self) -> None:
        self.client.get("/hold?ms=20", name="/hold?ms=20")


_order_numbers = itertools.count(1)


def place_order(user: FastHttpUser) -> None:
    """POST /orders with a key unique to this run; remember every acknowledged order."""
    key = f"{RECORDER.run_tag}-{os.getpid()}-{next(_order_numbers)}"
    with user.client.post("/orders", data='{"item":"lab","qty":1}', name="/orders", catch_response=True,
                          headers={"Idempotency-Key": key, "Content-Type": "application/json"}) as resp:
        if resp.status_code in (200, 201):
            try:
                order_id = int(json.loads(resp.content or b"{}")["id"])
            except (ValueError, KeyError, TypeError):
                resp.failure(f"acknowledged without an order id: {resp.text[:100]!r}")
                return
            RECORDER.acks.append((key, order_id, resp.status_code))
            resp.success()


class WritesUser(LabUser):
    @task
    def write(self) -> None:
        place_order(self)


class MixedUser(LabUser):
    """A web application's blend, with think time between requests."""

    wait_time = between(0.05, 0.25)

    @task(25)
    def db(self) -> None:
        self.client.get("/db")

    @task(15)
    def fortunes(self) -> None:
        self.client.get("/fortunes")

    @task(15)
    def io(self) -> None:
        self.client.get("/io?ms=20", name="/io?ms=20")

    @task(10)
    def hello_json(self) -> None:
        self.client.get("/json")

    @task(10)
    def queries(self) -> None:
        self.client.get("/queries?queries=5", name="/queries?queries=5")

    @task(5)
    def updates(self) -> None:
        self.client.get("/updates?queries=2", name="/updates?queries=2")

    @task(5)
    def cpu(self) -> None:
        self.client.get("/cpu?n=5000", name="/cpu?n=5000")

    @task(5)
    def write(self) -> None:
        place_order(self)


class OpenUser(LabUser):
    """The open model: one user starts requests on a schedule (LAB_RATES), each in its own greenlet,
    whatever the earlier ones take; at most OPEN_MAX_INFLIGHT in flight (one connection each)."""

    concurrency = OPEN_MAX_INFLIGHT

    @task
    def arrivals(self) -> None:
        open_model.arrivals(self._one)

    def _one(self, path: str, intended: float) -> None:
        self.client.get(path, name=path, context={"intended": intended})


class ConnectionsUser(LabUser):
    """Mostly idle: one small request every ~5 s on a connection kept open in between."""

    wait_time = between(4.0, 6.0)

    @task
    def hello_json(self) -> None:
        self.client.get("/json")


@events.init.add_listener  # registered after collection's hooks (imported above), so it runs after them
def _hold_at_the_gate(**_: object) -> None:
    code = gate.hold()
    if code is not None:
        logging.info("serverlab: the start gate closed without a go; no user spawned")
        raise SystemExit(code)  # Locust's event hooks let it through: the process ends here


# --- the load shape (only when the runner drives Locust) -------------------------------------------


class LabShape(LoadTestShape):
    """Warm-up at the first stage's users, then catalogue.schedule(); stops by itself.

    Locust asks a shape for users once a second, which would round a 0.5 s warm-up up to a second and
    add up to a second at each end of every repetition. The phases are therefore kept by a greenlet of
    the shape's own (`_phases`: spawn seen within PHASE_POLL, warm-up and measure timed exactly), and
    tick() only reads them. The measured window ends exactly in every mode; a master's workers stop
    at its next tick, after it (their requests then count as "tail")."""

    use_common_options = True  # -t (run time) stays a hard cap
    PHASE_POLL = 0.05  # seconds between looks at the spawned user count

    def __init__(self) -> None:
        super().__init__()
        self.shape = os.environ.get("LAB_SHAPE", "steady")
        self.users = int(env_float("LAB_USERS", 10))
        self.spawn_rate = env_float("LAB_SPAWN_RATE", self.users)
        self.duration = env_float("LAB_DURATION", 10)
        self.warmup = env_float("LAB_WARMUP", 2)
        self.stages = catalogue.schedule(self.shape, self.users, self.spawn_rate, self.duration, tuple(RATES))
        self.full = env_float("LAB_FULL_CORE_SECONDS", 0) if self.shape == "steady" and not RATES else 0.0
        self.full_window: tuple[float, float] | None = None
        first = self.stages[0]
        # Spawning that never completes (an overloaded generator) must not stall the run.
        self.spawn_deadline = catalogue.spawn_seconds(first.users, first.spawn_rate) * 3 + 15
        self.began = time.time()
        self.spawned_at: float | None = None
        self.measure_start: float | None = None
        self.spawn_complete = False
        self.finished = False
        self._timer: gevent.Greenlet | None = None

    def tick(self) -> tuple[int, float] | None:
        if self._timer is None:
            self.began = time.time()
            self._timer = gevent.spawn(self._phases)
        if self.finished:
            return None
        if self.measure_start is None:
            return self.stages[0].users, self.stages[0].spawn_rate
        elapsed = time.time() - self.measure_start
        stage = next((s for s in self.stages if s.start <= elapsed < s.end), self.stages[-1])
        return stage.users, stage.spawn_rate

    def _phases(self) -> None:
        first = self.stages[0]
        while self.spawned_at is None:
            now = time.time()
            if self.get_current_user_count() >= first.users:
                self.spawned_at, self.spawn_complete = now, True
            elif now - self.began > self.spawn_deadline:
                self.spawned_at = now
            else:
                gevent.sleep(self.PHASE_POLL)
        gevent.sleep(max(0.0, self.spawned_at + self.warmup - time.time()))
        self._start_measuring(time.time())
        assert self.measure_start is not None
        cap = getattr(self.runner.environment.parsed_options, "run_time", None) if self.runner else None
        if self.full:
            self._write_split(self.measure_start + self.stages[-1].end)
        while True:  # the open model's last step may add another (extend)
            end = self.measure_start + (len(RATES) * self.duration if RATES else self.stages[-1].end)
            if cap:
                end = min(end, self.began + cap)
            gevent.sleep(max(0.0, end - time.time()))
            if not (RATES and (not cap or end < self.began + cap) and extend(time.time())):
                break
        measure_end = time.time()
        if self.full:
            self._set_phase("full", measure_end)
            end = measure_end + self.full
            gevent.sleep(max(0.0, (min(end, self.began + cap) if cap else end) - time.time()))
            self.full_window = (measure_end, time.time())
        self._set_phase("tail", time.time())
        self._write(measure_end)
        self.finished = True
        # A master's next tick (within a second) returns None and Locust stops the test from its shape
        # greenlet: the master then collects its workers' records (collection.stop_workers_and_collect)
        # while Locust's main greenlet still waits for that shape greenlet. Quitting from here would
        # free it, and its shutdown would cut the collection off after 0.5 s.
        if self.runner is not None and not isinstance(self.runner, MasterRunner):
            self.runner.quit()  # one process: stop now, not at the next tick (up to a second later)

    def _start_measuring(self, now: float) -> None:
        self.measure_start = now
        assert self.runner is not None
        self.runner.stats.reset_all()  # Locust's CSV and HTML then cover the measured phase only
        self._set_phase("measure", now)

    def _set_phase(self, phase: str, now: float) -> None:
        if isinstance(self.runner, MasterRunner):
            self.runner.send_message(MEASURE_MESSAGE, {"phase": phase, "at": now})
        else:
            RECORDER.set_phase(phase, now)

    def _write_split(self, at: float) -> None:
        if RECORD_DIR:
            folder = Path(RECORD_DIR)
            folder.mkdir(parents=True, exist_ok=True)
            split = {"measure_start": self.measure_start, "split_at": at}
            (folder / "split.json").write_text(json.dumps(split))

    def _write(self, now: float) -> None:
        if not RECORD_DIR:
            return
        folder = Path(RECORD_DIR)
        folder.mkdir(parents=True, exist_ok=True)
        data = {
            "shape": self.shape, "users": self.users, "spawn_rate": self.spawn_rate,
            "duration": self.duration, "warmup": self.warmup, "began": self.began,
            "spawned_at": self.spawned_at, "spawn_complete": self.spawn_complete,
            "measure_start": self.measure_start, "measure_end": now,
            # a step the -t cap cut short is left out
            "stages": [vars(s) for s in catalogue.schedule(self.shape, self.users, self.spawn_rate,
                                                             self.duration, tuple(RATES))
                       if s.end <= now - (self.measure_start or now) + 0.01]
            if RATES else [vars(s) for s in self.stages], "rates": list(RATES),
            "planned_rates": RATES[:EXTENSION["planned"]], "extension": EXTENSION if RATES else None,
            "full_core": {"seconds": self.full, "start": self.full_window[0], "end": self.full_window[1]}
            if self.full_window else None,
        }
        (folder / "shape.json").write_text(json.dumps(data, indent=1))


if not os.environ.get("LAB_DURATION"):
    del LabShape  # hand-run Locust: no shape, -u/-r/-t apply
