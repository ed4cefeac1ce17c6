"""LAB_ABLATE, the lab-only knob of make bench --ablation: its names, its checks, and that nothing
forwards it from a person's shell."""

from __future__ import annotations

import pytest

from lab import knobs
from lab.stack import stack
from servers import ablation, settings

pytestmark = pytest.mark.unit


def test_names_all_and_none() -> None:
    assert ablation.parse("") == frozenset()
    assert ablation.parse(" Deadline, cap ") == {"deadline", "cap"}
    assert ablation.parse("all") == set(ablation.GUARANTEES)
    with pytest.raises(ValueError, match=r"unknown guarantee.*bogus.*choose from deadline"):
        ablation.parse("cap,bogus")


def test_settings_take_it_and_say_what_is_wrong() -> None:
    s = settings.load("threaded", ["--ablate", "cap,metrics"])
    assert s.off("cap") and not s.off("deadline")
    assert s.metrics is False  # metrics off by either knob
    assert settings.load("gevent").ablate == "" and not settings.load("gevent").off("cap")
    with pytest.raises(settings.SettingsError, match="LAB_ABLATE"):
        settings.load("asyncio", env={"LAB_ABLATE": "timeouts"})


def test_never_forwarded_and_refused_by_up() -> None:
    assert "LAB_ABLATE" in knobs.LAB_ONLY and "LAB_ABLATE" not in knobs.SERVER_KNOBS
    with pytest.raises(stack.StackError, match="unset LAB_ABLATE"):
        stack.up({"LAB_ABLATE": "deadline"})


def test_stand_ins_do_nothing() -> None:
    d = ablation.NoDeadlines()
    d.receiving("a")
    d.idle("a")
    assert d.overdue(1e12) == ([], []) and d.victim() is None
    b = ablation.NoBusy()
    b.start("a", 1)
    assert b.older_than(0) == []
    clock = ablation.NeverHopeless(horizon=1.0, size=10)
    clock.held(100.0, 5.0)
    assert not clock.hopeless(10_000, 1, 0.001, 5.0)
