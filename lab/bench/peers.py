"""`make bench`'s peers: production servers of each model with their usual safeguards, and how to start one.

A peer is what a user of the model would run instead of the lab's server: the servers must match or
beat it. (The floors, lab/bench/bare_*.py, are bare loops with no safeguards: the limit.)
- threaded: wsgiref on the stdlib's ThreadingHTTPServer (thread per connection), and cheroot, the
  common production threaded WSGI server (a pool of 10 threads, not one per connection);
- gevent: gevent.pywsgi.WSGIServer with a plain app and psycogreen;
- asyncio: a plain aiohttp app with an asyncpg pool;
- multiproc: gunicorn with aiohttp's gunicorn worker.
All answer /json, /db, /queries and /fortunes with the servers' bodies (servers.contract).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lab.stack import procs

REPO = Path(__file__).resolve().parents[2]
# kind -> (target name in the bench's tables, module run with `python -m`)
PEERS = {
    "stdlib": ("peer wsgiref threads", "lab.bench.peer_stdlib"),
    "cheroot": ("peer cheroot (thread pool)", "lab.bench.peer_cheroot"),
    "gevent": ("peer gevent.pywsgi", "lab.bench.peer_gevent"),
    "aiohttp": ("peer aiohttp+asyncpg", "lab.bench.peer_aiohttp"),
    "gunicorn": ("peer gunicorn+aiohttp", "lab.bench.peer_gunicorn"),
}
PEERS_OF = {"threaded": ("stdlib", "cheroot"), "gevent": ("gevent",), "asyncio": ("aiohttp",),
            "multiproc": ("gunicorn",)}


def names_of(model: str) -> list[str]:
    """The target names of `model`'s peers."""
    return [PEERS[kind][0] for kind in PEERS_OF[model]]


def start_peer(kind: str, port: int, database_url: str, pool_size: int, log_dir: Path,
               cpus: list[int] | None = None, health_timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """The peer `kind` on 127.0.0.1:port, started on `cpus` (gunicorn sizes its workers by them), once it
    answers /ready; its output goes to log_dir/peer-<kind>.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"peer-{kind}.log", "wb")  # noqa: SIM115 - handed to the child
    cmd = [sys.executable, "-m", PEERS[kind][1], "--port", str(port), "--database-url", database_url,
           "--pool-size", str(pool_size)]

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
                             start_new_session=True, preexec_fn=pin)
    log.close()
    try:
        procs.wait_healthy(f"http://127.0.0.1:{port}", health_timeout)
    except procs.StartError:
        popen.kill()
        popen.wait(10)
        raise
    return popen


def stop_peer(popen: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL to its whole session (gunicorn's workers with it) if it lingers."""
    popen.terminate()
    try:
        popen.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, 9)
        popen.wait(10)
