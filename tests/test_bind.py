"""Servers listen where asked and no wider: 127.0.0.1 by default, LAB_BIND / --bind otherwise."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from lab.stack import procs
from lab.stack.procs import ServerProcess
from servers import settings
from servers.settings import MODELS

pytestmark = pytest.mark.integration


def listening(pid: int) -> set[tuple[str, int]]:
    """The TCP addresses the server's process tree listens on."""
    tree = {pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))}
    return {(c.laddr[0], c.laddr[1]) for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.pid in tree and c.laddr}


def test_by_default_every_server_listens_on_loopback_only(servers: dict[str, ServerProcess]) -> None:
    for model, proc in servers.items():
        assert listening(proc.pid) == {("127.0.0.1", proc.port)}, model


@pytest.mark.parametrize("model", MODELS)
def test_a_server_listens_on_the_one_address_given(model: str, database_url: str, tmp_path: Path) -> None:
    address = "127.0.0.2"  # loopback too, yet not 127.0.0.1: a server bound wider would show it
    port = procs.free_port(address)
    proc = procs.start_server(model, port=port, database_url=database_url, log_dir=tmp_path, host=address,
                              env={"LAB_WORKERS": "2", "LAB_POOL_SIZE": "2"})  # host: LAB_BIND
    try:
        assert listening(proc.pid) == {(address, port)}
        assert procs.port_in_use(port, "127.0.0.1") is False  # nothing on that port of 127.0.0.1
    finally:
        procs.stop_server(proc)


def test_the_flag_wins_over_the_variable_and_the_default_is_loopback() -> None:
    assert settings.load("asyncio", env={}).host == "127.0.0.1"
    assert settings.load("asyncio", env={"LAB_BIND": "127.0.0.2"}).host == "127.0.0.2"
    flagged = settings.load("asyncio", ["--bind", "127.0.0.3"], env={"LAB_BIND": "127.0.0.2"})
    assert flagged.host == "127.0.0.3"
    with pytest.raises(settings.SettingsError, match="LAB_BIND / --bind"):
        settings.load("asyncio", ["--bind", " "], env={})
