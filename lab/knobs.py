"""Bounded numbers from environment variables and flags: one parser, one wording for every error."""

from __future__ import annotations


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
