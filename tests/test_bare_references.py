"""lab/bench/bare_*.py, the references of make bench, as real processes over the session PostgreSQL:
each answers /json, /db, /queries, /fortunes, /health and /ready on one keep-alive connection with
the bodies of the server it is measured against, holds --pool-size sessions, and stops on SIGTERM."""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.bench import fleet
from lab.stack import procs
from lab.stack.procs import ServerProcess

pytestmark = pytest.mark.integration

POOL_SIZE = 3
APP_NAMES = {kind: f"serverlab-bare-{kind}" for kind in fleet.BARE}
SERVER_OF = {"threaded": "threaded", "gevent": "gevent", "aiohttp": "asyncio"}  # the server a kind serves


def exchange(base: str, paths: list[str]) -> list[tuple[int, str, bytes]]:
    """GET each path in turn on one connection; (status, Content-Type, body). Fails if the connection
    was not kept alive."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    replies, sockets = [], set()
    try:
        for path in paths:
            conn.request("GET", path)
            resp = conn.getresponse()
            replies.append((resp.status, resp.getheader("Content-Type") or "", resp.read()))
            sockets.add(id(conn.sock))
    finally:
        conn.close()
    assert len(sockets) == 1, f"{base} closed a keep-alive connection"
    return replies


def sessions(db: Any, application_name: str) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application_name,))
        return int(cur.fetchone()[0])


@pytest.fixture(scope="module")
def references(database_url: str, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[dict[str, tuple[str, subprocess.Popen[bytes]]]]:
    log_dir: Path = tmp_path_factory.mktemp("bare-logs")
    started: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
    try:
        for kind in fleet.BARE:
            port = procs.free_port()
            started[kind] = (f"http://127.0.0.1:{port}",
                             fleet.start_bare(kind, port, database_url, POOL_SIZE, log_dir))
        yield started
    finally:
        for _, popen in started.values():
            popen.terminate()
            popen.wait(10)


def world_shape(item: Any) -> None:
    assert set(item) == {"id", "randomNumber"}
    assert 1 <= item["id"] <= 10_000 and isinstance(item["randomNumber"], int)


@pytest.mark.parametrize("kind", list(fleet.BARE))
def test_a_reference_answers_like_its_server(kind: str, references: dict[str, Any],
                                             servers: dict[str, ServerProcess]) -> None:
    paths = ["/json", "/db", "/queries?queries=20", "/fortunes", "/health", "/ready", "/queries?queries=0",
             "/queries?queries=abc", "/queries?queries=501"]
    mine = exchange(references[kind][0], paths)
    theirs = exchange(servers[SERVER_OF[kind]].url, paths)
    for path, (status, ctype, body), (s_status, s_ctype, s_body) in zip(paths, mine, theirs, strict=True):
        assert (status, ctype) == (s_status, s_ctype) == (200, ctype), path
        if path in ("/json", "/fortunes", "/health", "/ready"):
            assert body == s_body, path  # fortunes: the same rows, sorted and escaped alike
        elif path == "/db":
            world_shape(json.loads(body))
        else:
            rows, s_rows = json.loads(body), json.loads(s_body)
            assert len(rows) == len(s_rows) == {"20": 20, "0": 1, "abc": 1, "501": 500}[path.split("=")[1]]
            for row in rows:
                world_shape(row)
    assert exchange(references[kind][0], ["/nope"])[0][0] == 404


@pytest.mark.parametrize("kind", list(fleet.BARE))
def test_a_reference_holds_its_pool_and_lets_it_go_on_sigterm(kind: str, database_url: str, db: Any,
                                                              tmp_path: Path) -> None:
    before = sessions(db, APP_NAMES[kind])  # other references of this kind may be running
    port = procs.free_port()
    popen = fleet.start_bare(kind, port, database_url, POOL_SIZE, tmp_path)
    try:
        exchange(f"http://127.0.0.1:{port}", ["/db"] * 5)
        assert sessions(db, APP_NAMES[kind]) == before + POOL_SIZE
        popen.terminate()
        popen.wait(10)
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait(10)
    deadline = time.monotonic() + 10
    while sessions(db, APP_NAMES[kind]) > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sessions(db, APP_NAMES[kind]) == before
