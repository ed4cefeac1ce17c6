"""Shared fixtures: a provisioned PostgreSQL and the four servers as real processes.

- `database_url` (session): `lab.stack.database.provision("serverlab_test")`; a failure ends the session.
- `servers` (session): {model: ServerProcess}, all four started once on free ports.
- `server`: each of the four in turn (test ids are the model names).
- `db`: an autocommit psycopg2 connection to `database_url`.
- `server_factory`: start a server with special settings in a test; stopped at its end.
  `start_server_for_test(...)` is the same as a context manager.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
from collections.abc import Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from lab.stack import database, procs
from lab.stack.procs import ServerProcess
from servers import settings

MODELS = settings.MODELS
REPO = Path(__file__).resolve().parents[1]
COMPOSE_DATABASE_URL = "postgresql://serverlab@127.0.0.1:54320/serverlab"

# Small but sufficient: the pool-size sweeps belong to the lab, not the tests.
BASE_ENV = {"LAB_POOL_SIZE": "4", "LAB_ACQUIRE_TIMEOUT": "2"}

# Server knobs a person's shell may carry (LAB_PORT, LAB_METRICS=0, ...) would make the servers under
# test differ from what the tests expect: drop them. LAB_DATABASE_URL and LAB_LOG_LEVEL stay.
for _var, *_ in settings._KNOBS.values():
    if _var not in {"LAB_DATABASE_URL", "LAB_LOG_LEVEL"}:
        os.environ.pop(_var, None)


def server_env(model: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test settings for `model`, overridden by `env`."""
    extra = {"LAB_WORKERS": "2"} if model == "multiproc" else {}
    return {**BASE_ENV, **extra, **(env or {})}


def start_on_free_port(model: str, database_url: str, log_dir: Path, env: Mapping[str, str] | None = None,
                       args: Sequence[str] = (), health_timeout: float = 30.0) -> ServerProcess:
    """procs.start_server with the test settings on a free port; another port if that one gets taken."""
    for attempt in range(3):
        try:
            return procs.start_server(model, port=procs.free_port(), database_url=database_url,
                                      log_dir=log_dir, env=server_env(model, env), args=args,
                                      health_timeout=health_timeout)
        except procs.StartError as exc:  # lost a race for the port: someone bound it meanwhile
            if attempt == 2 or "already in use" not in str(exc).lower():
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def start_server_for_test(
    model: str,
    database_url: str,
    tmp_path: Path,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    health_timeout: float = 30.0,
) -> Iterator[ServerProcess]:
    """A server with special settings (e.g. env={"LAB_POOL_SIZE": "1"}), always stopped afterwards."""
    proc = start_on_free_port(model, database_url, tmp_path, env, args, health_timeout)
    try:
        yield proc
    finally:
        procs.stop_server(proc)


class ServerFactory:
    """`server_factory(model, env=..., args=...)` -> a started ServerProcess, stopped at test end."""

    def __init__(self, database_url: str, log_root: Path) -> None:
        self.database_url = database_url
        self.log_root = log_root
        self.started: list[ServerProcess] = []
        self._count = itertools.count(1)

    def __call__(self, model: str, *, env: Mapping[str, str] | None = None, args: Sequence[str] = (),
                 health_timeout: float = 30.0) -> ServerProcess:
        log_dir = self.log_root / f"{model}-{next(self._count)}"  # one log per server started
        proc = start_on_free_port(model, self.database_url, log_dir, env, args, health_timeout)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            procs.stop_server(proc)


def debian_tool(path: Path, package: str) -> Path:
    """`path`, installing Debian's `package` first when it is missing (as root, as CI is); a clear
    failure, never a skip, when that cannot be done."""
    if path.exists():
        return path
    if os.geteuid() != 0:
        pytest.fail(f"{path} is missing and this is not root: install it first "
                    f"(sudo apt-get install -y {package})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", package]
    done = subprocess.run(install, capture_output=True, text=True, timeout=1200, env=env)
    if done.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update"], capture_output=True, text=True, timeout=600, env=env)
        done = subprocess.run(install, capture_output=True, text=True, timeout=1200, env=env)
    if done.returncode != 0 or not path.exists():
        pytest.fail(f"apt-get install -y {package} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--compose", action="store_true",
                     help="test the Docker Compose stack (docker-compose.yml) instead of native servers")


def compose_mode(config: pytest.Config) -> bool:
    return bool(config.getoption("--compose"))


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(REPO / "docker-compose.yml")


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return "serverlab-test"


class ComposeServer(ServerProcess):
    """A server of the Compose stack: reached over its published port; its pid is the container's."""

    def alive(self) -> bool:
        return True

    def log_tail(self, lines: int = procs.LOG_TAIL_LINES) -> str:
        return f"(see `docker compose logs {self.model}`)"


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if compose_mode(request.config):
        services = request.getfixturevalue("docker_services")  # pytest-docker: compose up, then down

        def ready() -> bool:
            try:
                database.connect(COMPOSE_DATABASE_URL).close()
                return True
            except Exception:
                return False

        services.wait_until_responsive(check=ready, timeout=180.0, pause=1.0)
        yield COMPOSE_DATABASE_URL
        return
    # The embedded server stays up after the session (`make test` stops it if it started it).
    try:
        yield database.provision("serverlab_test")
    except Exception as exc:  # no database, no tests: say why once, loudly, and stop
        pytest.exit(f"PostgreSQL provisioning failed, so the suite cannot run:\n{exc}", returncode=1)


@pytest.fixture(scope="session")
def servers(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict[str, ServerProcess]]:
    if compose_mode(request.config):
        yield _compose_servers(request)
        return
    log_dir = tmp_path_factory.mktemp("server-logs")

    def start(model: str) -> ServerProcess:
        return start_on_free_port(model, database_url, log_dir)

    started: dict[str, ServerProcess] = {}
    errors: list[str] = []
    with ThreadPoolExecutor(len(MODELS)) as pool:  # the four start in parallel
        for model, future in [(m, pool.submit(start, m)) for m in MODELS]:
            try:
                started[model] = future.result()
            except Exception as exc:
                errors.append(f"--- {model}: {exc}")
    if errors:
        for proc in started.values():
            procs.stop_server(proc)
        pytest.fail("server(s) did not start:\n" + "\n".join(errors), pytrace=False)
    try:
        yield started
    finally:
        died = [p for p in started.values() if not p.alive()]
        for proc in started.values():
            procs.stop_server(proc)
        if died:
            pytest.fail("server(s) died during the session:\n" + "\n".join(
                f"--- {p.model} (exit {p.popen.returncode}), {p.log_path}:\n{p.log_tail()}" for p in died
            ), pytrace=False)


def _compose_servers(request: pytest.FixtureRequest) -> dict[str, ServerProcess]:
    services = request.getfixturevalue("docker_services")
    found: dict[str, ServerProcess] = {}
    for model in MODELS:
        port = settings.DEFAULT_PORTS[model]
        url = f"http://127.0.0.1:{port}"

        def healthy(url: str = url) -> bool:
            try:
                return procs.get(url + procs.HEALTH_PATH)[0] == 200
            except OSError:
                return False

        services.wait_until_responsive(check=healthy, timeout=180.0, pause=1.0)
        found[model] = ComposeServer(model, "127.0.0.1", port, 0, Path("docker"), None)  # type: ignore[arg-type]
    return found


@pytest.fixture(params=MODELS, ids=list(MODELS))
def server(request: pytest.FixtureRequest, servers: dict[str, ServerProcess]) -> ServerProcess:
    proc = servers[request.param]
    if not proc.alive():
        pytest.fail(f"{proc.model} server died (exit {proc.popen.returncode}); {proc.log_path}:\n"
                    f"{proc.log_tail()}", pytrace=False)
    return proc


@pytest.fixture
def db(database_url: str) -> Iterator[Any]:
    conn = database.connect(database_url)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def server_factory(database_url: str, tmp_path: Path) -> Iterator[ServerFactory]:
    factory = ServerFactory(database_url, tmp_path / "server-logs")
    try:
        yield factory
    finally:
        factory.stop_all()


def _servers_of(item: pytest.Item) -> list[ServerProcess]:
    found: list[ServerProcess] = []
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, ServerProcess):
            found.append(value)
        elif isinstance(value, ServerFactory):
            found.extend(value.started)
        elif isinstance(value, dict):
            found.extend(v for v in value.values() if isinstance(v, ServerProcess))
    return list({id(p): p for p in found}.values())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that used servers shows the tail of their logs."""
    report = yield
    if report.failed and report.when in ("setup", "call"):
        for proc in _servers_of(item):
            report.sections.append((f"{proc.model} server log {proc.log_path} (last lines)", proc.log_tail()))
    return report


TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test file names its tier (module-level pytestmark): `make test-fast` runs only `unit`."""
    wrong = sorted({item.nodeid.split("::")[0] for item in items
                    if sum(1 for tier in TIERS if item.get_closest_marker(tier)) != 1})
    if wrong:
        raise pytest.UsageError(f"tests without exactly one tier marker ({', '.join(TIERS)}): "
                                f"{', '.join(wrong)}; add `pytestmark = pytest.mark.<tier>` to the file")
