"""The processes a bench measures: every server, its metrics-off twin and its stack's bare reference."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from lab.bench import peers
from lab.bench.wrk import Target, tree
from lab.cpus import pin_tree
from lab.stack import cpu_budget, procs

REPO = Path(__file__).resolve().parents[2]
# a reference's kind (lab/bench/bare_<kind>.py) -> its target name
BARE = {"threaded": "bare threaded+psycopg2", "gevent": "bare gevent+psycopg2",
        "aiohttp": "bare aiohttp+asyncpg"}
REFERENCE_OF = {"threaded": "threaded", "gevent": "gevent", "asyncio": "aiohttp", "multiproc": "aiohttp"}


def reference_of(model: str) -> str:
    """The target name of `model`'s stack reference."""
    return BARE[REFERENCE_OF[model]]


def start_bare(kind: str, port: int, database_url: str, pool_size: int, log_dir: Path,
               wrapper: Sequence[str] = (), health_timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """lab/bench/bare_<kind>.py (kind: a key of BARE) on 127.0.0.1:port, once it answers /ready."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"bare-{kind}.log", "wb")  # noqa: SIM115 - handed to the child
    cmd = [*wrapper, sys.executable, "-m", f"lab.bench.bare_{kind}", "--port", str(port),
           "--database-url", database_url, "--pool-size", str(pool_size)]
    popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             cwd=REPO, start_new_session=True)
    log.close()  # the child holds its own copy
    try:
        procs.wait_healthy(f"http://127.0.0.1:{port}", health_timeout)
    except procs.StartError:
        popen.kill()
        popen.wait(10)
        raise
    return popen


class Fleet:
    """Every server (and its metrics-off twin when /json is measured), every stack reference and peer, as
    one set of processes: pinned, each under its own CPU budget, started afresh for each repetition
    when asked (a process's cost per request is not the next one's, so one process per figure would
    hide that noise from the spread)."""

    def __init__(self, models: Sequence[str], paths: Sequence[str], url: str, args: argparse.Namespace,
                 log_dir: Path, server_cpus: list[int] | None) -> None:
        self.models, self.paths, self.url, self.args = models, paths, url, args
        self.log_dir, self.server_cpus = log_dir, server_cpus
        self.targets: dict[str, Target] = {}
        self.servers: list[procs.ServerProcess] = []
        self.bares: list[subprocess.Popen[bytes]] = []
        self.peers: list[subprocess.Popen[bytes]] = []
        self.budgets: list[cpu_budget.CpuBudget] = []

    def start(self, rep: int) -> None:
        env = {"LAB_POOL_SIZE": str(self.args.pool_size)}
        logs = self.log_dir / f"rep-{rep + 1}"
        also = " and their references" if self.args.references == "yes" else ""
        print(f"rep {rep + 1}: starting {len(self.models)} servers{also} ...", flush=True)
        for model in self.models:
            twins = "/json" in self.paths and self.args.references == "yes"
            for metrics_on in (True, False) if twins else (True,):
                name = model if metrics_on else f"{model} (metrics off)"
                server = procs.start_server(
                    model, port=procs.free_port(), database_url=self.url, cpus=self.server_cpus,
                    log_dir=logs / ("metrics-on" if metrics_on else "metrics-off"),
                    env={**env, "LAB_METRICS": "1" if metrics_on else "0"},
                )
                self.servers.append(server)
                self.targets[name] = Target(name, server.url, server.pid)
        for kind in dict.fromkeys(REFERENCE_OF[m] for m in self.models if self.args.references == "yes"):
            port = procs.free_port()
            self.bares.append(start_bare(kind, port, self.url, self.args.pool_size, logs))
            self.targets[BARE[kind]] = Target(BARE[kind], f"http://127.0.0.1:{port}", self.bares[-1].pid)
        wanted = self.args.references == "yes" and vars(self.args).get("peers", "yes") == "yes"
        for kind in dict.fromkeys(k for m in self.models if wanted for k in peers.PEERS_OF[m]):
            port = procs.free_port()
            self.peers.append(peers.start_peer(kind, port, self.url, self.args.pool_size, logs,
                                               self.server_cpus))
            name = peers.PEERS[kind][0]
            self.targets[name] = Target(name, f"http://127.0.0.1:{port}", self.peers[-1].pid)
        if self.server_cpus:
            for t in self.targets.values():
                pin_tree(t.pid, self.server_cpus)
        if self.args.budget is not None:
            for t in self.targets.values():
                self.budgets.append(cpu_budget.CpuBudget(self.args.budget).create())
                self.budgets[-1].add([p.pid for p in tree(t.pid)])
                t.usage_file = self.budgets[-1].usage_file

    def stop(self) -> None:
        for server in self.servers:
            procs.stop_server(server)
        for bare in self.bares:
            bare.terminate()
            try:
                bare.wait(10)
            except subprocess.TimeoutExpired:
                bare.kill()
                bare.wait(10)
        for peer in self.peers:
            peers.stop_peer(peer)
        for budget in self.budgets:
            budget.remove()
        self.servers, self.bares, self.peers, self.budgets, self.targets = [], [], [], [], {}
