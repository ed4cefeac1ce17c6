"""Knobs (environment variables and flags): bounded numbers, env-backed flags, run ids, the servers' knobs."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from servers import settings

# The servers' knobs the lab passes through unchanged; the lab sets these others per server itself,
# and a lab-only one (the blocking endpoint of make claims, the extra CPU work of make selfcheck, the
# guarantees make bench --ablation switches off) is never inherited from a person's shell: the lab
# passes it to the servers that need it.
PER_SERVER = frozenset({"LAB_BIND", "LAB_PORT", "LAB_DATABASE_URL", "LAB_APP_NAME"})
LAB_ONLY = frozenset({"LAB_ALLOW_BLOCKING", "LAB_EXTRA_CPU_US", "LAB_ABLATE"})
SERVER_KNOBS = tuple(var for var in settings.env_vars() if var not in PER_SERVER | LAB_ONLY)
# Lab-only knobs `make up` and `make load` forward when a person asks twice: the knob, and its opt-in.
OPT_IN = {"LAB_EXTRA_CPU_US": ("LAB_ALLOW_EXTRA_CPU", "--allow-extra-cpu")}
_YES = {"1", "true", "yes", "on"}


def yes(raw: str | None) -> bool:
    """An opt-in's value: 1, true, yes or on."""
    return (raw or "").strip().lower() in _YES


def lab_only_asked(env: Mapping[str, str], allowed: bool = False) -> dict[str, str]:
    """The lab-only knobs set in `env` whose opt-in is given (its variable, or `allowed` from its flag),
    to forward to the servers; a ValueError that says what to do when one is set without it."""
    out = {}
    for var, (allow_var, allow_flag) in OPT_IN.items():
        raw = (env.get(var) or "").strip()
        if not raw:
            continue
        try:
            off = float(raw) == 0
        except ValueError:
            off = False  # the server names the bad value
        if off:
            continue
        if not (allowed or yes(env.get(allow_var))):
            raise ValueError(f"{var}={raw} adds {raw} µs of CPU work to every request of every server: "
                             "it is a lab-only knob (make selfcheck sets it on the servers it starts). "
                             f"Unset it, or, to measure servers slowed on purpose, also set {allow_var}=1 "
                             f"({allow_flag})")
        out[var] = raw
    return out


def number(raw: object, name: str, low: float, high: float, kind: type[float] = float) -> float | None:
    """None when `raw` is empty; else the value (an int when kind is int), or a ValueError that
    names the knob and its range."""
    text = "" if raw is None else str(raw).strip()
    if not text:
        return None
    what = "an integer" if kind is int else "a number"
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{name} must be {what} from {low:g} to {high:g}, got {text!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {low:g} to {high:g}, got {value:g}")
    return value


def integer(raw: object, name: str, low: int, high: int) -> int | None:
    value = number(raw, name, low, high, int)
    return None if value is None else int(value)


def choice(var: str, choices: Sequence[str]) -> Callable[[str], str]:
    """An argparse `type` for a knob with fixed words: argparse checks a flag's choices, but a string
    default (taken from the environment) only goes through `type`, so the check lives here."""
    def check(text: str) -> str:
        word = text.strip().lower()
        if word not in choices:
            words = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
            raise argparse.ArgumentTypeError(f"{var}={text!r}: use {words}")
        return word
    return check


def env_flag(parser: argparse.ArgumentParser, flag: str, var: str, default: str = "", help: str = "",
             env: Mapping[str, str] = os.environ, **kwargs: Any) -> argparse.Action:
    """A flag whose default is the environment variable `var` (else `default`); its help names `var`.
    With `choices`, a value from the environment is checked as strictly as one from the flag."""
    if "choices" in kwargs and "type" not in kwargs:
        kwargs["type"] = choice(var, tuple(kwargs["choices"]))
    action: argparse.Action = parser.add_argument(flag, default=env.get(var) or default,
                                                  help=f"{help} [{var}]" if help else f"[{var}]", **kwargs)
    return action


def run_id(raw: str, name: str = "RUN_ID") -> str:
    """A run (or tune) folder name as given, stripped; a ValueError naming the knob when it is not one."""
    text = raw.strip()
    if text and (text in {".", "..", "latest"} or not all(c.isalnum() or c in "-_." for c in text)):
        raise ValueError(f"{name}={text!r}: use letters, digits, '-', '_' and '.' only (and not 'latest')")
    return text
