"""Facts about the machine a measurement ran on, recorded beside every result."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

import psutil

# The exact versions of what the servers and the load generator run on (constraints.txt pins them).
PACKAGES = ("aiohttp", "asyncpg", "psycopg2-binary", "gevent", "greenlet", "psycogreen", "locust", "uvloop",
            "pgserver")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def facts() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(),
    }
