"""Variants (LAB_VARIANTS / --variants): extra servers of a load run, a model with knobs of its own or
its code from another checkout, interleaved and judged like any server."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import knobs
from servers import settings as server_settings
from servers.settings import MODELS

GRAMMAR = "NAME=MODEL[@DIR][:KEY=VAL[,KEY=VAL...]], several separated by ';'"
EXAMPLE = "asyncio-pool20=asyncio:LAB_POOL_SIZE=20"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,39}")
# What the lab sets on every server itself: never a variant's own.
_SET_BY_LAB = knobs.PER_SERVER


@dataclass(frozen=True)
class Variant:
    name: str
    model: str
    env: dict[str, str] = field(default_factory=dict)
    source: str = ""  # the root of another checkout whose servers/ this server runs; "": this checkout's


def _error(what: str) -> ValueError:
    return ValueError(f"LAB_VARIANTS / --variants: {what} (grammar: {GRAMMAR}; e.g. {EXAMPLE})")


def _pairs(name: str, text: str, model: str, allow_extra_cpu: bool) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in (p.strip() for p in text.split(",")):
        key, sep, value = (x.strip() for x in pair.partition("="))
        if not sep or not key or not value:
            raise _error(f"{name}: {pair!r} is not KEY=VAL")
        if key in env:
            raise _error(f"{name}: {key} is given twice")
        if key in _SET_BY_LAB:
            raise _error(f"{name}: {key} is set by the lab for every server; leave it out")
        if key in knobs.LAB_ONLY and key not in knobs.OPT_IN:
            raise _error(f"{name}: {key} is a lab-only knob a load run does not take")
        if key not in knobs.SERVER_KNOBS and key not in knobs.OPT_IN:
            raise _error(f"{name}: {key} is not a server knob; use one of {', '.join(knobs.SERVER_KNOBS)}")
        env[key] = value
    try:
        knobs.lab_only_asked(env, allow_extra_cpu)  # the rule `make up` applies, word for word
        server_settings.load(model, env=env)  # each value checked as the server will check it
    except ValueError as exc:
        raise ValueError(f"LAB_VARIANTS / --variants: {name}: {exc}") from None
    return env


def _source(name: str, model: str, text: str) -> str:
    if not text:
        raise _error(f"{name}: '@' needs a directory, another checkout of this repository")
    root = Path(text).expanduser().absolute()
    if not root.is_dir():
        raise _error(f"{name}: {text} is not a directory; make a checkout there first, e.g. "
                     "`git worktree add ../lab-main main`")
    code = root / "servers"
    if not (code / "__main__.py").is_file() or not (code / f"run_{model}.py").is_file():
        raise _error(f"{name}: {root} has no servers/run_{model}.py; give the root of a checkout of this "
                     "repository (the folder that holds servers/)")
    return str(root)


def parse(text: str, allow_extra_cpu: bool = False) -> list[Variant]:
    """Every variant of `text` (see GRAMMAR), checked; a ValueError that says what to fix."""
    out: list[Variant] = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        name, sep, rest = (x.strip() for x in part.partition("="))
        if not sep or not rest:
            raise _error(f"{part!r} is not NAME=MODEL")
        if not _NAME.fullmatch(name):
            raise _error(f"{name!r} is not a name: begin with a letter, then up to 39 letters, digits, "
                         "'-', '_' or '.'")
        if name in MODELS:
            raise _error(f"{name!r} is a model's name: call the variant something else, e.g. {name}-2")
        if any(v.name == name for v in out):
            raise _error(f"{name!r} names two variants: give each its own name")
        head, colon, pairs = rest.partition(":")
        model, at, where = (x.strip() for x in head.partition("@"))
        if model not in MODELS:
            raise _error(f"{name}: unknown model {model!r}; choose from {', '.join(MODELS)}")
        if colon and not pairs.strip():
            raise _error(f"{name}: nothing after ':'; give KEY=VAL pairs or drop the ':'")
        env = _pairs(name, pairs, model, allow_extra_cpu) if colon else {}
        out.append(Variant(name, model, env, _source(name, model, where) if at else ""))
    return out


def spec(variants: Mapping[str, tuple[str, dict[str, str]]], dirs: Mapping[str, str]) -> str:
    """The LAB_VARIANTS text that gives these variants again (the run's command)."""
    parts = []
    for name, (model, env) in variants.items():
        pairs = ",".join(f"{k}={v}" for k, v in env.items())
        where = f"@{dirs[name]}" if name in dirs else ""
        parts.append(f"{name}={model}{where}" + (f":{pairs}" if pairs else ""))
    return ";".join(parts)


def _git(root: str, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def checkout(root: str) -> dict[str, Any]:
    """The commit a checkout is at and whether it has uncommitted changes; {} when it is no git checkout."""
    commit = _git(root, "rev-parse", "--short", "HEAD")
    if commit is None:
        return {}
    return {"commit": commit, "uncommitted": bool(_git(root, "status", "--porcelain", "--", "servers"))}


def records(variants: Mapping[str, tuple[str, dict[str, str]]], dirs: Mapping[str, str]) -> dict[str, Any]:
    """What settings.json keeps of each variant: its model, its knobs, and where its code came from."""
    out: dict[str, Any] = {}
    for name, (model, env) in variants.items():
        rec: dict[str, Any] = {"model": model, "server_env": env}
        if name in dirs:
            rec |= {"dir": dirs[name], **checkout(dirs[name])}
        out[name] = rec
    return out


def what(rec: Mapping[str, Any]) -> str:
    """'asyncio with LAB_POOL_SIZE=20', 'asyncio from /path (commit abc1234)': a variant without its name."""
    text = str(rec.get("model"))
    if rec.get("dir"):
        text += f" from {rec['dir']}"
        if rec.get("commit"):
            text += f" (commit {rec['commit']}" + (", with uncommitted changes to servers/)"
                                                   if rec.get("uncommitted") else ")")
    env = rec.get("server_env") or {}
    if env:
        text += " with " + ", ".join(f"{k}={v}" for k, v in env.items())
    if not rec.get("dir") and not env:
        text += " as it is (a second copy)"
    return text


def describe(name: str, rec: Mapping[str, Any]) -> str:
    """'asyncio-pool20: asyncio with LAB_POOL_SIZE=20', 'asyncio-new: asyncio from /path (commit abc1234)'."""
    return f"{name}: {what(rec)}"
