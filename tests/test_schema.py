"""lab/results/schema.py and schema.md agree: each documented field is typed, each typed field documented."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest

from lab.results import schema

pytestmark = pytest.mark.unit

DOC = (Path(schema.__file__).parent / "schema.md").read_text(encoding="utf-8")
DATA = Path(__file__).parent / "data" / "reports"


def table_fields(heading: str) -> set[str]:
    """The backticked names in the first column of the table under `## <heading>`."""
    section = DOC.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([a-z0-9_]+)`", line.split(" | ")[0]))
    return names


@pytest.mark.parametrize("heading", list(schema.TABLES))
def test_each_documented_table_is_its_typeddict(heading: str) -> None:
    typed = set(typing.get_type_hints(schema.TABLES[heading]))
    documented = table_fields(heading)
    assert documented, f"no table under ## {heading} in schema.md"
    assert typed - documented == set(), f"typed but not in schema.md's table {heading}"
    assert documented - typed == set(), f"in schema.md's table {heading} but not typed"


def nested() -> list[type]:
    return [t for t in vars(schema).values()
            if isinstance(t, type) and typing.is_typeddict(t) and t not in schema.TABLES.values()]


@pytest.mark.parametrize("kind", nested(), ids=lambda t: t.__name__)
def test_every_nested_field_is_named_in_schema_md(kind: type) -> None:
    missing = [f for f in typing.get_type_hints(kind) if not re.search(rf"\b{f}\b", DOC)]
    assert missing == [], f"{kind.__name__}: {missing} not in schema.md"


def keys_fit(data: dict[str, Any], kind: type) -> list[str]:
    """Keys of `data` the TypedDict does not know, recursively into nested TypedDicts."""
    hints = typing.get_type_hints(kind)
    out = [k for k in data if k not in hints]
    for key, value in data.items():
        for arg in (hints.get(key), *typing.get_args(hints.get(key))):
            if isinstance(arg, type) and typing.is_typeddict(arg) and isinstance(value, dict):
                out += [f"{key}.{k}" for k in keys_fit(value, arg)]
            if typing.get_origin(arg) is list and isinstance(value, list):
                (item,) = typing.get_args(arg)
                if isinstance(item, type) and typing.is_typeddict(item):
                    out += [f"{key}[].{k}" for v in value for k in keys_fit(v, item)]
    return sorted(set(out))


@pytest.mark.parametrize("run", ["run-a", "run-b"])
def test_recorded_files_fit_the_types(run: str) -> None:
    data = json.loads((DATA / run / "results.json").read_text(encoding="utf-8"))
    assert keys_fit(data, schema.Results) == []
