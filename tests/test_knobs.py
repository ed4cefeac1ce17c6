"""lab/knobs.py and lab/cpus.py: bounded numbers, env-backed flags, run ids, the servers' knobs, CPU lists."""

from __future__ import annotations

import argparse
import os

import psutil
import pytest

from lab import cpus, knobs
from servers import settings

pytestmark = pytest.mark.unit


def test_bounded_numbers_name_the_knob_and_its_range() -> None:
    assert knobs.integer(" 7 ", "REPS", 1, 100) == 7 and knobs.integer("", "REPS", 1, 100) is None
    assert knobs.number("0.5", "WARMUP", 0, 10) == 0.5
    with pytest.raises(ValueError, match=r"^REPS must be an integer from 1 to 100, got 'x'$"):
        knobs.integer("x", "REPS", 1, 100)
    with pytest.raises(ValueError, match=r"^REPS must be from 1 to 100, got 0$"):
        knobs.integer("0", "REPS", 1, 100)


def test_server_knobs_are_the_servers_own_but_those_set_per_server() -> None:
    assert set(knobs.SERVER_KNOBS) == set(settings.env_vars()) - knobs.PER_SERVER - knobs.LAB_ONLY
    assert "LAB_POOL_SIZE" in knobs.SERVER_KNOBS and "LAB_PORT" not in knobs.SERVER_KNOBS
    assert "LAB_ALLOW_BLOCKING" not in knobs.SERVER_KNOBS  # lab-only: never forwarded from a shell
    assert set(settings.env_vars()) >= knobs.PER_SERVER | knobs.LAB_ONLY  # no stale name


def test_env_flags_default_to_their_variable_and_say_so() -> None:
    parser = argparse.ArgumentParser()
    knobs.env_flag(parser, "--reps", "REPS", "3", "repetitions", {"REPS": "5"}, type=int)
    knobs.env_flag(parser, "--users", "USERS", "", "concurrent users", {"USERS": ""})
    assert vars(parser.parse_args([])) == {"reps": 5, "users": ""}
    assert parser.parse_args(["--reps", "2"]).reps == 2
    assert "repetitions [REPS]" in parser.format_help()


def test_run_ids_are_folder_names_and_never_latest() -> None:
    assert knobs.run_id(" 20261201-smoke.2 ") == "20261201-smoke.2" and knobs.run_id("") == ""
    for bad in ("latest", "..", "a/b", "x y"):
        with pytest.raises(ValueError, match=r"^TUNE_ID=.*letters, digits"):
            knobs.run_id(bad, "TUNE_ID")


def test_cpu_lists() -> None:
    assert cpus.parse_cpus("0") == [0] and cpus.parse_cpus("3,0-1, 1") == [0, 1, 3]
    for bad, why in (("a", "malformed"), ("1-x", "malformed"), ("", "malformed"), (",", "malformed")):
        with pytest.raises(ValueError, match=why):
            cpus.parse_cpus(bad)


def test_pinning_a_tree_sets_the_affinity_and_skips_the_gone() -> None:
    mine = psutil.Process()
    before = mine.cpu_affinity()
    try:
        cpus.pin_tree(os.getpid(), [before[0]])
        assert mine.cpu_affinity() == [before[0]]
    finally:
        mine.cpu_affinity(before)
    cpus.pin_tree(2**22 + 12345, [0])  # no such process: nothing to do, no error
