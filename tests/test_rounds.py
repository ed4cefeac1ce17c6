"""Rounds added to a scenario (lab/load/rounds.py): when a round is added, when adding stops and why, and
the knobs that ask for it."""

from __future__ import annotations

import math
import statistics

import pytest

from lab.load import rounds
from lab.load.rounds import Reach, Rounds
from lab.load.settings import RunError, Settings, build_parser, from_args
from lab.results import stats

pytestmark = pytest.mark.unit


def reach(*mdes: float | None) -> list[Reach]:
    return [Reach(f"s{i}", 4, m) for i, m in enumerate(mdes)]


def test_the_stop_names_the_pair_that_could_not_resolve() -> None:
    r = Rounds(planned=4, resolve=0.10, max_reps=5, share_s=None, done=5)
    assert not r.more([Reach("threaded", 5, 0.122, "multiproc"), Reach("gevent", 5, 0.08, "asyncio")], 16.0)
    assert r.describe() == ("5 repetitions (1 added): threaded could see 12.2% against multiproc, not the "
                            "10% asked for; MAX_REPS=5 reached")


def test_a_round_is_added_while_one_server_cannot_resolve_the_change() -> None:
    r = Rounds(planned=4, resolve=0.10, max_reps=10, share_s=60.0, done=4)
    assert r.more(reach(0.08, 0.12), round_s=16.0) and r.stopped == ""
    assert r.worst() == Reach("s1", 4, 0.12)
    assert not r.more(reach(0.08, 0.095), round_s=16.0) and r.stopped == rounds.RESOLVED
    assert "every server could see 9.5% or less, the 10% asked for" in r.describe()


def test_a_server_without_a_scatter_yet_counts_as_unresolved() -> None:
    """A server with fewer values than a verdict tests (a failed repetition) resolves nothing yet."""
    r = Rounds(planned=4, resolve=0.10, max_reps=6, share_s=None, done=4)
    assert r.more(reach(None, 0.05), round_s=5.0) and r.worst() == Reach("s0", 4, None)
    r.done = 6
    assert not r.more(reach(None, 0.05), round_s=5.0) and r.stopped == rounds.AT_MAX
    assert r.describe() == ("6 repetitions (2 added): fewer than 4 repetitions, which no verdict tests, not "
                            "the 10% asked for; MAX_REPS=6 reached")


def test_fewer_repetitions_than_a_verdict_tests_add_no_rounds() -> None:
    """REPS=2 asks for no verdict (a pilot, a smoke run): two lucky values resolve nothing, and no round is
    added to them either."""
    r = Rounds(planned=2, resolve=0.10, max_reps=10, share_s=None, done=2)
    assert not r.more(reach(0.05, 0.04), round_s=5.0) and r.stopped == rounds.TOO_FEW
    assert r.describe() == "2 repetitions: rounds are added from 4 repetitions on, the fewest a verdict tests"


def test_adding_stops_at_max_reps_and_at_the_scenarios_share_of_the_cap() -> None:
    at_max = Rounds(planned=4, resolve=0.10, max_reps=6, share_s=None, done=6)
    assert not at_max.more(reach(0.2), round_s=16.0) and at_max.stopped == rounds.AT_MAX
    assert "s0 could see 20.0%, not the 10% asked for; MAX_REPS=6 reached" in at_max.describe()
    at_cap = Rounds(planned=4, resolve=0.10, max_reps=10, share_s=40.0, spent_s=30.0, done=5)
    assert not at_cap.more(reach(0.2), round_s=16.0) and at_cap.stopped == rounds.AT_CAP
    assert "share of TIME_CAP (40 s)" in at_cap.describe() and "5 repetitions (1 added)" in at_cap.describe()
    fits = Rounds(planned=4, resolve=0.10, max_reps=10, share_s=40.0, spent_s=20.0, done=5)
    assert fits.more(reach(0.2), round_s=16.0)


def test_without_resolve_no_round_is_added() -> None:
    r = Rounds(planned=5, resolve=0.0, max_reps=5, share_s=None, done=5)
    assert not r.more(reach(0.3), round_s=16.0) and r.stopped == rounds.OFF
    assert r.describe().startswith("5 repetitions: ") and "asked" not in r.describe()
    assert r.as_dict()["resolve"] is None and r.as_dict()["reach"][0]["mde"] == 0.3


def test_each_scenario_gets_an_even_part_of_what_the_cap_leaves_over_the_plan() -> None:
    assert rounds.share(None, 100.0, 300.0, 3) is None
    assert rounds.share(480.0, 60.0, 300.0, 4) == pytest.approx(30.0)
    assert rounds.share(480.0, 300.0, 300.0, 2) == 0.0  # already past the plan: nothing to add


def test_twin_mde_is_what_a_verdict_between_two_such_entries_could_see() -> None:
    a = [100.0, 104.0, 97.0, 101.0, 99.0]
    sd = statistics.stdev(math.log(x) for x in a)
    decision = stats.decide(a, a, 0.03)
    assert decision.mde == pytest.approx(stats.twin_mde(sd, 5, 0.03), rel=1e-3)
    assert stats.twin_mde(sd, 8, 0.03) < stats.twin_mde(sd, 5, 0.03)  # more repetitions see finer


def settings(*argv: str) -> Settings:
    return from_args(build_parser().parse_args(list(argv)), {})


def test_the_quick_profile_resolves_ten_per_cent_within_eight_minutes() -> None:
    s = settings("--profile", "quick")
    assert (s.reps, s.resolve, s.max_reps, s.time_cap) == (4, 0.10, 10, 480.0)
    smoke = settings("--profile", "smoke")
    assert smoke.resolve == 0.0 and smoke.max_reps == smoke.reps


def test_the_rounds_knobs_and_their_errors() -> None:
    s = settings("--profile", "smoke", "--resolve", "5", "--max-reps", "3", "--time-cap", "0")
    assert (s.resolve, s.max_reps, s.time_cap) == (0.05, 3, None)
    assert settings("--profile", "smoke", "--resolve", "5").max_reps == 4  # twice the repetitions
    assert settings("--profile", "quick", "--reps", "12").max_reps == 12  # never below the repetitions
    assert settings("--profile", "quick", "--time-cap", "2.5").time_cap == 150.0
    for flag, bad in (("--resolve", "-1"), ("--resolve", "ten"), ("--max-reps", "0"), ("--time-cap", "x")):
        with pytest.raises(RunError, match=flag.lstrip("-").upper().replace("-", "_")):
            settings(flag, bad)
