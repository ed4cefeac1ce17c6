"""One Locust process's exact latency record: every request in HDR histograms, and writing it.

Phases: "warmup" (counted apart), "measure", "tail" (see Recorder). LAB_RECORD_DIR receives
record-<host>-<pid>.json (and acks-<host>-<pid>.tsv: key, id, status of every acknowledged order) for
every process that sends requests; a worker's record is written by its master (loadtests/collection.py).
LAB_OPEN_MAX_INFLIGHT and LAB_LATE_MS are the open model's cap on requests in flight and its lateness
threshold, recorded with every record.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

# HDR range and precision; the results builder reads them from each record.
HDR_LOWEST_US = 1
HDR_HIGHEST_US = 120_000_000
HDR_DIGITS = 3
TIMELINE_DIGITS = 2  # per-second histograms only feed plots

RECORD_DIR = os.environ.get("LAB_RECORD_DIR", "")
RECORD_FORMAT = "serverlab-locust-record"
RECORD_VERSION = 2  # 2: open-model fields (offered, late, dropped, uncorrected latency)


def env_float(name: str, default: float) -> float:
    """A number from the environment; unset or blank: default."""
    raw = os.environ.get(name, "")
    return float(raw) if raw.strip() else default


# Past a server's knee, requests in flight would grow without bound, each on a new connection that the
# server must accept: a cap keeps the overload a server's problem (dropped, counted) not a connection storm.
OPEN_MAX_INFLIGHT = int(env_float("LAB_OPEN_MAX_INFLIGHT", 256))
LATE_MS = env_float("LAB_LATE_MS", 10.0)


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
    after the measured window, while users stop). A repetition with a full-core phase has "full"
    between "measure" and "tail": its requests are only counted (CPU per request with the server's
    budget lifted, lab/load/full_core.py). Without a shape everything is measured. An
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
        # requests, failures outside the measured window
        self.outside = {"warmup": [0, 0], "full": [0, 0], "tail": [0, 0]}
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
        self.run_tag = os.environ.get("LAB_RUN_TAG", "manual")  # a worker takes the master's at test start

    def set_phase(self, phase: str, when: float | None = None) -> None:
        self.told = True
        when = when or time.time()
        if phase == "measure" and self.phase == "warmup":
            self.phase, self.measure_start = phase, when
        elif phase in ("full", "tail") and self.phase == "measure":
            self.phase, self.measure_end = phase, when
        elif phase == "tail" and self.phase == "full":
            self.phase = phase

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
        return int((when - self.measure_start) / env_float("LAB_DURATION", 10))

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

    def progress(self, users: int, offered_rps: float | None, steps: int, steps_added: int) -> dict[str, Any]:
        """The live line's figures; the open model's offered rate and steps come from its schedule."""
        second = int(time.time()) - 1  # the newest whole second
        return {"phase": self.phase, "users": users, "requests": self.requests, "failures": self.failures,
                "last_second_rps": self.done_at.get(second, 0),
                "offered_rps": offered_rps,
                "step": self._index(time.time()) + 1 if self.open_model and self.measure_start else None,
                "steps": steps, "steps_added": steps_added,
                "late": self.late, "dropped": self.dropped}

    def as_json(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            "version": RECORD_VERSION,
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "role": self.role,
            "run_tag": self.run_tag,
            "measure_start": self.measure_start,
            "measure_end": self.measure_end or time.time(),
            "requests": self.requests,
            "failures": self.failures,
            "failures_by_kind": dict(sorted(self.kinds.items())),
            "by_name": {k: {"requests": v[0], "failures": v[1]} for k, v in sorted(self.by_name.items())},
            "warmup": {"requests": self.outside["warmup"][0], "failures": self.outside["warmup"][1]},
            "full": {"requests": self.outside["full"][0], "failures": self.outside["full"][1]},
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
