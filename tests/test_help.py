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
