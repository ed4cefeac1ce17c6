"""The Compose path: the contract suite against `docker compose up` (pytest-docker's docker_services).

Runs only where a Docker engine answers; elsewhere it is skipped and says why. The static
checks that keep docker-compose.yml in step with the native launcher always run
(test_compose_parity.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab.stack import stack

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.docker
def test_contract_suite_passes_against_the_compose_stack() -> None:
    if not stack.docker_answers():
        pytest.skip("no Docker engine answers (`docker info` failed), so the Compose stack cannot run here; "
                    "on a machine with Docker run `make test-compose`")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--compose", "-q", "-p", "no:cacheprovider",
         "tests/test_contract.py"],
        cwd=REPO, capture_output=True, text=True, timeout=1800, check=False,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
