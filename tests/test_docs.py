"""README.md and docs/ against the Makefile and the code: targets, knobs, commands, links (docs_check.py)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.docs_check import Checker, code_knobs, read_makefile, shell_commands, slug

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
TASK_PAGES = ("stack", "servers", "load", "reading-reports", "compare", "tune", "bench", "faults", "claims",
              "scale-out", "method", "architecture", "develop")


@pytest.fixture(scope="module")
def checker() -> Checker:
    return Checker(REPO)


def _report(problems: list[str]) -> str:
    return "\n" + "\n".join(problems)


def test_every_make_target_is_documented(checker: Checker) -> None:
    assert checker.make.targets, "no targets read from the Makefile"
    assert not (problems := checker.missing_targets()), _report(problems)


def test_make_help_lists_every_target_with_one_line(checker: Checker) -> None:
    assert not (problems := checker.missing_help()), _report(problems)
    # `make help` greps the Makefile with this pattern: every target must match it, once
    lines = (REPO / "Makefile").read_text().splitlines()
    listed = [line.split(":", 1)[0] for line in lines if re.match(r"^[a-z-]+:.*## ", line)]
    assert sorted(listed) == sorted(checker.make.targets)


def test_every_knob_the_code_reads_is_documented(checker: Checker) -> None:
    knobs = code_knobs(REPO)
    # the checker must see knobs from every place they are read: the servers' table, the lab, Locust's
    # environment, and the per-server ports built in an f-string
    assert {"LAB_POOL_SIZE", "LAB_SERVER_CPU", "LAB_RECORD_DIR", "LAB_THREADED_PORT", "LAB_BENCH_REPS"} <= \
        set(knobs)
    assert not (problems := checker.missing_knobs()), _report(problems)


def test_every_command_in_a_code_block_parses(checker: Checker) -> None:
    commands = [words for text in checker.texts.values() for _, words in shell_commands(text)]
    makes = sum(1 for w in commands if w[0] == "make")
    assert makes >= 40, f"only {makes} make commands found: is the parser blind?"
    assert not (problems := checker.bad_commands()), _report(problems)


def test_every_module_is_on_the_package_map(checker: Checker) -> None:
    assert not (problems := checker.unmapped_modules()), _report(problems)


def test_every_link_between_pages_resolves(checker: Checker) -> None:
    assert not (problems := checker.bad_links()), _report(problems)


def test_the_readme_is_a_map_and_every_page_starts_with_its_command(checker: Checker) -> None:
    lines = len(checker.texts["README.md"].splitlines())
    assert lines <= 250, f"README.md has {lines} lines; move detail into docs/ (at most 250)"
    for page in TASK_PAGES:
        assert f"docs/{page}.md" in checker.texts, f"docs/{page}.md is missing"
        assert f"](docs/{page}.md)" in checker.texts["README.md"], f"README.md does not link docs/{page}.md"
    assert not (problems := checker.pages_without_command_first()), _report(problems)
    assert (REPO / "docs" / "img" / "report.png").stat().st_size < 400_000, "keep the report picture small"


# --- the checker fails when it should ---------------------------------------------------------------------


def _copy(tmp_path: Path) -> Path:
    """The docs and the Makefile copied, the code linked: a checkout whose pages a test may break."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO / "README.md", root)
    shutil.copy(REPO / "Makefile", root)
    shutil.copytree(REPO / "docs", root / "docs")
    for folder in ("lab", "loadtests", "servers"):
        (root / folder).symlink_to(REPO / folder)
    return root


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def test_a_knob_deleted_from_the_docs_is_named_with_its_page(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    before = set(Checker(root).missing_knobs())
    for page in [root / "README.md", *(root / "docs").glob("*.md")]:
        page.write_text(re.sub(r"\bLAB_BENCH_THINK_MS\b", "the think time", page.read_text()))
    problems = sorted(set(Checker(root).missing_knobs()) - before)
    assert len(problems) == 1, problems
    assert "LAB_BENCH_THINK_MS" in problems[0] and "docs/bench.md" in problems[0], problems


def test_a_target_missing_from_the_docs_or_its_help_is_named(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    makefile = root / "Makefile"
    makefile.write_text(makefile.read_text() + "\nprofile: venv\n\t$(PY) -m lab load --plan\n")
    checker = Checker(root)
    assert any("`profile`" in p and "README.md" in p for p in checker.missing_targets())
    assert any("`profile`" in p and "## " in p for p in checker.missing_help())


def test_a_bad_command_is_named_with_its_page_and_line(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    page = root / "docs" / "load.md"
    _edit(page, "make load PROFILE=smoke SERVERS=asyncio,gevent",
          "make lode PROFLE=smoke LOAD_ARGS='--reps 2 --repz 3' LAB_SERVER_CPUU=1")
    _edit(page, ".venv/bin/python -m lab load --help", ".venv/bin/python -m lab load --no-such-flag")
    problems = Checker(root).bad_commands()
    text = "\n".join(problems)
    for expected in ("no target `lode`", "make variable PROFLE", "flag --repz", "LAB_SERVER_CPUU",
                     "python -m lab load` has no flag --no-such-flag"):
        assert expected in text, text
    assert all(p.startswith("docs/load.md:") for p in problems), problems
    assert "no flag --reps" not in text, "a flag that exists was called missing"


def test_a_module_missing_from_the_map_is_named(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _edit(root / "docs" / "architecture.md", "sockdiag.py", "sock_diag reader")
    assert [p.split(" is ")[0] for p in Checker(root).unmapped_modules()] == ["module lab/load/sockdiag.py"]


def test_a_broken_link_or_anchor_is_named(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _edit(root / "README.md", "](docs/tune.md)", "](docs/tuning.md)")
    _edit(root / "docs" / "compare.md", "](method.md#self-checks)", "](method.md#self-check)")
    problems = Checker(root).bad_links()
    assert any(p.startswith("README.md") and "docs/tuning.md" in p for p in problems), problems
    assert any(p.startswith("docs/compare.md") and "#self-check`" in p for p in problems), problems


def test_headings_become_anchors_as_on_github() -> None:
    assert slug("The verdict rule, in plain words") == "the-verdict-rule-in-plain-words"
    assert slug("The open model: capacity at SLO") == "the-open-model-capacity-at-slo"
    assert slug("Tuning a knob: `make tune`") == "tuning-a-knob-make-tune"


def test_the_makefile_is_read_as_make_reads_it() -> None:
    make = read_makefile(REPO)
    assert {"up", "load", "test-fast", "help"} <= set(make.targets)
    assert make.args_of["LOAD_ARGS"] == "load" and make.args_of["BENCH_ARGS"] == "bench"
    assert {"RUN", "A", "B", "FOLLOW"} <= make.variables
