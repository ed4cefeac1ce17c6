"""lab/stack/idle.py: the PM QoS request that makes idle CPUs poll, held and checked on the real kernel."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lab.stack import idle

pytestmark = pytest.mark.unit

CPUIDLE = Path("/sys/devices/system/cpu")



def test_no_holds_nothing_and_says_so() -> None:
    with idle.polling("no") as held:
        assert not held.polling and held.why == "LAB_IDLE_POLL=no"
        assert "halted" in held.describe()


def test_without_the_device_auto_says_why_and_yes_stops_with_what_to_do(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idle, "QOS_DEVICE", tmp_path / "cpu_dma_latency")
    with idle.polling("auto") as held:
        assert held.as_dict() == {"asked": "auto", "polling": False,
                                  "why": f"{tmp_path}/cpu_dma_latency is missing"}
    with pytest.raises(idle.IdleError, match="LAB_IDLE_POLL=auto"), idle.polling("yes"):
        pass


def _state_usage(name: str) -> int:
    """Times any CPU entered the idle states called `name` (POLL, or the halting ones)."""
    total = 0
    for state in CPUIDLE.glob("cpu[0-9]*/cpuidle/state[0-9]*"):
        is_poll = (state / "name").read_text().strip() == "POLL"
        if is_poll == (name == "POLL"):
            total += int((state / "usage").read_text())
    return total


def test_while_held_the_idle_cpus_poll_and_after_it_they_halt_again() -> None:
    if not list(CPUIDLE.glob("cpu0/cpuidle/state[0-9]*")) or not os.access(idle.QOS_DEVICE, os.W_OK):
        pytest.skip("needs cpuidle in sysfs and a writable /dev/cpu_dma_latency (root on Linux) to watch "
                    "the kernel honour the request")
    with idle.polling("yes") as held:
        assert held.polling
        time.sleep(0.1)  # the request takes effect on each CPU's next idle entry
        polls, halts = _state_usage("POLL"), _state_usage("halt")
        time.sleep(0.3)
        assert _state_usage("POLL") > polls
        assert _state_usage("halt") == halts
    if _other_holders():
        return  # another lab run holds its own request: the CPUs rightly keep polling
    halts = _state_usage("halt")
    time.sleep(0.3)
    assert _state_usage("halt") > halts


def _other_holders() -> list[int]:
    """Processes other than this one with /dev/cpu_dma_latency open."""
    found = []
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) == str(idle.QOS_DEVICE) and int(fd.parts[2]) != os.getpid():
                found.append(int(fd.parts[2]))
        except OSError:
            continue
    return found
