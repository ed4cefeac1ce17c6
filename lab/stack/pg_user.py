"""Running PostgreSQL as an unprivileged system user when the lab runs as root (PostgreSQL refuses root)."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lab.stack.pg_config import COPY, HOMES, PG_SYSTEM_USER, PgConfig, PostgresError, say


@dataclass(frozen=True)
class RunAs:
    uid: int
    gid: int
    name: str

    def kwargs(self) -> dict[str, Any]:
        if self.uid == os.geteuid():
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def run_as() -> RunAs:
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return RunAs(entry.pw_uid, entry.pw_gid, entry.pw_name)
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        say(f"running as root: creating system user {PG_SYSTEM_USER} for PostgreSQL (it refuses root)")
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        done = subprocess.run(
            [useradd, "--system", "--no-create-home", "--user-group", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
            capture_output=True, text=True, timeout=30, check=False,
        )
        try:  # another process may have created it meanwhile
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            raise PostgresError(
                f"PostgreSQL refuses to run as root and creating the user {PG_SYSTEM_USER} failed: "
                f"{done.stderr.strip() or done.returncode}. Run as a normal user, or create it: "
                f"useradd --system --no-create-home {PG_SYSTEM_USER}"
            ) from None
    return RunAs(entry.pw_uid, entry.pw_gid, entry.pw_name)


def can_search(path: Path, who: RunAs) -> bool:
    """Whether `who` may enter directory `path` (mode bits; root always may)."""
    if who.uid == 0:
        return True
    st = path.stat()
    if st.st_uid == who.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == who.gid or st.st_gid in os.getgrouplist(who.name, who.gid):
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def reachable(path: Path, who: RunAs) -> bool:
    return all(can_search(p, who) for p in [*reversed(path.parents), path] if p.exists())


def with_binaries(cfg: PgConfig, who: RunAs) -> PgConfig:
    """cfg, with pgserver's binaries copied into the home when `who` cannot reach them where pip put them."""
    install = cfg.bin_dir.parent
    if who.uid == os.geteuid() or reachable(cfg.bin_dir, who) or install.parent.name != "pgserver":
        return cfg  # reachable, or not pgserver's (then check_access says what to do)
    copy = cfg.home_dir / COPY
    bin_dir = copy / "pgserver" / "pginstall" / "bin"
    postgres = (cfg.bin_dir / "postgres").stat()
    source = f"{install} {postgres.st_size} {postgres.st_mtime_ns}\n"
    stamp = copy / "source"
    if stamp.exists() and stamp.read_text() == source:
        return replace(cfg, bin_dir=bin_dir)
    say(f"copying PostgreSQL's binaries from {install} to {copy}, where {who.name} can reach them")
    tmp = copy.with_name(COPY + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for part in ("bin", "lib", "share"):  # not include/: headers are for building extensions
        shutil.copytree(install / part, tmp / "pgserver" / "pginstall" / part, symlinks=True)
    libs = install.parent.parent / "pgserver.libs"  # shared libraries the binaries find via $ORIGIN
    if libs.is_dir():
        shutil.copytree(libs, tmp / "pgserver.libs", symlinks=True)
    for root, dirs, files in os.walk(tmp):  # readable (and where executable, runnable) by anyone
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, mode | (0o755 if mode & stat.S_IXUSR else 0o644))
    tmp.chmod(0o755)
    (tmp / "source").write_text(source)
    shutil.rmtree(copy, ignore_errors=True)
    tmp.rename(copy)
    return replace(cfg, bin_dir=bin_dir)


def check_access(cfg: PgConfig, who: RunAs) -> None:
    for parent in reversed(cfg.data_dir.parents):
        if parent.exists() and not can_search(parent, who):
            raise PostgresError(
                f"PostgreSQL runs as user {who.name} (it refuses root), and {who.name} cannot enter "
                f"{parent} (mode {stat.filemode(parent.stat().st_mode)}), a parent of the data dir "
                f"{cfg.data_dir}. Set LAB_PG_HOME (or LAB_PG_DATA) to a directory outside it "
                f"(e.g. LAB_PG_HOME=/var/lib/serverlab/mine) or `chmod o+x {parent}`."
            )
    for path in [*reversed(cfg.bin_dir.parents), cfg.bin_dir]:
        if not can_search(path, who):
            raise PostgresError(
                f"PostgreSQL runs as user {who.name} (it refuses root), and {who.name} cannot enter "
                f"{path}, which holds the PostgreSQL binaries {cfg.bin_dir}. `chmod o+x {path}`, "
                f"or set LAB_PG_BIN to a bin dir it can read (e.g. /usr/lib/postgresql/15/bin)."
            )


def make_home(cfg: PgConfig, who: RunAs) -> None:
    if cfg.home_dir.parent == HOMES and not HOMES.exists():
        HOMES.mkdir(parents=True, exist_ok=True)
        HOMES.chmod(0o755)  # whatever the umask: serverlab-pg must get in
    if not cfg.data_dir.parent.exists():
        cfg.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if who.uid != os.geteuid():
            cfg.data_dir.parent.chmod(0o755)


def prepare_dirs(cfg: PgConfig, who: RunAs) -> None:
    if who.uid == os.geteuid():
        return
    check_access(cfg, who)
    # The log lives next to the data dir, in a directory the server user may not write to.
    cfg.log_path.touch(exist_ok=True)
    os.chown(cfg.log_path, who.uid, who.gid)
    if cfg.data_dir.exists() and cfg.data_dir.stat().st_uid != who.uid:
        say(f"handing {cfg.data_dir} to user {who.name}")
        for root, dirs, files in os.walk(cfg.data_dir):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(root, name), who.uid, who.gid)
        os.chown(cfg.data_dir, who.uid, who.gid)


def check_owner(cfg: PgConfig, who: RunAs) -> None:
    if cfg.data_dir.exists() and cfg.data_dir.stat().st_uid != who.uid:
        owner = user_name(cfg.data_dir.stat().st_uid)
        raise PostgresError(
            f"the data dir {cfg.data_dir} belongs to {owner}, not to {who.name} who would run PostgreSQL; "
            f"run as the same user as before (root runs it as {PG_SYSTEM_USER}), or set LAB_PG_DATA "
            f"to another directory"
        )


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
