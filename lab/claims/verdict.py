"""The claims as folk wisdom states them, each judged against the measured figure.

A range claim holds when the figure falls inside the folk range, and is otherwise "off by N times";
a yes/no claim holds or is refuted. When the machine, not the thing measured, set the figure
(a ramp stopped by the lab's own limit, a CPU shared with other work), the verdict says
"inconclusive" and why, rather than guess.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from lab.claims import stats

Claim = dict[str, Any]
KiB = 1024.0


def against_range(
    value: float | None, lo: float, hi: float, lower_bound: bool = False
) -> tuple[str, str, float]:
    """(verdict kind, verdict text, factor): holds inside lo..hi, else off by the factor outside.

    `lower_bound`: the true figure may be higher (the lab stopped first), so a value below the
    range proves nothing."""
    if value is None:
        return "missing", "not measured", math.nan
    if lo <= value <= hi:
        return "holds", "holds" + (" (at least)" if lower_bound else ""), 1.0
    if lower_bound and value < lo:
        return "inconclusive", f"inconclusive: held every connection tried, up to {value:,.0f}", lo / value
    factor = lo / value if value < lo else value / hi
    at_least = "≥ " if lower_bound else ""  # above the range already; the true figure may be higher still
    return "off", f"off by {at_least}{factor:.3g}× ({'lower' if value < lo else 'higher'})", factor


def yes_no(ok: bool | None, why: str = "") -> tuple[str, str, float]:
    if ok is None:
        return "missing", "not measured", math.nan
    return ("holds", "holds", 1.0) if ok else ("refuted", "refuted" + (f": {why}" if why else ""), math.nan)


def _claim(
    cid: str,
    experiment: str,
    folk: str,
    figure: str,
    value: float | None,
    unit: str,
    method: str,
    judged: tuple[str, str, float],
    note: str = "",
) -> Claim:
    kind, text, factor = judged
    return {
        "id": cid,
        "experiment": experiment,
        "folk": folk,
        "figure": figure,
        "value": value,
        "unit": unit,
        "method": method,
        "verdict": text,
        "verdict_kind": kind,
        "factor": None if math.isnan(factor) else factor,
        "note": note,
    }


def _switch(r: dict[str, Any]) -> list[Claim]:
    v = r["variants"]
    rt = r["round_trips"]
    med: Callable[[str], float | None] = lambda k: v.get(k, {}).get("us", {}).get("median")  # noqa: E731
    fig: Callable[[str], str] = lambda k: stats.fmt_summary(v.get(k, {}).get("us", {}), "µs")  # noqa: E731
    thread, green, task = med("thread-event"), med("greenlet-switch"), med("asyncio-sleep0")
    return [
        _claim(
            "thread-switch",
            "switch",
            "An OS thread context switch costs 5-10 µs.",
            fig("thread-event"),
            thread,
            "µs",
            f"Two OS threads pass a threading.Event back and forth (up to {rt:,} round "
            "trips, a fresh process per repetition); µs per switch = time / (2 × round trips).",
            against_range(thread, 5, 10),
            "Includes the GIL hand-over and Event's lock; with threading.Condition: "
            f"{fig('thread-condition')}.",
        ),
        _claim(
            "greenlet-switch",
            "switch",
            "A green thread switch costs 0.1-0.5 µs.",
            fig("greenlet-switch"),
            green,
            "µs",
            f"Two greenlets call greenlet.switch() to each other (up to {rt:,} round trips); "
            "µs per switch = time / (2 × round trips).",
            against_range(green, 0.1, 0.5),
            f"Through gevent's hub (gevent.event.Event ping-pong) a switch costs {fig('gevent-event')}.",
        ),
        _claim(
            "asyncio-switch",
            "switch",
            "Switching asyncio tasks is cheaper than switching OS threads.",
            fig("asyncio-sleep0"),
            task,
            "µs",
            "Two asyncio tasks each await asyncio.sleep(0) in turn; "
            "µs per switch, against the OS-thread figure above.",
            yes_no(
                None if task is None or thread is None else task < thread, f"{task} µs against {thread} µs"
            ),
            f"asyncio.Event ping-pong {fig('asyncio-event')}; on uvloop sleep(0) {fig('uvloop-sleep0')}, "
            f"Event {fig('uvloop-event')}.",
        ),
    ]


def _memory(r: dict[str, Any]) -> list[Claim]:
    rows = r["rows"]

    def largest(kind: str) -> dict[str, Any] | None:
        found = [row for row in rows if row["kind"] == kind and row["rss"]["median"] is not None]
        return max(found, key=lambda row: row["n"]) if found else None

    def figure(row: dict[str, Any] | None) -> str:
        if row is None:
            return "n/a"
        rss = {k: (x / KiB if isinstance(x, float | int) and k != "n" else x) for k, x in row["rss"].items()}
        return f"{stats.fmt_summary(rss, 'KiB')} RSS per unit at {row['n']:,}"

    thread, green, small = largest("thread"), largest("greenlet"), largest("thread-512k")
    virt = thread["virt"]["median"] / KiB / KiB if thread else None
    limit = r.get("stack_limit_bytes") or 0
    stack = f"{limit / KiB / KiB:g} MiB" if limit > 0 else "default (RLIMIT_STACK is unlimited)"
    note = (
        f"Virtual size per thread: {stats.fmt(virt, 'MiB')}; that is the {stack} stack each "
        "thread reserves (RLIMIT_STACK), address space the kernel backs with memory only when "
        "touched. RSS counts the pages actually touched. The kernel's own per-thread memory "
        "(a 16 KiB kernel stack and its task struct) is in neither figure."
    )
    if small:
        s_rss, s_virt = small["rss"]["median"] / KiB, small["virt"]["median"] / KiB
        t_rss = thread["rss"]["median"] / KiB if thread else None
        same = t_rss is not None and abs(s_rss - t_rss) <= 0.15 * t_rss
        note += (
            f" With threading.stack_size(512 KiB): virtual {stats.fmt(s_virt, 'KiB')}, RSS "
            f"{stats.fmt(s_rss, 'KiB')} per thread"
            + (
                ": a smaller reservation, the same memory."
                if same
                else f" (default stack: {stats.fmt(t_rss, 'KiB')})."
            )
        )
    return [
        _claim(
            "thread-memory",
            "memory",
            "An OS thread takes 1-8 MB of memory.",
            figure(thread),
            thread["rss"]["median"] / KiB if thread else None,
            "KiB",
            "A fresh process parks N threads on one Event and reads its VmRSS and VmSize from /proc "
            "before and after; per unit = the difference / N.",
            against_range(thread["rss"]["median"] / KiB if thread else None, 1024, 8192),
            note,
        ),
        _claim(
            "greenlet-memory",
            "memory",
            "A green thread takes 1-64 KB of memory.",
            figure(green),
            green["rss"]["median"] / KiB if green else None,
            "KiB",
            "A fresh process parks N gevent greenlets on one gevent Event; RSS difference / N.",
            against_range(green["rss"]["median"] / KiB if green else None, 1, 64),
        ),
    ]


FOLK_CONNECTIONS = {
    "threaded": ("Threads handle hundreds to thousands of connections.", 100, 9_999),
    "gevent": ("Green threads handle 10,000s to 1,000,000s of connections.", 10_000, 1_000_000),
    "asyncio": ("asyncio handles 100,000+ connections.", 100_000, math.inf),
}


def _connections(r: dict[str, Any]) -> list[Claim]:
    claims = []
    for s in r["servers"]:
        if s["server"] not in FOLK_CONNECTIONS:
            continue
        folk, lo, hi = FOLK_CONNECTIONS[s["server"]]
        bound = bool(s.get("limit_is_cap") or s.get("completed"))
        held = s["held"] or None
        last_ok = [st for st in s["steps"] if st["ok"]]
        per = last_ok[-1]["rss_per_conn"] / KiB if last_ok and last_ok[-1]["rss_per_conn"] else None
        figure = (
            f"{s['held']:,} idle keep-alive connections held"
            + (" (all tried)" if bound else "")
            + (f", {per:.1f} KiB RSS each" if per else "")
        )
        claims.append(
            _claim(
                f"{s['server']}-connections",
                "connections",
                folk,
                figure,
                held,
                "connections",
                f"This process opens idle keep-alive connections to the {s['server']} server in steps "
                f"({', '.join(f'{x:,}' for x in r['steps'])}), each after one GET /json; a step passes when "
                "all are held and a fresh client's /json answers within 1 s.",
                against_range(held, lo, hi, lower_bound=bound),
                f"Stopped by: {s['stopped_by']}.",
            )
        )
    return claims


def _gil(r: dict[str, Any]) -> list[Claim]:
    loops = r["loops"]
    sp = loops["speedup"]
    cores = loops["cores_used"]
    cpus = r["cpus"]
    t2 = sp["threads-2"]["median"]
    p_k = min(2, cpus)
    p2 = sp[f"processes-{p_k}"]["median"]
    got = cores[f"processes-{p_k}"]["median"]
    served = r["served_speedup"]
    ft = loops.get("ft_speedup") or {}
    ft_note = (
        f"Free-threaded {r['free_threaded']}: 2 threads {ft.get('ft-threads-2', math.nan):.2f}×, "
        f"4 threads {ft.get('ft-threads-4', math.nan):.2f}× over one."
        if ft
        else f"Free-threaded Python: {r['free_threaded_note']}."
    )
    def fig(name: str) -> str:
        return f"{sp[name]['median']:.2f}× ({sp[name]['lo']:.2f}-{sp[name]['hi']:.2f})"

    # Under the GIL a process runs Python on one core at a time: its CPU time over wall time stays
    # near 1 however many threads work. That, not the noisier speed-up, decides the verdict.
    t_cores = max(cores["threads-2"]["median"], cores["threads-4"]["median"])
    threads_hold = t_cores <= 1.15
    why = f"{t2:.2f}× as fast as one thread, on {t_cores:.2f} cores" if not threads_hold else ""
    if got < 0.8 * p_k:
        proc_judged = (
            "inconclusive",
            f"inconclusive: the {p_k} processes got only {got:.2f} of {p_k} cores "
            "(the machine was busy with other work)",
            math.nan,
        )
    else:
        proc_judged = against_range(p2, 0.8 * p_k, p_k * 1.1)
        if proc_judged[0] == "off":
            proc_judged = ("off", f"off by {p_k / p2:.3g}× (lower)", p_k / p2)
    return [
        _claim(
            "gil-threads",
            "gil",
            "CPU-bound threads are no faster than one thread under the GIL.",
            f"2 threads {fig('threads-2')}, 4 threads {fig('threads-4')} the throughput of one; "
            f"at most {t_cores:.2f} cores busy",
            t2,
            "×",
            f"A pure-Python loop ({r['loop_units']} units of {r['cpu_n']:,} steps per worker) in 1, 2 "
            "and 4 threads of one process; throughput over one thread's in the same repetition (median), "
            "and the process's CPU time over wall time (cores busy).",
            yes_no(threads_hold, why),
            f"Served: threaded /cpu with 2 clients ran {served['threaded 2 clients vs 1']:.2f}× the "
            f"requests of 1 client. {ft_note}",
        ),
        _claim(
            "processes-scale",
            "gil",
            f"Processes scale with cores ({cpus} here).",
            f"{p_k} processes {fig(f'processes-{p_k}')} the throughput of one thread, on {got:.2f} cores",
            p2,
            "×",
            "The same loop in 1, 2 and 4 forked processes started together; throughput over "
            "one thread's; the CPU time the children got says how many cores they had.",
            proc_judged,
            f"Per core the processes got: {p2 / got if got else math.nan:.2f}× one thread's throughput. "
            f"Served: multiproc /cpu with 2 workers ran {served['multiproc 2 workers vs 1']:.2f}× the "
            "requests of 1 worker (2 clients each; the clients share the same cores).",
        ),
    ]


def _blocking(r: dict[str, Any]) -> list[Claim]:
    block = r["block_ms"]
    folk = {
        "asyncio": ("One blocking call in a coroutine freezes the whole event loop.", True),
        "gevent": ("An unpatched blocking call in a greenlet freezes every greenlet of the process.", True),
        "threaded": ("A blocking call in one thread does not hurt requests in other threads.", False),
    }
    claims = []
    for model, row in r["servers"].items():
        text, freezes = folk[model]
        without, with_ = row["without"]["p99_ms"], row["with"]["p99_ms"]
        p99 = with_["median"]
        froze = None if p99 is None else p99 >= block / 2
        ok = froze if freezes else (None if froze is None else not froze)
        claims.append(
            _claim(
                f"{model}-blocking",
                "blocking",
                text,
                f"other clients' /json p99 {stats.fmt_summary(with_, 'ms')} beside one blocking call, "
                f"{stats.fmt_summary(without, 'ms')} without",
                p99,
                "ms",
                f"{r['clients']} clients call /json every {r['pace_ms']:.0f} ms "
                f"for {r['phase_seconds']:g} s, "
                f"alone and while one more client calls /block?ms={block} back-to-back "
                "(LAB_ALLOW_BLOCKING=1).",
                yes_no(ok, f"p99 {p99:.1f} ms beside a {block} ms block" if p99 is not None else ""),
                f"p99 ratio with/without {row['p99_ratio']:.1f}×." if row.get("p99_ratio") else "",
            )
        )
    return claims


def _guarantees(r: dict[str, Any]) -> list[Claim]:
    """One claim: the three per-connection guarantees together, threaded against asyncio (gevent shown)."""
    three = "-deadline,cap,cancel"
    costs = {m: f["costs"].get(three) for m, f in r["servers"].items()}
    on = {m: f["cpu_us"].get("all on") for m, f in r["servers"].items()}

    def shown(m: str) -> str:
        c = costs.get(m)
        if not c:
            return f"{m} not measured"
        return f"{m} {c['us']:+.1f} µs [{c['low']:+.1f}, {c['high']:+.1f}] of {on[m]:.1f}"

    t, a = costs.get("threaded"), costs.get("asyncio")
    judged: tuple[str, str, float]
    if not t or not a:
        judged = yes_no(None)
    elif a["high"] < t["low"]:
        judged = yes_no(True)
    elif t["high"] < a["low"]:
        judged = yes_no(False, "dearer on the event loop than on threads")
    else:
        judged = ("inconclusive", f"inconclusive: {t['us']:+.1f} and {a['us']:+.1f} µs cannot be told apart "
                  "at these repetitions (their intervals overlap)", math.nan)
    return [_claim(
        "guarantee-cost",
        "guarantees",
        "A timeout, a connection cap and a cancellation are cheap on an event loop and dear on threads.",
        "deadline + cap + cancel per /json request: " + "; ".join(shown(m) for m in r["servers"]),
        t["us"] if t else None,
        "µs",
        f"wrk -c{r['connections']} on {r['path']}, {r['reps']} x {r['seconds']} s per figure, each server "
        "with all its guarantees on and with the receive deadline, the connection cap and the "
        "cancellation on disconnect switched off (LAB_ABLATE, lab only); CPU per request over the middle "
        "of each run; cost = on - off, with its 95 % interval (lab/bench/ablation.py).",
        judged,
        "Holds when asyncio's interval lies below threaded's. `make bench --ablation` prices every "
        "guarantee on /json and /db.",
    )]


BUILDERS: dict[str, Callable[[dict[str, Any]], list[Claim]]] = {
    "switch": _switch,
    "memory": _memory,
    "connections": _connections,
    "gil": _gil,
    "blocking": _blocking,
    "guarantees": _guarantees,
}


def judge(experiments: dict[str, Any]) -> list[Claim]:
    """Every claim whose experiment ran and produced results."""
    claims: list[Claim] = []
    for name, build in BUILDERS.items():
        result = experiments.get(name)
        if result and not result.get("error"):
            claims += build(result)
    return claims
