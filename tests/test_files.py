"""lab/files.py: the atomic writer leaves the whole new file or the whole old one, and no temp file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import files

pytestmark = pytest.mark.unit


def test_writes_whole_files_and_makes_the_folder(tmp_path: Path) -> None:
    target = tmp_path / "new" / "page.html"
    assert files.write_text(target, "<p>é</p>") == target
    assert target.read_bytes() == "<p>é</p>".encode()
    files.write_json(tmp_path / "new" / "data.json", {"b": [1, 2]})
    assert (tmp_path / "new" / "data.json").read_text() == '{\n "b": [\n  1,\n  2\n ]\n}\n'
    assert sorted(p.name for p in target.parent.iterdir()) == ["data.json", "page.html"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    files.write_json(target, {"old": True})
    with pytest.raises(TypeError):
        files.write_json(target, {"new": object()})  # not serialisable: nothing is written
    assert json.loads(target.read_text()) == {"old": True}
    files.write_json(target, {"when": object()}, default=lambda o: "an object")
    assert json.loads(target.read_text()) == {"when": "an object"}
    (tmp_path / "taken").mkdir()  # the rename fails: a folder holds the name
    with pytest.raises(OSError):
        files.write_text(tmp_path / "taken", "text")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "taken"]
    assert files.temp_path(target) == tmp_path / ".results.json.tmp"
