"""CPU sets: `0,2-3` read into CPU numbers, a process tree pinned to them, and this thread run on them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import psutil


def parse_cpus(text: str) -> list[int]:
    """`0`, `0-1`, `0,2-3` -> sorted CPU numbers; a ValueError that shows the right form when malformed."""
    cpus: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            cpus.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ValueError(f"CPU list {text!r} is malformed; write it like 0, 0-1 or 0,2-3") from None
    if not cpus:
        raise ValueError(f"CPU list {text!r} is empty")
    return sorted(set(cpus))


def database_cpus(text: str, load_cpus: list[int] | None) -> list[int] | None:
    """LAB_DATABASE_CPUS: 'load' (or empty) -> the load CPUs, 'none' -> None, else a CPU list."""
    word = text.strip().lower()
    if word in ("", "load"):
        return load_cpus
    if word == "none":
        return None
    try:
        return parse_cpus(word)
    except ValueError as exc:
        raise ValueError(f"{exc} (LAB_DATABASE_CPUS: 'load', 'none' or a CPU list)") from None


def pin(pids: list[int], cpus: list[int]) -> None:
    """Pin each process to `cpus`; processes that are gone are skipped."""
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).cpu_affinity(cpus)


def pin_tree(pid: int, cpus: list[int]) -> None:
    """Pin a process and all its descendants to `cpus`."""
    try:
        root = psutil.Process(pid)
        pids = [root.pid, *(c.pid for c in root.children(recursive=True))]
    except psutil.Error:
        return
    pin(pids, cpus)


@contextlib.contextmanager
def running_on(cpus: Sequence[int] | None) -> Iterator[None]:
    """This thread on `cpus` for the block (as it is when None or empty), its affinity restored after.
    A process started inside inherits them, and sizes itself for them (multiproc's workers)."""
    mine = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, mine)
