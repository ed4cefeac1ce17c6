"""Every lab, servers and loadtests module stays small and says its role: at most 600 lines, a docstring."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

LAB = Path(__file__).resolve().parents[1] / "lab"
SERVERS = LAB.parent / "servers"
LOADTESTS = LAB.parent / "loadtests"
MAX_LINES = 600


def module_problems(root: Path, max_lines: int = MAX_LINES) -> list[str]:
    """What breaks the rule under root: a module over max_lines, or one whose first statement is not a
    docstring whose first line states its role. An empty __init__.py has nothing to describe."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(root.parent).as_posix()
        if path.name == "__init__.py" and not text.strip():
            continue
        lines = len(text.splitlines())
        if lines > max_lines:
            problems.append(f"{name}: {lines} lines (at most {max_lines}): split it by concern")
        doc = ast.get_docstring(ast.parse(text, filename=str(path)), clean=False)
        if not doc or not doc.splitlines()[0].strip():
            problems.append(f"{name}: no module docstring opening with a line on its role")
    return problems


def test_every_lab_module_is_small_and_says_its_role() -> None:
    modules = list(LAB.rglob("*.py"))
    assert len(modules) > 50  # the walk found the tree
    assert module_problems(LAB) == []


def test_every_servers_module_is_small_and_says_its_role() -> None:
    assert len(list(SERVERS.rglob("*.py"))) > 15  # the walk found the tree
    assert module_problems(SERVERS) == []


def test_every_loadtests_module_is_small_and_says_its_role() -> None:
    assert (LOADTESTS / "locustfile.py").is_file()  # the walk looks at the right tree
    assert len(list(LOADTESTS.rglob("*.py"))) > 5
    assert module_problems(LOADTESTS) == []


def test_the_check_finds_a_long_module_and_one_without_a_docstring(tmp_path: Path) -> None:
    pkg = tmp_path / "lab"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "ok.py").write_text('"""Does one thing."""\n\nX = 1\n')
    (pkg / "sub" / "long.py").write_text('"""Does too much."""\n' + "X = 1\n" * 600)
    (pkg / "sub" / "bare.py").write_text("import os\n")
    (pkg / "sub" / "blank_first.py").write_text('"""\nThe role on the second line."""\n')
    assert module_problems(pkg) == [
        "lab/sub/bare.py: no module docstring opening with a line on its role",
        "lab/sub/blank_first.py: no module docstring opening with a line on its role",
        "lab/sub/long.py: 601 lines (at most 600): split it by concern",
    ]
