"""Idle CPUs poll instead of halting while the lab measures, so no server pays to wake a halted CPU.

On loopback the kernel charges a sender for waking its receiver. A halted CPU is woken by an
inter-processor interrupt, which on a virtual machine traps to the hypervisor and is billed as
system time to whoever sent the data. wrk handles a response in a few µs and halts again, so a
server answering wrk paid for about one interrupt per 1.5 responses, while Locust, busy in Python,
is mostly awake when a response lands: the same server's CPU per request then depended on the
generator by 10-20 %. Holding the PM QoS request "wake-up latency 0 µs" on /dev/cpu_dma_latency
makes idle CPUs poll, and waking a polling CPU is a store to memory. The kernel drops the request
when the file is closed, also when the process dies, so the machine is never left polling.

`LAB_IDLE_POLL`: auto (poll where the lab may, else say why not), yes (poll or stop), no.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

QOS_DEVICE = Path("/dev/cpu_dma_latency")
CHOICES = ("auto", "yes", "no")


class IdleError(RuntimeError):
    """LAB_IDLE_POLL=yes but the request cannot be held here; the message says what to do."""


@dataclass(frozen=True)
class Idle:
    """What the CPUs did when idle during a run, as recorded in settings and reports."""

    asked: str  # auto | yes | no
    polling: bool
    why: str = ""  # why not, when not polling

    def as_dict(self) -> dict[str, object]:
        return {"asked": self.asked, "polling": self.polling, "why": self.why}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Idle:
        return cls(str(d.get("asked") or "auto"), bool(d.get("polling")), str(d.get("why") or ""))

    def describe(self) -> str:
        return ("idle CPUs polled (PM QoS 0 µs)" if self.polling
                else f"idle CPUs halted as the kernel chose ({self.why})")


def expected(asked: str) -> bool:
    """Whether polling(asked) would hold the request: for plans made before it is held."""
    return asked != "no" and os.access(QOS_DEVICE, os.W_OK)


def _open() -> int:
    """The held request's file descriptor; OSError when the device is missing or not writable."""
    fd = os.open(QOS_DEVICE, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, struct.pack("i", 0))
    except OSError:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def polling(asked: str) -> Iterator[Idle]:
    """Hold the request for the block (asked 'auto' or 'yes'); yields what was held."""
    if asked == "no":
        yield Idle(asked, False, "LAB_IDLE_POLL=no")
        return
    try:
        fd = _open()
    except OSError as exc:
        why = (f"{QOS_DEVICE} is missing" if isinstance(exc, FileNotFoundError)
               else f"{QOS_DEVICE} is not writable by this user" if isinstance(exc, PermissionError)
               else f"{QOS_DEVICE}: {exc.strerror or exc}")
        if asked == "yes":
            raise IdleError(f"LAB_IDLE_POLL=yes, but {why}: run as root (or grant write access to "
                            f"{QOS_DEVICE}), or set LAB_IDLE_POLL=auto to measure with halting CPUs "
                            "and have the report say so") from None
        yield Idle(asked, False, why)
        return
    try:
        yield Idle(asked, True)
    finally:
        os.close(fd)
