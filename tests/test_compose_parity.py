"""docker-compose.yml against the native launcher: the two paths must not drift apart.

Runs everywhere (no Docker needed): it reads the Compose file and compares it with what
lab/stack/procs.py and lab/stack/stack.py do natively.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import knobs
from lab.stack import procs, stack
from servers import settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def test_every_server_is_a_service(compose: dict[str, Any]) -> None:
    assert set(settings.MODELS) <= set(compose["services"]), "a server is missing from docker-compose.yml"
    assert "postgres" in compose["services"]


@pytest.mark.parametrize("model", settings.MODELS)
def test_same_command(compose: dict[str, Any], model: str) -> None:
    service = compose["services"][model]
    native = procs.server_argv(model, settings.DEFAULT_PORTS[model])
    command = list(service["command"])
    # In a container the server must listen on all of the container's interfaces; the host side
    # is still published on 127.0.0.1 only (checked below). Nothing else may differ.
    assert command[command.index("--bind") + 1] == "0.0.0.0"
    del command[command.index("--bind") : command.index("--bind") + 2]
    assert command == ["python", *native[1:]]


@pytest.mark.parametrize("model", settings.MODELS)
def test_same_port_published_on_loopback_only(compose: dict[str, Any], model: str) -> None:
    (mapping,) = compose["services"][model]["ports"]
    port = settings.DEFAULT_PORTS[model]
    assert mapping == f"127.0.0.1:${{LAB_{model.upper()}_PORT:-{port}}}:{port}"
    assert stack.port_of(model, {}) == port


def test_every_published_port_is_loopback(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for mapping in service.get("ports", []):
            assert str(mapping).startswith("127.0.0.1:"), f"{name} publishes {mapping} beyond loopback"


@pytest.mark.parametrize("model", settings.MODELS)
def test_same_environment_names(compose: dict[str, Any], model: str) -> None:
    env = compose["services"][model]["environment"]
    assert set(env) == {"LAB_DATABASE_URL", *knobs.SERVER_KNOBS}
    # each knob passes the user's value through, defaulting to the server's own default
    for name in knobs.SERVER_KNOBS:
        assert re.fullmatch(rf"\$\{{{name}:-[^}}]+\}}", str(env[name])), f"{name} is not passed through"


def test_stack_passes_every_server_knob() -> None:
    """Every LAB_* setting of the servers is forwarded by `make up` (but those it sets itself)."""
    own = {"LAB_BIND", "LAB_PORT", "LAB_DATABASE_URL", "LAB_APP_NAME"}  # per server, set by the lab
    own |= {"LAB_ALLOW_BLOCKING", "LAB_EXTRA_CPU_US"}  # lab only: make claims / make selfcheck set them
    own.add("LAB_ABLATE")  # lab only: make bench --ablation sets it on the servers it starts
    assert set(knobs.SERVER_KNOBS) == set(settings.env_vars()) - own


@pytest.mark.parametrize("model", settings.MODELS)
def test_same_health_check(compose: dict[str, Any], model: str) -> None:
    test = " ".join(compose["services"][model]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{settings.DEFAULT_PORTS[model]}/ready" in test
    assert procs.HEALTH_PATH == "/ready"


def test_compose_defaults_match_settings(compose: dict[str, Any]) -> None:
    env = compose["services"]["asyncio"]["environment"]
    defaults = settings.Settings(model="asyncio")
    assert env["LAB_POOL_SIZE"] == f"${{LAB_POOL_SIZE:-{defaults.pool_size}}}"
    assert env["LAB_MAX_INFLIGHT"] == f"${{LAB_MAX_INFLIGHT:-{defaults.max_inflight}}}"
    assert env["LAB_ACQUIRE_TIMEOUT"] == f"${{LAB_ACQUIRE_TIMEOUT:-{defaults.acquire_timeout}}}"
    assert env["LAB_MAX_CONNECTIONS"] == f"${{LAB_MAX_CONNECTIONS:-{defaults.max_connections}}}"
    pg = compose["services"]["postgres"]
    assert "max_connections=${LAB_PG_MAX_CONNECTIONS:-300}" in " ".join(pg["command"])
