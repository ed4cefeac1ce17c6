"""The multiproc peer of `make bench`: gunicorn running lab/bench/peer_aiohttp.py's app in worker
processes with aiohttp's gunicorn worker, the usual way to run aiohttp on several processes.

The worker class is aiohttp's GunicornUVLoopWebWorker (its GunicornWebWorker on uvloop, as the lab's
multiproc server runs uvloop) when uvloop is installed, else GunicornWebWorker; one worker per CPU
this process may use (as the lab's multiproc server sizes itself), gunicorn's defaults otherwise
(arbiter, worker heartbeat, 30 s worker timeout, no access log; graceful stop bounded to 5 s). This process
becomes gunicorn's arbiter (exec), so stopping it stops the workers. A benchmark reference only.
`python -m lab.bench.peer_gunicorn --port N --database-url URL [--pool-size N]`.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from lab.bench import bare_cli
from lab.bench.peer_aiohttp import ENV_POOL, ENV_URL
from servers.settings import usable_cpus


def command(host: str, port: int, workers: int) -> list[str]:
    uvloop = importlib.util.find_spec("uvloop") is not None
    worker = "aiohttp.GunicornUVLoopWebWorker" if uvloop else "aiohttp.GunicornWebWorker"
    return [sys.executable, "-m", "gunicorn", "lab.bench.peer_aiohttp:gunicorn_app", "--worker-class", worker,
            "--workers", str(workers), "--bind", f"{host}:{port}", "--backlog", "1024",
            "--graceful-timeout", "5", "--log-level", "warning"]


def main() -> None:
    args = bare_cli.parse_args(__doc__)
    os.environ[ENV_URL] = args.database_url
    os.environ[ENV_POOL] = str(args.pool_size)
    cmd = command(args.host, args.port, usable_cpus())
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
