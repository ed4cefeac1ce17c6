"""Server settings: defaults, then LAB_* environment variables, then command-line flags."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from servers import ablation

MODELS = ("threaded", "gevent", "asyncio", "multiproc")
DEFAULT_PORTS = {"threaded": 8001, "gevent": 8002, "asyncio": 8003, "multiproc": 8004}
DEFAULT_DATABASE_URL = "postgresql://serverlab@127.0.0.1:54320/serverlab"


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Settings:
    model: str
    host: str = "127.0.0.1"
    port: int = 0  # 0 means the model's default port
    database_url: str = DEFAULT_DATABASE_URL
    pool_size: int = 10  # database connections per process
    max_inflight: int = 256  # requests in progress per process; more wait, then 503
    acquire_timeout: float = 1.0  # seconds to wait for a pool connection or in-flight slot
    max_connections: int = 2000  # open client connections per process (threads for threaded)
    request_timeout: float = 10.0  # seconds to receive a whole request (head and body) once it starts
    keepalive_timeout: float = 30.0  # seconds an idle keep-alive connection stays open
    ready_timeout: float = 0.5  # seconds /ready waits for the database
    statement_timeout: float = 30.0  # seconds a database statement may run (then 503)
    workers: int = 0  # multiproc only; 0 means the CPUs this process may use
    uvloop: bool = True  # asyncio and multiproc: use uvloop when installed
    metrics: bool = True  # record /metrics; off only to measure what it costs
    log_level: str = "info"
    app_name: str = ""  # application_name of its database sessions; "" means serverlab-<model>
    allow_blocking: bool = False  # lab only (make claims): GET /block blocks its worker; else 404
    extra_cpu_us: float = 0.0  # lab only (make selfcheck): this much CPU work added to every request
    ablate: str = ""  # lab only (make bench --ablation): guarantees switched off (servers/ablation.py)

    def public(self) -> dict[str, Any]:
        """Effective settings for /config and the start-up log: no secrets."""
        data = asdict(self)
        data["database_url"] = redact(self.database_url)
        data["app_name"] = self.application_name
        return data

    def off(self, guarantee: str) -> bool:
        """True when LAB_ABLATE switched this guarantee (a name of servers.ablation.GUARANTEES) off."""
        return guarantee in ablation.parse(self.ablate)

    @property
    def application_name(self) -> str:
        """How pg_stat_activity names this server's sessions (the lab counts them by it)."""
        return self.app_name or f"serverlab-{self.model}"

    @property
    def ready_application_name(self) -> str:
        """The readiness check's own session: named apart, so the pool's sessions count as the pool."""
        return f"{self.application_name}-ready"


# field -> (env var, flag, type, help)
_KNOBS: dict[str, tuple[str, str, type, str]] = {
    "host": ("LAB_BIND", "--bind", str, "the one address to listen on (default 127.0.0.1; 0.0.0.0, every "
             "interface, only when asked)"),
    "port": ("LAB_PORT", "--port", int, "port to listen on (default 8001-8004 by model)"),
    "database_url": ("LAB_DATABASE_URL", "--database-url", str, "PostgreSQL URL"),
    "pool_size": ("LAB_POOL_SIZE", "--pool-size", int, "database connections per process"),
    "max_inflight": ("LAB_MAX_INFLIGHT", "--max-inflight", int, "requests in progress per process"),
    "acquire_timeout": (
        "LAB_ACQUIRE_TIMEOUT",
        "--acquire-timeout",
        float,
        "seconds to wait for a pool connection or in-flight slot before a 503",
    ),
    "max_connections": (
        "LAB_MAX_CONNECTIONS",
        "--max-connections",
        int,
        "open client connections per process",
    ),
    "request_timeout": ("LAB_REQUEST_TIMEOUT", "--request-timeout", float,
                        "seconds to receive a whole request (head and body), from its first byte "
                        "(from the connection's start for the first request); then 408 and close"),
    "keepalive_timeout": ("LAB_KEEPALIVE_TIMEOUT", "--keepalive-timeout", float,
                          "seconds an idle keep-alive connection waits for its next request"),
    "ready_timeout": ("LAB_READY_TIMEOUT", "--ready-timeout", float,
                      "seconds /ready waits for the database before answering 503"),
    "statement_timeout": ("LAB_STATEMENT_TIMEOUT", "--statement-timeout", float,
                          "seconds a database statement may run: PostgreSQL's statement_timeout for the "
                          "server's sessions; with no answer 1 s later (an unreachable database) the "
                          "connection is dropped; either way the request gets 503"),
    "workers": ("LAB_WORKERS", "--workers", int, "multiproc worker processes (0: one per CPU)"),
    "uvloop": ("LAB_UVLOOP", "--uvloop", bool, "use uvloop when installed (1/0)"),
    "metrics": ("LAB_METRICS", "--metrics", bool, "record metrics (1/0)"),
    "log_level": ("LAB_LOG_LEVEL", "--log-level", str, "debug, info, warning or error"),
    "app_name": ("LAB_APP_NAME", "--app-name", str,
                 "application_name of the database sessions (default serverlab-<model>)"),
    "allow_blocking": ("LAB_ALLOW_BLOCKING", "--allow-blocking", bool,
                       "lab only: enable GET /block?ms=N, a call that blocks its worker (1/0; default 0)"),
    "extra_cpu_us": ("LAB_EXTRA_CPU_US", "--extra-cpu-us", float,
                     "lab only: add this many microseconds of CPU work (a fixed loop, calibrated at start) "
                     "to every request, a code change of known size for make selfcheck (default 0: none)"),
    "ablate": ("LAB_ABLATE", "--ablate", str,
               "lab only (make bench --ablation; make up refuses it): guarantees to switch off, comma-"
               f"separated, of {', '.join(ablation.GUARANTEES)}, or all (default none)"),
}


class SettingsError(ValueError):
    """A setting a person got wrong; the message says which and what to do."""


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected 1/0, true/false, yes/no or on/off, got {text!r}")


def _convert(kind: type, text: str) -> Any:
    if kind is bool:
        return _parse_bool(text)
    return kind(text)


def load(model: str, argv: Sequence[str] = (), env: Mapping[str, str] | None = None) -> Settings:
    """Build the effective settings; raises SettingsError naming the bad knob."""
    if model not in MODELS:
        raise SettingsError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog=f"python -m servers {model}", add_help=True)
    for name, (var, flag, _kind, text) in _KNOBS.items():
        parser.add_argument(flag, dest=name, default=None, help=f"{text} [env {var}]")
    args = parser.parse_args(list(argv))

    values: dict[str, Any] = {"model": model}
    for name, (var, flag, kind, _text) in _KNOBS.items():
        raw = getattr(args, name)
        source = flag
        if raw is None:
            raw, source = env.get(var), var
        if raw is None or raw == "":
            continue
        try:
            values[name] = _convert(kind, raw)
        except ValueError as exc:
            raise SettingsError(f"{source}={raw!r} is not a valid {kind.__name__}: {exc}") from None

    settings = Settings(**values)
    try:
        if "metrics" in ablation.parse(settings.ablate):
            settings = _replace(settings, metrics=False)
    except ValueError as exc:
        raise SettingsError(f"LAB_ABLATE / --ablate: {exc}") from None
    if settings.port == 0:
        settings = _replace(settings, port=DEFAULT_PORTS[model])
    if settings.workers == 0 and model == "multiproc":
        settings = _replace(settings, workers=usable_cpus())
    if model != "multiproc":
        settings = _replace(settings, workers=1)
    _check(settings)
    return settings


def _replace(settings: Settings, **changes: Any) -> Settings:
    data = {f.name: getattr(settings, f.name) for f in fields(settings)}
    data.update(changes)
    return Settings(**data)


def _check(s: Settings) -> None:
    def need(ok: bool, knob: str, rule: str, value: object) -> None:
        if not ok:
            var, flag = _KNOBS[knob][0], _KNOBS[knob][1]
            raise SettingsError(f"{var} / {flag} must be {rule}, got {value!r}")

    need(bool(s.host.strip()), "host", "an address such as 127.0.0.1", s.host)
    need(0 < s.port < 65536, "port", "a port from 1 to 65535", s.port)
    need(1 <= s.pool_size <= 1000, "pool_size", "from 1 to 1000", s.pool_size)
    need(1 <= s.max_inflight <= 100_000, "max_inflight", "from 1 to 100000", s.max_inflight)
    need(0 < s.acquire_timeout <= 600, "acquire_timeout", "above 0 and at most 600", s.acquire_timeout)
    need(1 <= s.max_connections <= 1_000_000, "max_connections", "from 1 to 1000000", s.max_connections)
    need(0 < s.request_timeout <= 3600, "request_timeout", "above 0 and at most 3600", s.request_timeout)
    need(0 < s.keepalive_timeout <= 3600, "keepalive_timeout", "above 0 and at most 3600",
         s.keepalive_timeout)
    need(0 < s.ready_timeout <= 60, "ready_timeout", "above 0 and at most 60", s.ready_timeout)
    need(0 < s.statement_timeout <= 3600, "statement_timeout", "above 0 and at most 3600",
         s.statement_timeout)
    need(1 <= s.workers <= 256, "workers", "from 1 to 256", s.workers)
    need(0 <= s.extra_cpu_us <= 1_000_000, "extra_cpu_us", "from 0 to 1000000 (one second)", s.extra_cpu_us)
    need(len(s.app_name) <= 63 and s.app_name.isprintable(), "app_name",
         "at most 63 printable characters (PostgreSQL's limit)", s.app_name)
    need(s.log_level in {"debug", "info", "warning", "error"}, "log_level",
         "debug, info, warning or error", s.log_level)
    scheme = urlsplit(s.database_url).scheme
    need(scheme in {"postgres", "postgresql"}, "database_url",
         "a postgresql:// URL", redact(s.database_url))


def redact(url: str) -> str:
    """The URL with any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def env_vars() -> list[str]:
    """Every LAB_* variable a server reads."""
    return [var for var, _flag, _kind, _text in _KNOBS.values()]
