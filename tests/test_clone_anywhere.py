"""A fresh clone under a mode-700 home (like /root), as root: `make up`, `make down`, `make clean` work.

PostgreSQL refuses root and runs as serverlab-pg, who cannot enter such a clone; the lab must put
its data and pgserver's binaries where that user can reach them, say so, and remove them on clean.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.stack import pg_config, procs
from servers import settings

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]


def make(clone: Path, target: str, env: dict[str, str],
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", target], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture
def private_clone() -> Iterator[tuple[Path, dict[str, str]]]:
    private = Path(tempfile.mkdtemp(prefix="serverlab-home-"))  # mode 700, owned by root, like /root
    assert private.stat().st_mode & 0o777 == 0o700
    clone = private / "serverlab"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    # This test's virtualenv, copied in (no network, seconds): pgserver's binaries then live under
    # the mode-700 directory too, as after `make venv` in such a clone.
    subprocess.run(["cp", "-a", str(REPO / ".venv"), str(clone / ".venv")], check=True, timeout=300)
    (clone / ".venv" / ".installed-stamp").touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAB_", "PYTEST"))}
    env.update({"LAB_BACKEND": "native", "LAB_PG_PORT": str(procs.free_port()), "LAB_SERVERS": "asyncio"})
    env.update({f"LAB_{m.upper()}_PORT": str(procs.free_port()) for m in settings.MODELS})
    try:
        yield clone, env
    finally:
        make(clone, "down", env)
        make(clone, "clean", env)
        shutil.rmtree(private, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user (serverlab-pg)")
def test_make_up_in_a_clone_under_a_mode_700_home(private_clone: tuple[Path, dict[str, str]]) -> None:
    clone, env = private_clone
    cfg = pg_config.PgConfig.from_env({**env, "LAB_STATE_DIR": str(clone / ".lab")})
    home = cfg.home_dir
    assert home.parent == pg_config.HOMES and clone not in home.parents

    up = make(clone, "up", env)
    assert up.returncode == 0, up.stdout + up.stderr
    said = up.stdout + up.stderr
    assert f"are in {home}" in said and f"cannot enter {clone.parent}" in said
    assert "copying PostgreSQL's binaries" in said
    assert (cfg.data_dir / "PG_VERSION").exists() and cfg.data_dir.stat().st_uid != 0
    port = int(env["LAB_ASYNCIO_PORT"])
    assert procs.get(f"http://127.0.0.1:{port}/db")[0] == 200  # the server reads the database

    down = make(clone, "down", env)
    assert down.returncode == 0, down.stdout + down.stderr
    clean = make(clone, "clean", env)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f"removed {home}" in clean.stdout
    assert not home.exists() and not (clone / ".lab").exists()
