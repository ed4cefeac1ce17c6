"""The docs check: README.md and docs/ against the Makefile and the code (tests/test_docs.py runs it).

Every problem is one sentence naming what is missing and the page to put it in:
- every make target, and every LAB_* knob the code reads, appears in README.md or docs/;
- every command in a shell code block parses: `make` targets exist, `VAR=` assignments are variables the
  Makefile or the code reads, flags in `*_ARGS="..."` and after `python -m lab <command>` exist in that
  command's parser, flags after `python -m servers <model>` exist in the servers' settings;
- every relative link between pages resolves, to a file and (with `#anchor`) to a heading;
- every module of lab/, loadtests/ and servers/ is named on the package map, docs/architecture.md;
- every target of the Makefile has a `## ` line of help, so `make help` lists it.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import importlib
import io
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CODE_DIRS = ("lab", "loadtests", "servers")
KNOB = re.compile(r"LAB_[A-Z0-9_]+")
TARGET = re.compile(r"^([a-z][a-z0-9-]*):(?!=)(.*)$")
MAKE_VAR = re.compile(r"\$\((?:[a-z]+ )?\$?\(?([A-Z][A-Z0-9_]*)\)")
SHELL_LANGS = {"sh", "bash", "shell", "console"}
# The page a knob belongs on, by the folder of the first file that reads it (longest prefix wins).
PAGE_FOR = {
    "servers": "docs/servers.md", "lab/stack": "docs/stack.md", "lab/load": "docs/load.md",
    "loadtests": "docs/load.md", "lab/results": "docs/reading-reports.md",
    "lab/report": "docs/reading-reports.md", "lab/tune": "docs/tune.md", "lab/bench": "docs/bench.md",
    "lab/faults": "docs/faults.md", "lab/claims": "docs/claims.md", "lab/selfcheck": "docs/method.md",
    "lab/load_vs_bench": "docs/method.md",
    "lab": "docs/architecture.md",
}


@dataclass(frozen=True)
class Makefile:
    targets: dict[str, str]  # target -> its `## ` help ("" when none)
    variables: frozenset[str]  # variables the Makefile reads or sets
    args_of: dict[str, str]  # FOO_ARGS -> the `python -m lab` command it is passed to


def pages(root: Path) -> list[Path]:
    """README.md and every page under docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("**/*.md"))]


def rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def read_makefile(root: Path) -> Makefile:
    targets: dict[str, str] = {}
    variables: set[str] = set()
    args_of: dict[str, str] = {}
    for line in (root / "Makefile").read_text().splitlines():
        if (m := TARGET.match(line)) and not line.startswith("."):
            targets[m.group(1)] = m.group(2).split("## ", 1)[1].strip() if "## " in m.group(2) else ""
        if d := re.match(r"^([A-Z][A-Z0-9_]*)\s*[:?+]?=", line):
            variables.add(d.group(1))
        variables.update(MAKE_VAR.findall(line))
        if (c := re.search(r"-m lab (\w+)\b.*\$\(([A-Z_]+_ARGS)\)", line)):
            args_of[c.group(2)] = c.group(1)
    return Makefile(targets, frozenset(variables), args_of)


@functools.cache
def _strings(path: Path, mtime: float) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A source file's whole string constants, and its f-strings with each `{...}` written `{}`."""
    constants: list[str] = []
    templates: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            constants.append(node.value)
        elif isinstance(node, ast.JoinedStr):
            parts = (str(v.value) if isinstance(v, ast.Constant) else "{}" for v in node.values)
            templates.append("".join(parts))
    return tuple(constants), tuple(templates)


def _sources(root: Path) -> Iterator[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(path, constants, templates) of every Python file of the code."""
    for folder in CODE_DIRS:
        for path in sorted((root / folder).rglob("*.py")):
            real = path.resolve()
            constants, templates = _strings(real, real.stat().st_mtime)
            yield rel(root, path), constants, templates


def _models(root: Path) -> list[str]:
    tree = ast.parse((root / "servers" / "settings.py").read_text())
    for node in ast.walk(tree):
        named = any(isinstance(t, ast.Name) and t.id == "MODELS" for t in getattr(node, "targets", []))
        if isinstance(node, ast.Assign) and named:
            return [str(ast.literal_eval(e)) for e in getattr(node.value, "elts", [])]
    return []


def code_knobs(root: Path) -> dict[str, str]:
    """Every LAB_* name the code holds as a whole string (an env read, a knob table's entry, an
    environment handed to a child), with f-string templates such as f"LAB_{model.upper()}_PORT"
    expanded over the servers; -> knob: the file that names it best (see _rank)."""
    models = _models(root)
    found: dict[str, str] = {}
    for path, constants, templates in _sources(root):
        names = [c for c in constants if KNOB.fullmatch(c)]
        for template in templates:
            for m in re.finditer(r"LAB_[A-Z0-9_]*\{\}[A-Z0-9_]*", template):
                names += [m.group(0).replace("{}", model.upper()) for model in models]
        for name in names:
            if name not in found or _rank(path) < _rank(found[name]):
                found[name] = path
    return found


def _rank(path: str) -> int:
    """Which file names a knob best: the servers' own, then a command's package, then shared modules."""
    return 0 if path.startswith("servers/") else 2 if path.count("/") == 1 else 1


def code_env_names(root: Path) -> frozenset[str]:
    """Every upper-case name the code holds as a whole string: the variables `make X VAR=...` may set."""
    return frozenset(c for _path, constants, _ in _sources(root) for c in constants
                     if re.fullmatch(r"[A-Z][A-Z0-9_]+", c))


def page_for(path: str) -> str:
    stem = path.removesuffix(".py")
    best = max((p for p in PAGE_FOR if stem == p or stem.startswith(p + "/")), key=len, default="lab")
    return PAGE_FOR[best]


# --- the text of the pages -----------------------------------------------------------------------------


def code_blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(language, first line number, lines) of every fenced block."""
    lang, start, inside = "", 0, False
    lines: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            if inside:
                yield lang, start, lines
                inside = False
            else:
                lang, start, lines, inside = line.strip()[3:].strip().lower(), number + 1, [], True
        elif inside:
            lines.append(line)


def shell_commands(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, words) of every command in the page's shell blocks; comments dropped, lines joined
    at a trailing backslash, and `&&`, `||`, `;`, `|` split."""
    for lang, start, lines in code_blocks(text):
        if lang not in SHELL_LANGS:
            continue
        joined: list[tuple[int, str]] = []
        carry = ""
        for offset, line in enumerate(lines):
            line = re.sub(r"^\s*[$#]\s+(?=\S)", "", line) if lang == "console" else line
            if line.rstrip().endswith("\\"):
                carry += line.rstrip()[:-1] + " "
                continue
            joined.append((start + offset, carry + line))
            carry = ""
        for number, line in joined:
            try:
                words = shlex.split(line, comments=True)
            except ValueError as exc:
                yield number, [f"<unparsable: {exc}>"]
                continue
            command: list[str] = []
            for word in [*words, ";"]:
                if word in {"&&", "||", ";", "|"} or word.endswith(";"):
                    if word.endswith(";") and word != ";":
                        command.append(word[:-1])
                    if command:
                        yield number, command
                    command = []
                else:
                    command.append(word)


def slug(heading: str) -> str:
    """The anchor a heading gets (GitHub's rule: lower case, punctuation dropped, spaces to '-')."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    out: set[str] = set()
    seen: dict[str, int] = {}
    inside = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif not inside and (m := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)):
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


# --- parsers of the commands ----------------------------------------------------------------------------


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def _flags_of(parser: argparse.ArgumentParser) -> set[str]:
    flags = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _flags_of(sub)
    return flags


def captured_flags(run: Callable[[], Any]) -> set[str]:
    """The option strings of the parser `run` builds: its parse is stopped before it does anything."""
    original = argparse.ArgumentParser.parse_known_args

    def capture(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _Captured(self)

    argparse.ArgumentParser.parse_known_args = capture  # type: ignore[method-assign]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            run()
    except _Captured as got:
        return _flags_of(got.parser)
    finally:
        argparse.ArgumentParser.parse_known_args = original  # type: ignore[method-assign]
    raise AssertionError("no argparse parser was built")


def lab_flags(command: str) -> set[str] | None:
    """Flags of `python -m lab <command>`; None when there is no such command."""
    entry = importlib.import_module("lab.__main__")
    if command in entry.COMMANDS:
        module = importlib.import_module(entry.COMMANDS[command][0])
        return captured_flags(lambda: module.main([]))
    if command in entry.STACK:
        top = captured_flags(lambda: entry.main([command]))
        return top
    return None


def server_flags() -> set[str]:
    settings = importlib.import_module("servers.settings")
    return captured_flags(lambda: settings.load("threaded", []))


# --- the checks --------------------------------------------------------------------------------------------


class Checker:
    """All checks over one checkout (a copy of it in the tests that prove they fail)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.make = read_makefile(root)
        self.texts = {rel(root, p): p.read_text() for p in pages(root) if p.exists()}
        self._flags: dict[str, set[str] | None] = {}

    def everything(self) -> str:
        return "\n".join(self.texts.values())

    def flags(self, command: str) -> set[str] | None:
        if command not in self._flags:
            self._flags[command] = lab_flags(command)
        return self._flags[command]

    def missing_targets(self) -> list[str]:
        text = self.everything()
        return [f"make target `{t}` appears nowhere in README.md or docs/: add it to the commands table "
                f"of README.md" for t in self.make.targets
                if not re.search(rf"\bmake {re.escape(t)}\b", text)]

    def missing_help(self) -> list[str]:
        return [f"make target `{t}` has no `## ` help in the Makefile, so `make help` does not list it: "
                f"add `{t}: ... ## <one line>`" for t, text in self.make.targets.items() if not text]

    def missing_knobs(self) -> list[str]:
        text = self.everything()
        return [f"knob {k} (read in {path}) appears nowhere in README.md or docs/: "
                f"document it in {page_for(path)}" for k, path in sorted(code_knobs(self.root).items())
                if not re.search(rf"\b{k}\b", text)]

    def bad_links(self) -> list[str]:
        problems = []
        for page, text in self.texts.items():
            here = (self.root / page).parent
            for m in re.finditer(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)", text):
                target = m.group(1) or m.group(2)
                if re.match(r"^[a-z]+:", target):
                    continue
                file_part, _, anchor = target.partition("#")
                path = (here / file_part).resolve() if file_part else self.root / page
                if not path.exists():
                    problems.append(f"{page}: link `{target}` points to a missing file {file_part}")
                    continue
                if anchor and path.suffix == ".md" and anchor not in anchors(path.read_text()):
                    problems.append(f"{page}: link `{target}` points to no heading of {rel(self.root, path)}")
        return problems

    def bad_commands(self) -> list[str]:
        problems = []
        known = self.make.variables | code_env_names(self.root)
        knobs = set(code_knobs(self.root))
        for page, text in self.texts.items():
            for number, words in shell_commands(text):
                for problem in self._command(words, known, knobs):
                    problems.append(f"{page}:{number}: `{' '.join(words)}`: {problem}")
        return problems

    def _command(self, words: list[str], known: frozenset[str], knobs: set[str]) -> Iterator[str]:
        while words and re.match(r"^[A-Z][A-Z0-9_]*=", words[0]):  # VAR=value command
            name = words.pop(0).split("=", 1)[0]
            if name.startswith("LAB_") and name not in knobs:
                yield f"{name} is no knob the code reads"
        if not words:
            return
        if words[0].startswith("<unparsable"):
            yield words[0]
            return
        if words[0] == "make":
            yield from self._make(words[1:], known, knobs)
            return
        if len(words) >= 3 and words[0].endswith(("python", "python3")) and words[1] == "-m":
            if words[2] == "lab":
                yield from self._lab(words[3:])
            elif words[2] == "servers" and len(words) > 3:
                yield from self._unknown_flags(words[4:], server_flags(), f"python -m servers {words[3]}")

    def _make(self, args: list[str], known: frozenset[str], knobs: set[str]) -> Iterator[str]:
        for arg in args:
            if arg.startswith("-"):
                continue
            if "=" in arg:
                name, value = arg.split("=", 1)
                if name.startswith("LAB_") and name not in knobs:
                    yield f"{name} is no knob the code reads"
                elif not name.startswith("LAB_") and name not in known:
                    yield f"make variable {name} is read neither by the Makefile nor by the code"
                if name in self.make.args_of:
                    command = self.make.args_of[name]
                    flags = self.flags(command) or set()
                    yield from self._unknown_flags(shlex.split(value), flags, f"python -m lab {command}")
            elif arg not in self.make.targets:
                yield f"make has no target `{arg}`"

    def _lab(self, args: list[str]) -> Iterator[str]:
        if not args or args[0] in {"-h", "--help"}:
            return
        flags = self.flags(args[0])
        if flags is None:
            yield f"python -m lab has no command `{args[0]}`"
            return
        yield from self._unknown_flags(args[1:], flags, f"python -m lab {args[0]}")

    @staticmethod
    def _unknown_flags(args: list[str], flags: set[str], where: str) -> Iterator[str]:
        for arg in args:
            if arg.startswith("-") and arg != "-" and not re.match(r"^-\d", arg):
                flag = arg.split("=", 1)[0]
                if flag not in flags:
                    yield f"`{where}` has no flag {flag}"

    def pages_without_command_first(self) -> list[str]:
        """Every docs page opens with a shell block before its first `## ` section."""
        out = []
        for page, text in self.texts.items():
            if not page.startswith("docs/") or "/img/" in page:
                continue
            head = text.split("\n## ", 1)[0]
            if not any(lang in SHELL_LANGS for lang, _, _ in code_blocks(head)):
                out.append(f"{page} does not start with its command: "
                           "put a ```sh block before the first section")
        return out

    def unmapped_modules(self) -> list[str]:
        """Every module of the code is named on the package map (docs/architecture.md)."""
        text = self.texts.get("docs/architecture.md", "")
        out = []
        for folder in CODE_DIRS:
            for path in sorted((self.root / folder).rglob("*.py")):
                if path.name != "__init__.py" and not re.search(rf"\b{re.escape(path.stem)}(\.py)?\b", text):
                    out.append(f"module {rel(self.root, path)} is not named in docs/architecture.md: "
                               "add it to the package map with its one-line role")
        return out

    def all_problems(self) -> list[str]:
        return [*self.missing_targets(), *self.missing_help(), *self.missing_knobs(), *self.bad_links(),
                *self.bad_commands(), *self.pages_without_command_first(), *self.unmapped_modules()]
