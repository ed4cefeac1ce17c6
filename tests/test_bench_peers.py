"""make bench's peers and its ablation, as real processes over the session PostgreSQL: every peer answers
the four endpoints as its server does; a server with guarantees switched off (LAB_ABLATE) still serves
them; `python -m lab up` refuses LAB_ABLATE."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from lab.bench import peers
from lab.stack import procs
from lab.stack.procs import ServerProcess
from servers import ablation
from servers.settings import MODELS
from tests.conftest import ServerFactory
from tests.test_bare_references import exchange, world_shape

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
PATHS = ["/json", "/db", "/queries?queries=20", "/fortunes", "/queries?queries=abc", "/queries?queries=501"]
SERVER_OF = {kind: model for model, kinds in peers.PEERS_OF.items() for kind in kinds}


def same_answers(mine: list[tuple[int, str, bytes]], theirs: list[tuple[int, str, bytes]]) -> None:
    """The same statuses, types and bodies (rows: the same shape and count; they are random)."""
    for path, (status, ctype, body), (s_status, s_ctype, s_body) in zip(PATHS, mine, theirs, strict=True):
        assert (status, ctype) == (s_status, s_ctype) == (200, ctype), path
        if path in ("/json", "/fortunes"):
            assert body == s_body, path
        elif path == "/db":
            world_shape(json.loads(body))
        else:
            rows, s_rows = json.loads(body), json.loads(s_body)
            assert len(rows) == len(s_rows) == {"20": 20, "abc": 1, "501": 500}[path.split("=")[1]]
            for row in rows:
                world_shape(row)


@pytest.fixture(scope="module")
def running_peers(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    log_dir = tmp_path_factory.mktemp("peer-logs")
    started: list[Any] = []
    urls: dict[str, str] = {}
    try:
        for kind in peers.PEERS:
            port = procs.free_port()
            started.append(peers.start_peer(kind, port, database_url, 3, log_dir))
            urls[kind] = f"http://127.0.0.1:{port}"
        yield urls
    finally:
        for popen in started:
            peers.stop_peer(popen)


@pytest.mark.parametrize("kind", list(peers.PEERS))
def test_a_peer_answers_like_its_server(kind: str, running_peers: dict[str, str],
                                        servers: dict[str, ServerProcess]) -> None:
    same_answers(exchange(running_peers[kind], PATHS), exchange(servers[SERVER_OF[kind]].url, PATHS))
    assert exchange(running_peers[kind], ["/nope"])[0][0] == 404


def test_gunicorn_peer_runs_a_worker_per_cpu_it_is_given(database_url: str, tmp_path: Path) -> None:
    popen = peers.start_peer("gunicorn", procs.free_port(), database_url, 2, tmp_path, cpus=[0])
    try:
        workers = psutil.Process(popen.pid).children()
        assert len(workers) == 1 and all(w.cpu_affinity() == [0] for w in workers)
    finally:
        peers.stop_peer(popen)


# Each guarantee off alone on one server (round the models), then all of them on every model.
ALONE = [(name, MODELS[i % len(MODELS)]) for i, name in enumerate(ablation.GUARANTEES)]


@pytest.mark.parametrize(("off", "model"), [*ALONE, *(("all", m) for m in MODELS)])
def test_a_server_with_guarantees_off_still_serves_the_contract(
        off: str, model: str, server_factory: ServerFactory, servers: dict[str, ServerProcess]) -> None:
    ablated = server_factory(model, env={"LAB_ABLATE": off})
    same_answers(exchange(ablated.url, PATHS), exchange(servers[model].url, PATHS))
    config = json.loads(exchange(ablated.url, ["/config"])[0][2])
    assert config["ablate"] == off
    assert config["metrics"] is (off not in ("all", "metrics"))


def test_lab_up_refuses_ablate(tmp_path: Path) -> None:
    env = {**os.environ, "LAB_ABLATE": "deadline,cap", "LAB_STATE_DIR": str(tmp_path / "state")}
    out = subprocess.run([sys.executable, "-m", "lab", "up"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode != 0
    assert "unset LAB_ABLATE" in out.stdout + out.stderr
    assert not (tmp_path / "state" / "state.json").exists()  # nothing was started
