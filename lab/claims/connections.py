"""Experiment 3: how many idle keep-alive connections each server holds, and what each costs.

For each server, this (client) process opens connections in steps (each sends one GET /json and
keeps the connection open), and at every step reads the server's RSS, threads and fds and times
a fresh client's /json requests. The ramp stops at the first failure and names its cause. Limits
known in advance (the client's fd limit, the PID space threads share) end a ramp at that limit
rather than letting it break the machine for everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from lab.claims import client, servers
from lab.claims.plan import Plan
from lab.stack import procs

REQUEST = b"GET /json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
IP_BIND_ADDRESS_NO_PORT = 24  # Linux: pick the source port at connect(), per destination
PER_SOURCE_ADDRESS = 20_000  # connections per source address (each has ~28k ephemeral ports)
OPEN_CONCURRENCY = 256
OPEN_TIMEOUT = 5.0
GIVE_UP_AFTER = 50  # failed opens in one step that end it early
PID_RESERVE = 4096  # PIDs the ramp leaves free for the rest of the machine
FD_RESERVE = 512  # fds the client keeps for everything else
MEMORY_FLOOR = 0.25  # the ramp stops before available memory would fall below this share
POLLRDHUP = 0x2000


class Holder:
    """The idle connections this process holds to one server."""

    def __init__(self, host: str, port: int, net: int) -> None:
        self.host, self.port, self.net = host, port, net
        self.socks: list[socket.socket] = []
        self.errors: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def _source(self, index: int) -> str:
        return f"127.{self.net}.{index // PER_SOURCE_ADDRESS}.1"

    async def _one(self, index: int, gate: asyncio.Semaphore, stop: asyncio.Event) -> None:
        if stop.is_set():
            return
        async with gate:
            if stop.is_set():
                return
            loop = asyncio.get_running_loop()
            sock = None
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((self._source(index), 0))
                await asyncio.wait_for(self._request(loop, sock), OPEN_TIMEOUT)
                self.socks.append(sock)
                return
            except TimeoutError:
                kind, text = "timeout", f"no answer within {OPEN_TIMEOUT:.0f}s"
            except OSError as exc:
                kind = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
                text = str(exc)
            except ServerAnswer as exc:
                kind, text = exc.kind, str(exc)
            if sock is not None:
                sock.close()
            self.errors[kind] += 1
            self.examples.setdefault(kind, text)
            if sum(self.errors.values()) >= GIVE_UP_AFTER:
                stop.set()

    async def _request(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        await loop.sock_connect(sock, (self.host, self.port))
        await loop.sock_sendall(sock, REQUEST)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                raise ServerAnswer("closed", "the server closed the connection before answering")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                raise ServerAnswer("closed", "the server closed the connection mid-answer")
            body += chunk
        if status != 200:
            kind = "limit" if b"connection" in body.lower() and status == 503 else f"http_{status}"
            raise ServerAnswer(kind, f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")

    def open(self, count: int) -> float:
        """Open `count` more connections; seconds it took. Failures land in self.errors."""
        start = time.monotonic()

        async def main() -> None:
            gate, stop = asyncio.Semaphore(OPEN_CONCURRENCY), asyncio.Event()
            first = len(self.socks) + sum(self.errors.values())
            await asyncio.gather(*(self._one(first + i, gate, stop) for i in range(count)))

        asyncio.run(main())
        return time.monotonic() - start

    def dropped(self) -> int:
        """Held connections the server has closed (readable, hung up or in error)."""
        poller = select.poll()
        for s in self.socks:
            poller.register(s, select.POLLIN | POLLRDHUP | select.POLLERR | select.POLLHUP)
        return len(poller.poll(0))

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks.clear()


class ServerAnswer(Exception):
    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind


def pid_room() -> tuple[int, str]:
    """Threads this machine can still start while leaving PID_RESERVE free, and why that many."""
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    threads_max = int(Path("/proc/sys/kernel/threads-max").read_text())
    maps = int(Path("/proc/sys/vm/max_map_count").read_text())
    in_use = sum(int(d) > 0 for d in os.listdir("/proc") if d.isdigit())  # processes...
    with contextlib.suppress(OSError, ValueError):  # ...but threads take PIDs too
        in_use = int(Path("/proc/loadavg").read_text().split()[3].split("/")[1])
    limits = [
        (
            pid_max - in_use - PID_RESERVE,
            f"kernel.pid_max={pid_max} (each thread takes a PID; "
            f"{in_use} in use, {PID_RESERVE} left free for the machine)",
        ),
        (threads_max - in_use - PID_RESERVE, f"kernel.threads-max={threads_max}"),
        (maps // 2 - 1000, f"vm.max_map_count={maps} (a thread stack takes two mappings)"),
    ]
    return min(limits)


def _diagnose(holder: Holder, proc: Any, use: dict[str, Any], probe: dict[str, Any], dropped: int,
              cap: int) -> str:
    """Name what stopped the ramp, from the client's errors, the server's state and its log. `cap`: the
    server's LAB_MAX_CONNECTIONS per process."""
    log = proc.log_tail(200).lower()
    if not proc.alive():
        code = proc.popen.returncode
        if code == -9 or "memoryerror" in log or "cannot allocate" in log:
            return f"memory: the server died (exit {code}; killed or out of memory)"
        return f"the server died (exit {code}); see {proc.log_path}"
    errs = holder.errors
    if errs.get("EMFILE") or errs.get("ENFILE"):
        return "fd limit of the client (this process): raise `ulimit -n`"
    if errs.get("limit"):
        return "max_connections setting: the server answered 503 (raise LAB_MAX_CONNECTIONS)"
    if errs and len(holder.socks) + dropped >= cap:
        # At its cap a server closes one connection to admit another (a newcomer still sending its
        # request is closed with 408 first): the ramp cannot grow past the cap.
        return (f"max_connections setting: {len(holder.socks):,} held at the server's cap of {cap:,} "
                "per process; past it the server closes a connection for each new one (raise "
                "LAB_MAX_CONNECTIONS)")
    if "too many open files" in log or (
        use["fd_limit"] and use["fds"] >= use["fd_limit"] * use["processes"] - 50
    ):
        return f"fd limit of the server ({use['fd_limit']} per process): raise `ulimit -n` before starting it"
    if "cannot start a thread" in log or "can't start new thread" in log:
        return "thread limit: the OS refused another thread"
    if errs.get("EADDRNOTAVAIL"):
        return "ephemeral ports of the client ran out"
    if errs:
        kinds = ", ".join(f"{k} x{n}" for k, n in errs.most_common(3))
        example = next(iter(holder.examples.values()))
        return f"connections failed ({kinds}; e.g. {example})"
    if dropped:
        return f"the server closed {dropped} idle connections"
    return (
        f"latency: a fresh client's /json took over 1 s or failed "
        f"(p99 {probe.get('p99_ms')}, errors {probe.get('errors')})"
    )


def ramp(
    model: str,
    index: int,
    plan: Plan,
    database_url: str,
    log_dir: Path,
    client_room: int,
    fd_cause: str,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """One server's ramp: the steps measured and what stopped it."""
    env = {"LAB_MAX_CONNECTIONS": str(plan.server_max_connections)}
    if model == "multiproc":
        env["LAB_WORKERS"] = "2"
    caps = [(client_room, fd_cause)]
    if model == "threaded":
        caps.append(pid_room())
    cap, cap_cause = min(caps)
    steps_wanted = [s for s in plan.steps if s <= cap]
    if cap < plan.steps[-1] and (not steps_wanted or steps_wanted[-1] < cap):
        steps_wanted.append(cap)  # "further where allowed": up to the limit itself
    out: dict[str, Any] = {
        "server": model,
        "steps": [],
        "held": 0,
        "stopped_by": "",
        "completed": False,
        "server_max_connections": plan.server_max_connections,
    }
    with servers.running(model, database_url, log_dir, env) as proc:
        holder = Holder(proc.host, proc.port, index + 1)
        started = time.monotonic()
        try:
            client.timed_gets(proc.url, "/json", 20, 2.0, 5.0)  # warm up
            base = servers.usage(proc.pid)
            out["base"] = base
            for target in steps_wanted:
                if time.monotonic() - started > plan.ramp_seconds:
                    out["stopped_by"] = f"time budget: the ramp's {plan.ramp_seconds:.0f} s were used up"
                    break
                last = out["steps"][-1] if out["steps"] else None
                if last and last["rss_per_conn"]:
                    need = (target - len(holder.socks)) * last["rss_per_conn"] * 2  # server and kernel
                    vm = psutil.virtual_memory()
                    if vm.available - need < vm.total * MEMORY_FLOOR:
                        out["stopped_by"] = (
                            f"memory: {target:,} connections would leave under "
                            f"{MEMORY_FLOOR:.0%} of memory free (not attempted)"
                        )
                        break
                seconds = holder.open(target - len(holder.socks))
                time.sleep(0.3)
                dropped = holder.dropped()
                use = servers.usage(proc.pid)
                probe = client.timed_gets(proc.url, "/json", plan.probe_requests, 1.0, 10.0)
                held = len(holder.socks) - dropped
                per = (use["rss"] - base["rss"]) / held if held else None
                ok = not holder.errors and not dropped and probe["ok"] and proc.alive()
                step = {
                    "target": target,
                    "held": held,
                    "open_seconds": seconds,
                    "rss": use["rss"],
                    "rss_per_conn": per,
                    "threads": use["threads"],
                    "fds": use["fds"],
                    "fd_limit": use["fd_limit"],
                    "probe": probe,
                    "ok": ok,
                    "errors": dict(holder.errors),
                }
                out["steps"].append(step)
                say(
                    f"connections {model} {target:,}: held {held:,}, RSS/conn "
                    f"{(per or 0) / 1024:.1f} KiB, threads {use['threads']}, fds {use['fds']}, "
                    f"fresh /json p99 {probe['p99_ms'] or 0:.1f} ms {'ok' if ok else 'FAILED'}"
                )
                if not ok:
                    out["stopped_by"] = _diagnose(holder, proc, use, probe, dropped,
                                                  plan.server_max_connections)
                    break
                out["held"] = held
            else:
                if steps_wanted and steps_wanted[-1] == cap and cap < plan.steps[-1]:
                    out["stopped_by"] = f"{cap_cause}: the ramp stops there (not a failure of the server)"
                    out["limit_is_cap"] = True
                else:
                    out["completed"] = True
                    out["stopped_by"] = f"nothing: all {plan.steps[-1]:,} connections of the ramp held"
            if not steps_wanted:
                out["stopped_by"] = f"{cap_cause}: no step of the ramp fits"
        finally:
            out["ramp_seconds"] = time.monotonic() - started
            # Stop the server first: its side closes, so the client's ports are not left in TIME_WAIT.
            procs.stop_server(proc, timeout=15)
            holder.close()
    return out


def run(plan: Plan, database_url: str, log_dir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """The ramp for each server in turn, with this process's fd limit raised first."""
    soft_before = servers.raise_fd_limit(0)[0]
    soft, hard = servers.raise_fd_limit(plan.steps[-1] + 4096)
    in_use = len(os.listdir("/proc/self/fd"))
    room = soft - in_use - FD_RESERVE
    say(
        f"connections: fd limit {soft_before:,} raised to {soft:,} (hard {hard:,}) "
        "for the client and the servers"
    )
    fd_cause = f"fd limit: RLIMIT_NOFILE {soft:,} of the client and of the servers it starts" + (
        ""
        if soft >= plan.steps[-1] + 4096
        else f" (hard limit {hard:,}; raising it needs root with CAP_SYS_RESOURCE, or a higher "
        "`ulimit -Hn` before `make claims`)"
    )
    results = [
        ramp(model, i, plan, database_url, log_dir / f"ramp-{model}", room, fd_cause, say)
        for i, model in enumerate(plan.servers)
    ]
    return {
        "servers": results,
        "fd_limit_before": soft_before,
        "fd_limit": soft,
        "fd_hard_limit": hard,
        "steps": list(plan.steps),
        "server_max_connections": plan.server_max_connections,
    }
