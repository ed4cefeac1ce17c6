"""The open model per offered rate: what the server served, whether the generator kept up; capacity at SLO."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.results.generator import GENERATOR_CPU_LIMIT, generator_cpu
from lab.results.records import latency_ms, load_records, merge, read_json

# Open model: the generator could not sustain a rate when its starts lagged the schedule by more than
# this at p99 (a few late starts behind a burst of responses are counted, not disqualifying).
LAG_P99_LIMIT_MS = 25.0
DELIVERED_SHARE = 0.95  # a step whose generator lagged still counts if it delivered this much of its rate
FAILURE_SHARE_LIMIT = 0.01  # capacity at SLO: at most 1 % failed (or dropped) requests


def merge_steps(records: Sequence[dict[str, Any]]) -> dict[int, list[Any]]:
    """The processes' per-step accumulators: index -> [requests, failures, blobs, offered, late, dropped,
    uncorrected blobs, start-lag blobs]."""
    out: dict[int, list[Any]] = {}
    for rec in records:
        for index, n, fails, blob, offered, late, dropped, raw, lag in rec.get("steps") or []:
            acc = out.setdefault(index, [0, 0, [], 0, 0, 0, [], []])
            acc[7].append(lag)
            acc[0] += n
            acc[1] += fails
            acc[2].append(blob)
            acc[3] += offered
            acc[4] += late
            acc[5] += dropped
            if raw:
                acc[6].append(raw)
    return out


def open_steps(shape: dict[str, Any], acc: dict[int, list[Any]], start: float, run: dict[str, Any],
               calibration: dict[str, Any] | None, slo_p99_ms: float) -> list[dict[str, Any]]:
    """Per offered rate: what the server achieved, its latency (from the scheduled start, and
    uncorrected), what failed or could not start, and whether the generator kept the rate."""
    sustainable = (calibration or {}).get("open_sustainable_rps")
    # what the generator saw as each step ended, requests still in flight included (loadtests/open_model.py)
    seen = {j.get("rate"): j.get("miss") for j in (shape.get("extension") or {}).get("judged") or []}
    steps = []
    for i, st in enumerate(shape.get("stages") or []):
        rate = st.get("rate")
        if rate is None:
            continue
        lo, hi = start + st["start"], start + st["end"]
        span = hi - lo
        n, fails, blobs, offered, late, dropped, raws, lags = acc.get(i) or [0, 0, [], 0, 0, 0, [], []]
        lat = latency_ms(merge(blobs, digits=2))
        raw = latency_ms(merge(raws, digits=2))
        lag = latency_ms(merge(lags, digits=2))
        lag_p99 = lag["p99"] if lag else None
        gen = generator_cpu(run, lo, hi)["cpu_percent_mean"]
        reasons = []
        if lag_p99 is not None and lag_p99 > LAG_P99_LIMIT_MS:
            reasons.append(f"its starts lagged the schedule by {lag_p99:g} ms at p99 (limit "
                           f"{LAG_P99_LIMIT_MS:g} ms): the generator fell behind")
        saturated = []  # the generator itself at its limit: even latency from the send is in doubt
        if gen is not None and gen >= GENERATOR_CPU_LIMIT:
            saturated.append(f"Locust used {gen:.0f}% of a core")
        if sustainable and rate > sustainable:
            saturated.append(f"above the generator's calibrated sustainable rate ({sustainable:.0f}/s)")
        reasons += saturated
        failure_share = (fails + dropped) / offered if offered else None
        p99 = lat["p99"] if lat else None
        raw_p99 = raw["p99"] if raw else None
        misses = []
        if p99 is None or p99 >= slo_p99_ms:
            misses.append(f"p99 {p99} ms >= {slo_p99_ms:g} ms" if p99 is not None
                          else "no successful request")
        if failure_share is not None and failure_share >= FAILURE_SHARE_LIMIT:
            misses.append(f"{failure_share:.1%} failed or dropped")
        # Requests still in flight when the run ended (after its last step) have no record here; the
        # generator counted those waiting past the SLO as the step ended, and its miss stands for them.
        unanswered = max(0, offered - n - dropped)
        overdue = bool(unanswered and seen.get(rate))
        if overdue:
            misses.append(f"{unanswered} of {offered} unanswered when the run ended; as the step ended the "
                          f"generator saw {seen[rate]}")
        # A miss late starts cannot explain: the server's answers, timed from when each request was sent,
        # missed the SLO by more than the generator's own delay (its start lag's p99: a loop that starts
        # requests late reads answers late too), or requests failed or could not start (too many waiting).
        slow = p99 is not None and raw_p99 is not None and raw_p99 - (lag_p99 or 0.0) >= slo_p99_ms
        own = bool(misses) and (slow or overdue
                                or (failure_share is not None and failure_share >= FAILURE_SHARE_LIMIT))
        steps.append({
            "index": i, "rate": rate, "start_s": st["start"], "end_s": st["end"],
            "offered": offered, "requests": n, "failures": fails, "late": late, "dropped": dropped,
            "unanswered": unanswered,
            "achieved_rps": round(n / span, 1) if span else None,
            "ok_rps": round((n - fails) / span, 1) if span else None,
            "failure_share": None if failure_share is None else round(failure_share, 6),
            "late_share": round(late / offered, 6) if offered else None, "start_lag_p99_ms": lag_p99,
            "p50_ms": lat["p50"] if lat else None, "p99_ms": p99, "max_ms": lat["max"] if lat else None,
            "p50_uncorrected_ms": raw["p50"] if raw else None,
            "p99_uncorrected_ms": raw["p99"] if raw else None,
            "generator_cpu_percent": gen, "generator_limited": bool(reasons), "generator_reasons": reasons,
            "generator_saturated": bool(saturated), "meets_slo": not misses, "misses": misses,
            "servers_miss": own and not saturated,
        })
    return steps


def step_holds(st: dict[str, Any]) -> bool:
    """Whether a step counts toward capacity: it met the SLO at the rate really offered. Lag in the
    generator only adds to latency measured from the schedule, so a step that met the SLO in spite of it
    still counts (one stalled start among 60 must not void it); only a miss is then in doubt."""
    if not st["meets_slo"]:
        return False
    if not st["generator_limited"]:
        return True
    return not st["dropped"] and (st["achieved_rps"] or 0) >= DELIVERED_SHARE * st["rate"]


def capacity(steps: Sequence[dict[str, Any]], slo_p99_ms: float, sustainable: float | None = None,
             extension: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Capacity at SLO: the highest offered rate, stepping up, before the first step that misses the SLO
    (p99 or failures). A miss late starts could explain (the generator lagged, and timed from the send the
    server met the SLO), or one where the generator itself was at its limit, is never taken for the
    server's limit, nor is a last step at the generator's `sustainable` rate that still met the SLO: the
    capacity is then a lower bound (`limited_by` not "server"). `extension`: what the generator added
    past the planned steps (shape.json), for the note."""
    if not steps:
        return None
    best: float | None = None
    knee = None
    for st in steps:
        if not step_holds(st):
            knee = st
            break
        best = st["rate"]
    # A higher step that held again: one noisy step may have placed the knee (stated, never used).
    after = steps[steps.index(knee) + 1:] if knee else []
    again = max((st["rate"] for st in after if step_holds(st)), default=None)
    top = steps[-1]["rate"]
    if knee is None and sustainable and top >= 0.999 * sustainable:
        limited_by, note = "generator", (f"every offered rate up to {top:g}/s met the SLO, and that is "
                                         "the generator's calibrated sustainable rate: the generator's "
                                         "limit, not the server's; the server's capacity is at least that")
    elif knee is None:
        stop = (extension or {}).get("stop")
        limited_by, note = "not reached", (f"every offered rate up to {top:g}/s met the SLO"
                                           f"{f' ({stop})' if stop else ''}: the capacity is at least that; "
                                           "allow more steps (EXTEND_STEPS=) or offer more (RATES=)")
    elif knee["generator_limited"] and not knee.get("servers_miss"):
        limited_by, note = "generator", (f"the generator could not sustain {knee['rate']:g}/s "
                                         f"({'; '.join(knee['generator_reasons'])}): the server's capacity "
                                         "is at least the rate before, not known beyond")
    else:
        limited_by, note = "server", f"at {knee['rate']:g}/s: {'; '.join(knee['misses'])}"
        if knee["generator_limited"]:  # late starts, yet the server's own answers missed too
            raw, lag = knee.get("p99_uncorrected_ms"), knee.get("start_lag_p99_ms") or 0.0
            own = raw is not None and raw - lag >= slo_p99_ms
            why = (f"timed from the send its p99 was still {raw:g} ms, more than the lag's {lag:g} ms over "
                   "the SLO" if own else "requests failed or could not start")
            note += f" (the generator's starts lagged too, but {why}: the miss is the server's)"
    if again is not None:
        note += (f"; yet {again:g}/s met the SLO again, so one noisy step may have placed this knee: "
                 "more repetitions (REPS=) judge it")
    return {"capacity_rps": best, "slo_p99_ms": slo_p99_ms, "limited_by": limited_by,
            "lower_bound": limited_by != "server",  # the knee lies above (lab/results/bounds.py)
            "knee_rate": knee["rate"] if knee else None, "held_again_rate": again, "note": note}



def rep_capacity(rep_dir: Path, slo_p99_ms: float,
                 calibration: dict[str, Any] | None) -> dict[str, Any] | None:
    """One finished repetition's capacity at SLO from its raw files (the runner places the next
    repetition's steps by it); None when it has no steps."""
    run = read_json(rep_dir / "run.json") or {}
    records = load_records(rep_dir / "records")
    shape = read_json(rep_dir / "records" / "shape.json") or {}
    if not records or not shape.get("measure_start"):
        return None
    steps = open_steps(shape, merge_steps(records), shape["measure_start"], run, calibration, slo_p99_ms)
    sustainable = (calibration or {}).get("open_sustainable_rps")
    return capacity(steps, slo_p99_ms, sustainable, shape.get("extension"))


def notes_by_rep(notes: Sequence[str]) -> str:
    """The repetitions' capacity notes, each once, with the repetitions it holds for."""
    groups: dict[str, list[int]] = {}
    for rep, note in enumerate(notes, 1):
        groups.setdefault(note, []).append(rep)
    if len(groups) <= 1:
        return next(iter(groups), "")
    return "; ".join(f"rep {','.join(map(str, reps))}: {note}" for note, reps in groups.items())
