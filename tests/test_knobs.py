"""lab/knobs.py and lab/cpus.py: bounded numbers, env-backed flags, run ids, the servers' knobs, CPU lists."""

from __future__ import annotations

import argparse
import os

import psutil
import pytest

from lab import cpus, knobs
from lab.bench import bench
from lab.claims import plan as claims_plan
from lab.load.settings import build_parser
from lab.tune import cli as tune_cli
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


def test_worded_knobs_from_the_environment_are_checked_as_their_flags_are(
        capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    knobs.env_flag(parser, "--fresh", "FRESH", "yes", "", {"FRESH": " No "}, choices=("yes", "no"))
    assert parser.parse_args([]).fresh == "no" and parser.parse_args(["--fresh", "YES"]).fresh == "yes"
    bad = argparse.ArgumentParser()
    knobs.env_flag(bad, "--fresh", "FRESH", "yes", "", {"FRESH": "sometimes"}, choices=("yes", "no"))
    with pytest.raises(SystemExit) as stop:  # argparse checks a flag's choices, never a string default's
        bad.parse_args([])
    assert stop.value.code == 2 and "FRESH='sometimes': use yes or no" in capsys.readouterr().err


COMMANDS = {"make load": lambda: build_parser().parse_args([]), "make bench": lambda: bench.main([]),
            "make tune": lambda: tune_cli.main(["--plan"]), "make claims": lambda: claims_plan.load([])}


@pytest.mark.parametrize("var, words, commands", [
    ("LAB_IDLE_POLL", "auto, yes or no", ("make load", "make bench", "make claims")),
    ("LAB_CLAIMS_SIZE", "quick, standard or tiny", ("make claims",)),
    ("LAB_FRESH_SERVER", "yes or no", ("make load", "make bench")),
    ("CALIBRATE", "auto, force or skip", ("make load", "make tune")),
    ("ARRIVAL", "uniform or poisson", ("make load",)),
    ("LAB_BENCH_REFERENCES", "yes or no", ("make bench",)),
    ("LAB_BENCH_HEAD", "locust or bare", ("make bench",)),
])
def test_a_bad_worded_knob_in_the_environment_stops_every_command_that_reads_it(
        var: str, words: str, commands: tuple[str, ...], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(var, "sometimes")
    for name in commands:
        with pytest.raises(SystemExit) as stop:
            COMMANDS[name]()
        assert stop.value.code == 2, name
        assert f"{var}='sometimes': use {words}" in capsys.readouterr().err, name


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
