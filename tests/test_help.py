"""Every `python -m lab <command> --help` prints its help: argparse formats help strings with %, so a bare
per cent sign in one flag's help breaks the whole page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab.__main__ import COMMANDS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", [*COMMANDS, "up", "down", "status", "logs"])
def test_every_command_prints_its_help(command: str) -> None:
    done = subprocess.run([sys.executable, "-m", "lab", command, "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout and "Traceback" not in done.stderr


def test_a_reader_that_goes_away_gets_no_traceback(tmp_path: Path) -> None:
    """`python -m lab compare A B | head`: the pipe's reader is gone before the command writes."""
    data = ROOT / "tests" / "data" / "drift"
    command = [sys.executable, "-m", "lab", "compare", str(data / "aa-1"), str(data / "aa-2"),
               "--out", str(tmp_path)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # as head does once it has its lines
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err[-2000:]
