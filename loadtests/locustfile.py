"""Locust user classes (one per scenario), the lab's load shape, and exact latency recording.

Runs inside Locust processes only (Locust monkey-patches the standard library on import); the lab
starts it as a subprocess (lab/load/runner.py). Environment, set by the runner:

  LAB_SHAPE, LAB_USERS, LAB_SPAWN_RATE, LAB_DURATION, LAB_WARMUP  the load shape (catalogue.schedule);
      without LAB_DURATION there is no shape and Locust's own -u/-r/-t apply (hand-run use)
  LAB_RECORD_DIR  where record-<host>-<pid>.json lands for every process that sends requests:
      an HDR histogram of every request's latency (microseconds), counts, failures by kind and a
      per-second timeline; workers (on this machine or others) send theirs to the master, which
      writes them. The process that runs the shape also writes shape.json (window, stages).
  LAB_RUN_TAG     prefix of the Idempotency-Key of every order; acknowledged orders go to
      acks-<host>-<pid>.tsv (key, id, status) so the runner can check them against the database
  LAB_RATES, LAB_PATH, LAB_ARRIVAL  the open model (OpenUser): offered requests/s per step of
      LAB_DURATION seconds, the request, uniform or poisson arrivals. LAB_OPEN_MAX_INFLIGHT caps the
      requests in flight (a start refused for it is "dropped"); a start more than LAB_LATE_MS after its
      scheduled time is "late" (the generator fell behind).
  LAB_EXTEND_MAX, LAB_EXTEND_FACTOR, LAB_RATE_CEILING, LAB_SLO_P99_MS  while the last step met the SLO,
      add up to LAB_EXTEND_MAX steps, each LAB_EXTEND_FACTOR higher, never past LAB_RATE_CEILING (the
      generator's sustainable rate); shape.json says what was added and why it stopped.

Every process that sends requests also rewrites progress-<host>-<pid>.json in LAB_RECORD_DIR each
second (phase, users, requests so far, the newest whole second's rate): the runner's live line.

The shape first spawns the users of its first stage, waits LAB_WARMUP seconds at that load (not
counted: Locust's stats are reset and the recorders start then), then runs the measured stages.

By hand: `locust -f loadtests/locustfile.py -H http://127.0.0.1:8003 JsonUser`.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import socket
import time
from pathlib import Path
from typing import Any

import gevent
from hdrh.histogram import HdrHistogram
from locust import FastHttpUser, LoadTestShape, between, constant, events, task
from locust.env import Environment
from locust.rpc import Message
from locust.runners import MasterRunner, WorkerRunner

from loadtests import catalogue
from loadtests.heartbeats import Heartbeats

# HDR range and precision; the results builder reads them from each record.
HDR_LOWEST_US = 1
HDR_HIGHEST_US = 120_000_000
HDR_DIGITS = 3
TIMELINE_DIGITS = 2  # per-second histograms only feed plots

RECORD_DIR = os.environ.get("LAB_RECORD_DIR", "")
RUN_TAG = os.environ.get("LAB_RUN_TAG", "manual")  # a worker takes the master's at test start
MEASURE_MESSAGE = "lab_measure"  # master -> workers: {"phase": "measure" | "tail", "at": epoch}
RECORD_MESSAGE = "lab_record"  # worker -> master at test stop: {"record": {...}, "acks": "tsv"}
RECORD_FORMAT = "serverlab-locust-record"
RECORD_VERSION = 2  # 2: open-model fields (offered, late, dropped, uncorrected latency)
PROGRESS_SECONDS = 1.0


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    return float(raw) if raw.strip() else default


# Past a server's knee, requests in flight would grow without bound, each on a new connection that the
# server must accept: a cap keeps the overload a server's problem (dropped, counted) not a connection storm.
OPEN_MAX_INFLIGHT = int(_env_float("LAB_OPEN_MAX_INFLIGHT", 256))
LATE_MS = _env_float("LAB_LATE_MS", 10.0)
RATES = [float(r) for r in os.environ.get("LAB_RATES", "").split(",") if r.strip()]  # grows by extend()
EXTEND_MAX = int(_env_float("LAB_EXTEND_MAX", 0))
EXTEND_FACTOR = _env_float("LAB_EXTEND_FACTOR", catalogue.EXTEND_FACTOR)
RATE_CEILING = _env_float("LAB_RATE_CEILING", 0) or None
SLO_P99_MS = _env_float("LAB_SLO_P99_MS", catalogue.DEFAULT_SLO_P99_MS)
# The steps added past the planned ones: each judged step, and why the adding stopped.
EXTENSION: dict[str, Any] = {"planned": len(RATES), "max": EXTEND_MAX, "factor": EXTEND_FACTOR,
                             "ceiling": RATE_CEILING, "slo_p99_ms": SLO_P99_MS, "judged": [], "stop": None}
_PENDING: dict[int, float] = {}  # open-model requests in flight: key -> scheduled start


def _hdr(digits: int = HDR_DIGITS) -> HdrHistogram:
    return HdrHistogram(HDR_LOWEST_US, HDR_HIGHEST_US, digits)


def _encode(h: HdrHistogram) -> str:
    data: bytes = h.encode()
    return data.decode("ascii")


def failure_kind(response: Any, exception: BaseException | None) -> str:
    """http_<status> for an unexpected status; otherwise the exception's class name."""
    status = getattr(response, "status_code", 0) or 0
    if status and (status >= 400 or status < 200):
        return f"http_{status}"
    if exception is None:
        return "unknown"
    name = type(exception).__name__
    if name == "CatchResponseError":  # the user class rejected the body of a 2xx
        return "bad_response"
    return name


class Recorder:
    """Every request of this process: HDR histograms, counts, failures by kind, a timeline.

    Phases: "warmup" (counted apart, not measured), "measure", then "tail" (requests that finish
    after the measured window, while users stop). Without a shape everything is measured. An
    open-model request belongs to the phase, and the second, of its scheduled start, and its latency
    counts from that start (corrected for coordinated omission); the uncorrected latency, from when
    it was sent, is kept beside.
    """

    def __init__(self) -> None:
        self.phase = "warmup" if os.environ.get("LAB_DURATION") else "measure"
        self.measure_start: float | None = None if self.phase == "warmup" else time.time()
        self.measure_end: float | None = None
        self.ok = _hdr()
        self.failed = _hdr()
        self.requests = 0
        self.failures = 0
        self.kinds: dict[str, int] = {}
        self.by_name: dict[str, list[int]] = {}  # name -> [requests, failures]
        self.outside = {"warmup": [0, 0], "tail": [0, 0]}  # requests, failures outside the window
        # epoch second -> [requests, failures, hdr, offered, late, dropped, uncorrected hdr]
        self.timeline: dict[int, list[Any]] = {}
        self.open_model = False
        self.ok_uncorrected = _hdr()
        self.offered = self.late = self.dropped = 0
        self.done_at: dict[int, int] = {}  # epoch second -> requests completed (any phase): live rate
        # open model, per step of offered rate (index from the measured phase's start): like a timeline slot
        self.steps: dict[int, list[Any]] = {}
        self.acks: list[tuple[str, int, int]] = []  # every acknowledged order, whatever the phase
        self.role = "local"
        self.told = False  # the shape (or the master) has set the phase

    def set_phase(self, phase: str, when: float | None = None) -> None:
        self.told = True
        when = when or time.time()
        if phase == "measure" and self.phase == "warmup":
            self.phase, self.measure_start = phase, when
        elif phase == "tail" and self.phase == "measure":
            self.phase, self.measure_end = phase, when

    def phase_at(self, when: float) -> str:
        """The phase a scheduled start falls in (open model)."""
        if self.measure_start is None or when < self.measure_start:
            return "warmup" if self.phase != "tail" else "tail"
        return "tail" if self.measure_end is not None and when >= self.measure_end else "measure"

    def _slot(self, second: int) -> list[Any]:
        """A second of the timeline: [requests, failures, histogram of successes]."""
        slot = self.timeline.get(second)
        if slot is None:
            slot = self.timeline[second] = [0, 0, _hdr(TIMELINE_DIGITS)]
        return slot

    def _step(self, when: float) -> list[Any]:
        """The open model's step a scheduled start falls in: [requests, failures, hdr, offered, late,
        dropped, uncorrected hdr or None, start-lag hdr]."""
        index = self._index(when)
        step = self.steps.get(index)
        if step is None:
            step = self.steps[index] = [0, 0, _hdr(TIMELINE_DIGITS), 0, 0, 0, None, _hdr(TIMELINE_DIGITS)]
        return step

    def _index(self, when: float) -> int:
        assert self.measure_start is not None
        return int((when - self.measure_start) / _env_float("LAB_DURATION", 10))

    def offer(self, when: float, lag: float) -> None:
        """An open-model request started `lag` seconds after its scheduled time (late: over LATE_MS)."""
        self.open_model = True
        late = lag * 1000 > LATE_MS
        if self.phase_at(when) == "measure":
            step = self._step(when)
            step[3] += 1
            step[4] += late
            step[7].record_value(min(HDR_HIGHEST_US, max(HDR_LOWEST_US, round(lag * 1e6))))
            self.offered += 1
            self.late += late

    def drop(self, when: float) -> None:
        """An open-model request not started: OPEN_MAX_INFLIGHT requests were in flight."""
        self.open_model = True
        if self.phase_at(when) == "measure":
            step = self._step(when)
            step[3] += 1
            step[5] += 1
            self.offered += 1
            self.dropped += 1

    def record(self, name: str, response_time_ms: float, failed: bool, kind: str,
               intended: float | None = None) -> None:
        now = time.time()
        self.done_at[int(now)] = self.done_at.get(int(now), 0) + 1
        phase = self.phase if intended is None else self.phase_at(intended)
        if phase != "measure":
            counts = self.outside[phase]
            counts[0] += 1
            counts[1] += failed
            return
        uncorrected_us = min(HDR_HIGHEST_US, max(HDR_LOWEST_US, round(response_time_ms * 1000)))
        us = uncorrected_us
        if intended is not None:
            us = min(HDR_HIGHEST_US, max(HDR_LOWEST_US, round((now - intended) * 1e6)))
        self.requests += 1
        per_name = self.by_name.setdefault(name, [0, 0])
        per_name[0] += 1
        if failed:
            self.failures += 1
            per_name[1] += 1
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            self.failed.record_value(us)
        else:
            self.ok.record_value(us)
            if intended is not None:
                self.ok_uncorrected.record_value(uncorrected_us)
        # The timeline by the second of completion, or of the scheduled start for the open model.
        slots = [self._slot(int(now if intended is None else intended))]
        step = self._step(intended) if intended is not None else None
        if step is not None:
            slots.append(step)
        for slot in slots:
            slot[0] += 1
            slot[1] += failed
            if not failed:
                slot[2].record_value(us)
        if step is not None and not failed:
            if step[6] is None:
                step[6] = _hdr(TIMELINE_DIGITS)
            step[6].record_value(uncorrected_us)

    def progress(self, users: int) -> dict[str, Any]:
        second = int(time.time()) - 1  # the newest whole second
        return {"phase": self.phase, "users": users, "requests": self.requests, "failures": self.failures,
                "last_second_rps": self.done_at.get(second, 0),
                "offered_rps": (current_rate(time.time()) or 0.0) if self.open_model else None,
                "step": self._index(time.time()) + 1 if self.open_model and self.measure_start else None,
                "steps": len(RATES), "steps_added": len(RATES) - EXTENSION["planned"],
                "late": self.late, "dropped": self.dropped}

    def as_json(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            "version": RECORD_VERSION,
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "role": self.role,
            "run_tag": RUN_TAG,
            "measure_start": self.measure_start,
            "measure_end": self.measure_end or time.time(),
            "requests": self.requests,
            "failures": self.failures,
            "failures_by_kind": dict(sorted(self.kinds.items())),
            "by_name": {k: {"requests": v[0], "failures": v[1]} for k, v in sorted(self.by_name.items())},
            "warmup": {"requests": self.outside["warmup"][0], "failures": self.outside["warmup"][1]},
            "tail": {"requests": self.outside["tail"][0], "failures": self.outside["tail"][1]},
            "acks": len(self.acks),
            "hdr": {"lowest_us": HDR_LOWEST_US, "highest_us": HDR_HIGHEST_US, "digits": HDR_DIGITS,
                    "timeline_digits": TIMELINE_DIGITS},
            "latency_ok_us": _encode(self.ok),
            "latency_failed_us": _encode(self.failed),
            # [epoch second, requests, failures, encoded histogram of that second's successes]; open
            # model: the second of the scheduled start
            "timeline": [[s, v[0], v[1], _encode(v[2])] for s, v in sorted(self.timeline.items())],
            "open_model": self.open_model,
            # per step of offered rate: [index, requests, failures, hdr, offered, late, dropped,
            # uncorrected hdr, start-lag hdr]
            "steps": [[i, *v[:2], _encode(v[2]), *v[3:6], None if v[6] is None else _encode(v[6]),
                       _encode(v[7])] for i, v in sorted(self.steps.items())],
            "offered": self.offered, "late": self.late, "dropped": self.dropped,
            "late_ms": LATE_MS, "max_inflight": OPEN_MAX_INFLIGHT,
            "latency_ok_uncorrected_us": _encode(self.ok_uncorrected) if self.open_model else None,
        }

    def acks_tsv(self) -> str:
        return "".join(f"{key}\t{oid}\t{status}\n" for key, oid, status in self.acks)


def write_record(record: dict[str, Any], acks: str) -> None:
    """Write one process's record (and its acks) into LAB_RECORD_DIR."""
    if not RECORD_DIR:
        return
    folder = Path(RECORD_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{record['hostname']}-{record['pid']}"
    tmp = folder / f".record-{stem}.tmp"
    tmp.write_text(json.dumps(record))
    tmp.replace(folder / f"record-{stem}.json")
    if acks:
        (folder / f"acks-{stem}.tsv").write_text(acks)


RECORDER = Recorder()
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
    global RUN_TAG
    opts = environment.parsed_options
    RUN_TAG = str(getattr(opts, "lab_run_tag", "") or RUN_TAG)
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
RECORD_WAIT_SECONDS = 15.0  # the master waits this long at most for its workers' records


def _received_record(msg: Any, **_: Any) -> None:
    write_record(msg.data["record"], msg.data["acks"])
    RECORDS_RECEIVED.append(str(msg.node_id))


def stop_workers_and_collect(runner: MasterRunner) -> None:
    """At the master's test stop (whoever ended the test): tell every worker to stop, and wait (bounded)
    until each has handed in its record. Locust's quit() alone gives them 0.5 s, which a busy machine
    or a slow network misses, and the record is then lost."""
    expected = {str(c.id) for c in runner.clients.all}
    for worker_id in expected:  # each stops its users and sends its record (its test_stop)
        runner.server.send_to_client(Message("stop", None, worker_id))
    deadline = time.time() + RECORD_WAIT_SECONDS
    while not expected <= set(RECORDS_RECEIVED) and time.time() < deadline:
        gevent.sleep(0.05)


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
        tmp.write_text(json.dumps(RECORDER.progress(users)))
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
    key = f"{RUN_TAG}-{os.getpid()}-{next(_order_numbers)}"
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


_OPEN_BEGAN: list[float] = []  # when the open-model user started offering


def current_rate(when: float) -> float | None:
    """The offered rate at `when`: through the warm-up a ramp from a fifth of the first step's rate to
    all of it (a cold client opening every connection at once would storm the server), then one step
    per LAB_DURATION seconds of the measured phase; None once the last step is over."""
    if not RATES:
        return None
    start = RECORDER.measure_start
    if start is None or when < start:
        warmup = max(0.1, _env_float("LAB_WARMUP", 2))
        began = _OPEN_BEGAN[0] if _OPEN_BEGAN else when
        return RATES[0] * min(1.0, 0.2 + 0.8 * (when - began) / warmup)
    step = int((when - start) / _env_float("LAB_DURATION", 10))
    if step == len(RATES):
        extend(when)
    return RATES[step] if step < len(RATES) else None


def _last_step_miss(now: float) -> str | None:
    """Why the last step missed the SLO, judged as it ends (None: it met it). Requests still in flight
    past the SLO count as misses; the results judge the step again from every request."""
    k = len(RATES) - 1
    step = RECORDER.steps.get(k)
    if step is None or not step[3]:
        return "nothing was offered"
    _n, fails, hdr, offered, _late, dropped = step[:6]
    duration = _env_float("LAB_DURATION", 10)
    lo = (RECORDER.measure_start or now) + k * duration
    overdue = sum(1 for t in _PENDING.values() if lo <= t < lo + duration and now - t >= SLO_P99_MS / 1000)
    if not hdr.get_total_count():
        return "no successful request"
    p99 = hdr.get_value_at_percentile(99) / 1000
    if p99 >= SLO_P99_MS:
        return f"p99 {p99:.0f} ms >= {SLO_P99_MS:g} ms"
    bad = fails + dropped + overdue
    if bad >= FAILURE_SHARE * offered:
        return f"{bad} of {offered} failed, dropped or still waiting past the SLO"
    return None


FAILURE_SHARE = 0.01  # as lab/results/openmodel.py: a step with this share failed or dropped misses the SLO


def extend(now: float) -> bool:
    """At the end of the last step: add a step EXTEND_FACTOR higher when it met the SLO, unless
    EXTEND_MAX were added already or the ceiling is reached. Decides once per step: True while the last
    step is still under way."""
    ext = EXTENSION
    if ext["stop"] is not None or EXTEND_MAX <= 0 or not RATES or RECORDER.measure_start is None:
        return False
    if now < RECORDER.measure_start + len(RATES) * _env_float("LAB_DURATION", 10):
        return True
    if len(RATES) - ext["planned"] >= EXTEND_MAX:
        ext["stop"] = f"{EXTEND_MAX} steps added, the most allowed"
        return False
    miss = _last_step_miss(now)
    ext["judged"].append({"rate": RATES[-1], "met": miss is None, "miss": miss})
    if miss is not None:
        ext["stop"] = f"{RATES[-1]:g}/s missed the SLO ({miss})"
        return False
    nxt = catalogue.extend_rate(RATES[-1], EXTEND_FACTOR, RATE_CEILING)
    if nxt is None:
        ext["stop"] = f"the generator's sustainable rate ({RATE_CEILING:g}/s) was reached"
        return False
    RATES.append(nxt)
    return True


class OpenUser(LabUser):
    """The open model: one user starts requests on a schedule (LAB_RATES), each in its own greenlet,
    whatever the earlier ones take; at most OPEN_MAX_INFLIGHT in flight (one connection each)."""

    concurrency = OPEN_MAX_INFLIGHT

    @task
    def arrivals(self) -> None:
        path = os.environ.get("LAB_PATH") or "/json"
        poisson = os.environ.get("LAB_ARRIVAL") == "poisson"
        rng = random.Random()
        inflight = [0]
        keys = itertools.count()
        due = time.time()
        _OPEN_BEGAN[:] = [due]
        for _ in range(10**9):  # bounded; the shape stops this user when the last step ends
            rate = current_rate(due)
            if not rate:  # the last step is over: end the task, so that a stopping Locust need not wait
                gevent.sleep(0.05)  # out its --stop-timeout for it (it asks for the task again until then)
                return
            due += rng.expovariate(rate) if poisson else 1.0 / rate
            wait = due - time.time()
            if wait > 0:
                gevent.sleep(wait)
            if inflight[0] >= OPEN_MAX_INFLIGHT:
                RECORDER.drop(due)
                continue
            RECORDER.offer(due, time.time() - due)
            inflight[0] += 1
            key = next(keys)
            _PENDING[key] = due
            gevent.spawn(self._one, path, due, inflight, key)

    def _one(self, path: str, intended: float, inflight: list[int], key: int) -> None:
        try:
            self.client.get(path, name=path, context={"intended": intended})
        finally:
            inflight[0] -= 1
            _PENDING.pop(key, None)


class ConnectionsUser(LabUser):
    """Mostly idle: one small request every ~5 s on a connection kept open in between."""

    wait_time = between(4.0, 6.0)

    @task
    def hello_json(self) -> None:
        self.client.get("/json")


# --- the load shape (only when the runner drives Locust) -------------------------------------------


class LabShape(LoadTestShape):
    """Warm-up at the first stage's users, then catalogue.schedule(); stops by itself.

    Locust asks a shape for users once a second, which would round a 0.5 s warm-up up to a second and
    add up to a second at each end of every repetition. The phases are therefore kept by a greenlet of
    the shape's own (`_phases`: spawn seen within PHASE_POLL, warm-up and measure timed exactly), and
    tick() only reads them."""

    use_common_options = True  # -t (run time) stays a hard cap
    PHASE_POLL = 0.05  # seconds between looks at the spawned user count

    def __init__(self) -> None:
        super().__init__()
        self.shape = os.environ.get("LAB_SHAPE", "steady")
        self.users = int(_env_float("LAB_USERS", 10))
        self.spawn_rate = _env_float("LAB_SPAWN_RATE", self.users)
        self.duration = _env_float("LAB_DURATION", 10)
        self.warmup = _env_float("LAB_WARMUP", 2)
        self.stages = catalogue.schedule(self.shape, self.users, self.spawn_rate, self.duration, tuple(RATES))
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
        while True:  # the open model's last step may add another (extend)
            end = self.measure_start + (len(RATES) * self.duration if RATES else self.stages[-1].end)
            if cap:
                end = min(end, self.began + cap)
            gevent.sleep(max(0.0, end - time.time()))
            if not (RATES and (not cap or end < self.began + cap) and extend(time.time())):
                break
        now = time.time()
        self._set_phase("tail", now)
        self._write(now)
        self.finished = True
        if self.runner is not None:  # stop now, not at the next tick (up to a second later)
            self.runner.quit()

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
        }
        (folder / "shape.json").write_text(json.dumps(data, indent=1))


if not os.environ.get("LAB_DURATION"):
    del LabShape  # hand-run Locust: no shape, -u/-r/-t apply

