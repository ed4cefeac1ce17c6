"""CPU sets: `0,2-3` read into CPU numbers, and a process tree pinned to them."""

from __future__ import annotations

import contextlib

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


def pin_tree(pid: int, cpus: list[int]) -> None:
    """Pin a process and all its descendants to `cpus`; processes that are gone are skipped."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    for proc in tree:
        with contextlib.suppress(psutil.Error):
            proc.cpu_affinity(cpus)
