"""Files written whole or not at all: the one atomic writer (a hidden temp file, then a rename)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def temp_path(path: Path) -> Path:
    """Where `path` is written before the rename: `.<name>.tmp` in the same folder (same filesystem)."""
    return path.with_name(f".{path.name}.tmp")


def write_text(path: Path, text: str) -> Path:
    """Replace `path` with `text` (UTF-8) in one step: readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, data: Any, indent: int = 1, default: Callable[[Any], Any] | None = None) -> Path:
    """`data` as JSON plus a newline, written as write_text does."""
    return write_text(path, json.dumps(data, indent=indent, default=default) + "\n")
