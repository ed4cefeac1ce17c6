"""Start, health-check and stop a server process (`python -m servers <model>`).

HTTP here is the standard library only (http.client, which also ignores proxy variables), so the
lab never needs `requests` at run time.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from lab.cpus import running_on
from lab.knobs import LAB_ONLY
from servers.settings import redact

REPO = Path(__file__).resolve().parents[2]
LOG_TAIL_LINES = 30
HEALTH_PATH = "/ready"  # a server is up once its database answers (/health: only alive)


class StartError(RuntimeError):
    """A server did not come up; the message names the log and quotes its tail."""


class PortInUseError(StartError):
    """The port was taken before the server started (nothing was started)."""


@dataclass
class ServerProcess:
    model: str
    host: str
    port: int
    pid: int
    log_path: Path
    popen: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now, below the kernel's ephemeral range when it can.

    Ports from bind(0) come from the ephemeral range, which outgoing connections (a server's
    database pool, say) also draw from: one of them could take the port before the server binds it.
    """
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(50):
        port = rng.randrange(10_000, low) if low > 10_100 else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            found: int = sock.getsockname()[1]
            return found
    raise OSError(f"no free TCP port found on {host}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0  # unknown (not Linux): let the kernel choose


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is free
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def listener(port: int) -> bool:
    """Whether some socket LISTENs on a local TCP port (best effort: False when it cannot be told)."""
    try:
        return any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
                   for c in psutil.net_connections(kind="tcp"))
    except (psutil.Error, OSError):
        return False


def wait_for_port(port: int, timeout: float = 65.0, say: Callable[[str], None] = print) -> bool:
    """Wait until a port no server listens on is free: a fixed port inside the kernel's ephemeral range
    can be held by a client connection (pip's, say) that is closing, for up to TIME_WAIT's 60 s. True
    when the port is free; False at once when something listens on it, or after `timeout`."""
    if not port_in_use(port):
        return True
    if listener(port):
        return False
    say(f"port {port} is held by a closing connection (no server listens on it); waiting for the kernel "
        f"to release it, at most {timeout:.0f} s ...")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if not port_in_use(port):
            return True
        if listener(port):
            return False
    return False


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET an http:// URL; (status, body). Raises OSError when nothing answers."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        resp = conn.getresponse()
        return resp.status, resp.read()
    except http.client.HTTPException as exc:  # garbled or cut-off answer: not healthy yet
        raise OSError(f"bad HTTP answer: {exc!r}") from exc
    finally:
        conn.close()


def _poll_health(url: str, timeout: float, gone: Callable[[], str | None]) -> None:
    """Poll GET url/health until 200; raises StartError on timeout or when gone() says why."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    for attempt in range(int(timeout / 0.02) + 2):  # bounded: sleeps are 20 ms or longer
        why = gone()
        if why:
            raise StartError(why)
        try:
            status, body = get(url + HEALTH_PATH, timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            if status == 200:
                return
            last = f"GET /health answered {status} {body[:200].decode('utf-8', 'replace')}"
        except OSError as exc:
            last = f"GET /health failed: {exc}"
        if time.monotonic() >= deadline:
            break
        time.sleep(min(0.25, 0.02 * 1.5 ** min(attempt, 10)))  # quick at first, then gentler on the server
    raise StartError(f"{url} was not healthy within {timeout:.0f}s ({last})")


def wait_healthy(url: str, timeout: float = 30.0) -> None:
    """Wait until GET url/health answers 200; raises StartError after `timeout` seconds."""
    _poll_health(url, timeout, lambda: None)


def server_argv(model: str, port: int, args: Sequence[str] = ()) -> list[str]:
    """The command line of a server (docker-compose.yml runs the same, with `python`)."""
    return [sys.executable, "-m", "servers", model, "--port", str(port), *args]


def start_server(
    model: str,
    *,
    port: int,
    database_url: str,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    health_timeout: float = 30.0,
    host: str = "127.0.0.1",
    wrapper: Sequence[str] = (),
    cpus: Sequence[int] | None = None,
    log_name: str = "",
    code: str | Path | None = None,
) -> ServerProcess:
    """Start `python -m servers <model>` on host:port and wait until it is healthy.

    With `cpus`, the server starts with them as its affinity, so that it sizes itself for the CPUs it
    will be pinned to (multiproc starts one worker per usable CPU); pinning its tree stays the caller's.
    With `code`, the root of another checkout, its servers/ package runs (started there, first on the path).
    stdout and stderr go to log_dir/<model>.log (or log_dir/<log_name>). On any failure the process is
    stopped and StartError says what happened, names the log and quotes its last lines.
    """
    if port_in_use(port, host):
        raise PortInUseError(
            f"cannot start {model}: port {port} on {host} is already in use{port_user(port)}; "
            f"pick another port (--port / LAB_PORT) or stop the program holding it"
        )
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / (log_name or f"{model}.log")
    inherited = {k: v for k, v in os.environ.items() if k not in LAB_ONLY}  # only when passed in `env`
    child_env = {**inherited, **(env or {}), "LAB_DATABASE_URL": database_url, "LAB_BIND": host,
                 "PYTHONUNBUFFERED": "1"}
    if code is not None:
        child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), child_env.get("PYTHONPATH")]))
    cmd = [*wrapper, *server_argv(model, port, args)]  # wrapper: e.g. valgrind for make bench
    with log_path.open("wb") as log:
        shown = " ".join(redact(a) if a.startswith("postgres") else a for a in cmd)
        log.write(f"$ {f'cd {code} && ' if code else ''}{shown}\n".encode())
        log.flush()
        with running_on(cpus):
            popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=child_env, cwd=code or REPO, start_new_session=True)
    proc = ServerProcess(model, host, port, popen.pid, log_path, popen)

    def gone() -> str | None:
        code = popen.poll()
        if code is None:
            return None
        return f"{model} server exited with code {code} while starting"

    try:
        _poll_health(proc.url, health_timeout, gone)
    except StartError as exc:
        stop_server(proc)
        raise StartError(f"{exc}; read {log_path}, its last lines:\n{log_tail(log_path)}") from None
    except BaseException:  # Ctrl-C and the like: leave nothing behind
        stop_server(proc)
        raise
    return proc


def port_user(port: int) -> str:
    """' by pid N (name)' for the process listening on a local TCP port, best effort; else ''."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return f" by pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except (psutil.Error, OSError):
        pass
    return ""


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _stop_tree(pid: int, model: str, timeout: float, wait: Callable[[float], bool], group: bool) -> None:
    """SIGTERM a server (its process group when `group`), SIGKILL what is left after `timeout`.

    `wait(seconds)` waits for the leader and says whether it has ended.
    """
    deadline = time.monotonic() + timeout
    children = _descendants(pid)

    def send(sig: signal.Signals, targets: list[psutil.Process]) -> None:
        if group:
            _signal_group(pid, sig)
        for target in targets:  # outside the group or not: signal them directly too
            with contextlib.suppress(psutil.Error):
                target.send_signal(sig)

    leader = [] if group else [p for p in [_process(pid)] if p is not None]
    send(signal.SIGTERM, leader)
    if not wait(timeout):
        send(signal.SIGKILL, leader)
        wait(10.0)
    # Children the parent did not end in its shutdown: give them the rest of the time, then kill.
    left = _wait_gone(children, deadline - time.monotonic())
    send(signal.SIGKILL, left)
    left = _wait_gone(left, 5.0)
    if left:
        raise RuntimeError(f"{model} server: processes {[c.pid for c in left]} survived SIGKILL")


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def stop_server(proc: ServerProcess, timeout: float = 10.0) -> int:
    """SIGTERM the server's process group, SIGKILL what is left after `timeout`; the exit code.

    Afterwards no process of the server is left: not the parent, not any child (checked by pid).
    Safe to call twice, or after the server has exited.
    """

    def wait(seconds: float) -> bool:
        try:
            proc.popen.wait(seconds)
            return True
        except subprocess.TimeoutExpired:
            return False

    # start_new_session made the server the leader of its own process group
    _stop_tree(proc.pid, proc.model, timeout, wait, group=True)
    code = proc.popen.returncode
    assert code is not None
    return code


def stop_pid(pid: int, model: str = "server", timeout: float = 10.0) -> int | None:
    """Stop a server started by another process (e.g. an earlier `make up`), like stop_server.

    The exit code when the server is our child, else None (only a parent can learn it).
    """
    leader = _process(pid)
    if leader is None:
        return None
    try:
        group = os.getpgid(pid) == pid
    except ProcessLookupError:
        return None
    code: int | None = None

    def wait(seconds: float) -> bool:
        nonlocal code
        if _wait_gone([leader], seconds):  # polls: a zombie nobody reaps has ended too
            return False
        with contextlib.suppress(psutil.Error):
            code = leader.wait(0)  # reaps it and tells the code if it is our child
        return True

    _stop_tree(pid, model, timeout, wait, group=group)
    return code


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to `timeout` seconds for procs to end (zombies count as ended); those left."""
    left = [p for p in procs if _alive(p)]
    deadline = time.monotonic() + timeout
    for _ in range(int(max(timeout, 0) / 0.05) + 1):
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
        left = [p for p in left if _alive(p)]
    return left
