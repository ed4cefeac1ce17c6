"""The sync (WSGI) app over psycopg2, served by both `threaded` and `gevent`.

It only maps HTTP in and out: every rule lives in servers.contract. Under gevent the same
code is cooperative because `threading`, `time.sleep` and sockets are monkey-patched and
psycogreen makes psycopg2 wait through the hub.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from servers import contract, cpuwork
from servers.ablation import NeverHopeless
from servers.admission import Token, thread_token
from servers.contract import ContractError, Reply, Route
from servers.metrics import Metrics
from servers.ready import ReadyCheck
from servers.settings import Settings
from servers.sync_pool import BlockingPool, PoolClosed, PoolHopeless, PoolTimeout, lost

log = logging.getLogger("serverlab")

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
Handler = Callable[[Environ, Route], Reply]
Background = Callable[[Callable[[], None]], object]  # runs a blocking call elsewhere

STATUS_LINES = {int(s): f"{int(s)} {s.phrase}" for s in HTTPStatus}
METRICS_TYPE = "text/plain; charset=utf-8"

SQL_WORLD = contract.pyformat(contract.SQL_WORLD)
SQL_UPDATE_WORLD = contract.pyformat(contract.SQL_UPDATE_WORLD)
SQL_FORTUNES = contract.pyformat(contract.SQL_FORTUNES)
SQL_HOLD = contract.pyformat(contract.SQL_HOLD)
SQL_INSERT_ORDER = contract.pyformat(contract.SQL_INSERT_ORDER)
SQL_ORDER_BY_KEY = contract.pyformat(contract.SQL_ORDER_BY_KEY)
SQL_ORDER_BY_ID = contract.pyformat(contract.SQL_ORDER_BY_ID)

_JSON_REPLY = Reply(200, contract.JSON_BODY)
_TEXT_REPLY = Reply(200, contract.HELLO, contract.TEXT)


class DateCache:
    """The RFC 1123 `Date` value, formatted at most once per second, and with it the head lines every
    response begins with (`Server` and `Date`, CRLF-ended), for runtimes that write heads themselves."""

    def __init__(self, server: str = "") -> None:
        self._server = f"Server: {server}\r\nDate: "
        self._second = -1
        self._value = ""
        self._lines = ""

    def __call__(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._refresh(second)
        return self._value

    def lines(self) -> str:
        """'Server: ...\\r\\nDate: ...\\r\\n' for the current second."""
        second = int(time.time())
        if second != self._second:
            self._refresh(second)
        return self._lines

    def _refresh(self, second: int) -> None:
        value = contract.http_date(second)
        self._value, self._lines = value, f"{self._server}{value}\r\n"  # values first: readers check _second
        self._second = second


class SyncApp:
    """The WSGI callable plus what the runtimes share with it (metrics, pool, headers)."""

    def __init__(
        self, settings: Settings, semaphore: Callable[[int], Any] = threading.BoundedSemaphore,
        token: Callable[[], Token] = thread_token, background: Background | None = None,
    ) -> None:
        self.settings = settings
        self.pool = BlockingPool(
            settings.database_url,
            settings.pool_size,
            settings.application_name,
            settings.acquire_timeout,
            token,
            background,
            0.0 if settings.off("statement") else settings.statement_timeout,
        )
        if settings.off("failfast"):  # lab only (LAB_ABLATE): no early refusal, only the timeout
            self.pool.clock = NeverHopeless(horizon=settings.acquire_timeout, size=settings.pool_size)
        self._limit = not settings.off("inflight")
        self.ready_check = ReadyCheck(settings.database_url, settings.ready_application_name,
                                      settings.ready_timeout)
        self.metrics = Metrics(settings.model, enabled=settings.metrics, pool_stats=self.pool.stats)
        self.server_header = contract.server_header(settings.model)
        self.date = DateCache(self.server_header)
        self._slots = semaphore(settings.max_inflight)
        self._last_db_log = 0.0
        self._extra_work = cpuwork.Work.for_us(settings.extra_cpu_us)  # lab only; None: none
        self._handlers: dict[str, Handler] = {
            "json": lambda env, r: _JSON_REPLY,
            "plaintext": lambda env, r: _TEXT_REPLY,
            "db": self.db,
            "queries": self.queries,
            "updates": self.updates,
            "fortunes": self.fortunes,
            "io": self.io,
            "cpu": self.cpu,
            "hold": self.hold,
            "orders": self.create_order,
            "order": self.get_order,
            "health": self.health,
            "ready": self.ready,
            "metrics": self.render_metrics,
            "config": self.config,
            "block": self.block,
        }

    # --- HTTP in and out ------------------------------------------------------------------

    def __call__(self, environ: Environ, start_response: StartResponse) -> list[bytes]:
        reply = self.respond(environ)
        start_response(STATUS_LINES[reply.status], self.headers(reply))
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [reply.body]

    def respond(self, environ: Environ) -> Reply:
        """The app without WSGI's start_response: the reply to one request. Both runtimes call it and
        write `response(reply)` themselves, which spares the header list, the callback and (under
        gevent) pywsgi's header handling of every request; the WSGI callable remains for pywsgi's
        own paths and any WSGI server."""
        metrics = self.metrics
        started = time.perf_counter() if metrics.enabled else 0.0
        if self._extra_work:
            self._extra_work.run()
        method = environ["REQUEST_METHOD"]
        name = None
        try:
            route = contract.route(method, environ.get("PATH_INFO") or "/")
            name = route.name
            reply = self.dispatch(route, environ)
        except ContractError as exc:
            reply = exc.reply
        except ClientInputError as exc:
            # e.g. gevent's error for a malformed chunk, which pywsgi answers 400 and then closes
            raise exc.error from None
        except Exception:
            log.exception("unexpected error in %s %s", method, environ.get("PATH_INFO"))
            reply = contract.internal()
        if started:
            metrics.record[name]((reply.status, time.perf_counter() - started))
        return reply

    def headers(self, reply: Reply) -> list[tuple[str, str]]:
        return [
            ("Server", self.server_header),
            ("Date", self.date()),
            ("Content-Type", reply.content_type),
            ("Content-Length", str(len(reply.body))),
            *reply.headers,
        ]

    def response(self, reply: Reply, head_only: bool, close: bool, http10: bool) -> bytes:
        """The whole response, for runtimes that write it themselves: the status line, the headers of
        `headers()`, `Connection: close` when the connection ends after it (`Connection: keep-alive`
        when an HTTP/1.0 one does not), then the body unless `head_only` (a HEAD request). One format
        string: no header list, no start_response."""
        body = reply.body
        extra = "".join(f"{name}: {value}\r\n" for name, value in reply.headers) if reply.headers else ""
        if close:
            extra += "Connection: close\r\n"
        elif http10:
            extra += "Connection: keep-alive\r\n"
        head = (f"HTTP/1.1 {STATUS_LINES[reply.status]}\r\n{self.date.lines()}Content-Type: "
                f"{reply.content_type}\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode("latin-1")
        return head if head_only else head + body

    def raw_response(self, reply: Reply) -> bytes:
        """A complete `Connection: close` response, for runtimes answering outside the app."""
        return contract.raw_response(reply, self.server_header, self.date())

    def dispatch(self, route: Route, environ: Environ) -> Reply:
        raw_length = environ.get("CONTENT_LENGTH")
        if raw_length:
            length = _content_length(raw_length)
            if length > contract.MAX_BODY_BYTES:
                return contract.too_large(length)
        handler = self._handlers[route.name]
        limited = self._limit and route.name not in contract.UNLIMITED
        if limited and not self._slots.acquire(timeout=self.settings.acquire_timeout):
            self.metrics.reject("inflight_timeout")
            return contract.inflight_timeout(self.settings.max_inflight, self.settings.acquire_timeout)
        active = self.metrics.active
        key = id(environ)  # unique while the request runs
        if limited:
            active.add(key)
        try:
            try:
                return handler(environ, route)
            except psycopg2.Error as exc:
                if not (lost(exc) and route.name in contract.READS):
                    raise
                environ["serverlab.fresh"] = True  # a read: once more, on a new session
                return handler(environ, route)
        except PoolTimeout:
            self.metrics.reject("pool_timeout")
            return contract.pool_timeout(self.settings.pool_size, self.settings.acquire_timeout)
        except PoolHopeless as exc:
            self.metrics.reject("pool_fail_fast")
            return contract.wait_too_long(exc.ahead, self.settings.pool_size, exc.expected,
                                          self.settings.acquire_timeout)
        except PoolClosed:
            return contract.shutting_down()
        except psycopg2.extensions.QueryCanceledError as exc:  # statement_timeout, or no answer
            self._log_db_error(exc)
            return contract.database_timeout(self.settings.statement_timeout)
        except psycopg2.Error as exc:
            self._log_db_error(exc)
            return contract.database_error(exc)
        finally:
            if limited:
                self._slots.release()
                active.discard(key)

    def _log_db_error(self, exc: psycopg2.Error) -> None:
        now = time.monotonic()
        if now - self._last_db_log >= 5.0:  # one line per 5 s, not one per request
            self._last_db_log = now
            log.warning("database error (answering 503): %s", str(exc).strip() or repr(exc))

    def _conn(self, environ: Environ) -> Any:
        return self.pool.connection(fresh=environ.get("serverlab.fresh", False))

    # --- endpoints ------------------------------------------------------------------------

    def db(self, environ: Environ, route: Route) -> Reply:
        with self._conn(environ) as conn, conn.cursor() as cur:
            cur.execute(SQL_WORLD, (contract.random_id(),))
            return contract.world_reply(cur.fetchone())

    def _read_worlds(self, cur: Any, ids: Iterable[int]) -> list[tuple[int, int]] | None:
        rows = []
        for world_id in ids:
            cur.execute(SQL_WORLD, (world_id,))
            row = cur.fetchone()
            if row is None:
                return None
            rows.append(row)
        return rows

    def queries(self, environ: Environ, route: Route) -> Reply:
        ids = contract.random_ids(contract.clamp_queries(_param(environ, "queries")))
        with self._conn(environ) as conn, conn.cursor() as cur:
            rows = self._read_worlds(cur, ids)
        return contract.world_reply(None) if rows is None else contract.worlds_reply(rows)

    def updates(self, environ: Environ, route: Route) -> Reply:
        n = contract.clamp_queries(_param(environ, "queries"))
        ids = contract.random_ids(n, distinct=True)
        numbers = contract.new_numbers(n)
        with self._conn(environ) as conn, conn.cursor() as cur:
            if self._read_worlds(cur, ids) is None:
                return contract.world_reply(None)
            changed = list(zip(ids, numbers, strict=True))
            cur.execute("BEGIN")
            # One round trip for the batch (asyncpg's executemany pipelines likewise).
            psycopg2.extras.execute_batch(cur, SQL_UPDATE_WORLD, contract.update_params(changed),
                                          page_size=contract.MAX_QUERIES)
            cur.execute("COMMIT")
        return contract.worlds_reply(changed)

    def fortunes(self, environ: Environ, route: Route) -> Reply:
        with self._conn(environ) as conn, conn.cursor() as cur:
            cur.execute(SQL_FORTUNES)
            rows = cur.fetchall()
        return contract.fortunes_reply(rows)

    def io(self, environ: Environ, route: Route) -> Reply:
        ms = contract.int_param("ms", _param(environ, "ms"), contract.IO_MS)
        time.sleep(ms / 1000.0)
        return contract.io_reply(ms)

    def cpu(self, environ: Environ, route: Route) -> Reply:
        return contract.cpu_reply(contract.int_param("n", _param(environ, "n"), contract.CPU_N))

    def block(self, environ: Environ, route: Route) -> Reply:
        """Lab only (LAB_ALLOW_BLOCKING=1): sleep in the OS, unpatched, so under gevent it blocks
        the hub as a C library call would."""
        if not self.settings.allow_blocking:
            return contract.block_reply(None)
        ms = contract.int_param("ms", _param(environ, "ms"), contract.BLOCK_MS)
        monkey = sys.modules.get("gevent.monkey")  # present only under gevent's runtime
        sleep = monkey.get_original("time", "sleep") if monkey is not None else time.sleep
        sleep(ms / 1000.0)
        return contract.block_reply(ms)

    def hold(self, environ: Environ, route: Route) -> Reply:
        ms = contract.int_param("ms", _param(environ, "ms"), contract.HOLD_MS)
        with self._conn(environ) as conn, conn.cursor() as cur:
            cur.execute(SQL_HOLD, (ms / 1000.0,))
            cur.fetchone()
        return contract.hold_reply(ms)

    def create_order(self, environ: Environ, route: Route) -> Reply:
        body = _read_body(environ)  # first: a body that breaks while arriving is a 400, whatever its type
        contract.check_json_type(environ.get("CONTENT_TYPE"))
        order = contract.parse_order(body)
        key = contract.parse_idempotency_key(environ.get("HTTP_IDEMPOTENCY_KEY"))
        try:
            return self._place_order(order, key, environ.get("serverlab.fresh", False))
        except psycopg2.Error as exc:
            if not lost(exc):
                raise
            if key is None:  # it may have committed: only the client can retry it, and only with a key
                self._log_db_error(exc)
                return contract.order_session_lost(None)
        # The session was lost (PostgreSQL ended it): once more on a new one. The key makes that
        # safe: an order the lost session did commit is found, not placed twice.
        try:
            return self._place_order(order, key, fresh=True)
        except psycopg2.Error as exc:
            if not lost(exc):
                raise
            self._log_db_error(exc)
            return contract.order_session_lost(key)

    def _place_order(self, order: contract.Order, key: str | None, fresh: bool) -> Reply:
        with self.pool.connection(fresh) as conn, conn.cursor() as cur:
            for _attempt in range(2):  # a replayed key's row can only vanish if deleted meanwhile
                cur.execute(SQL_INSERT_ORDER, (order.item, order.qty, key))
                row = cur.fetchone()  # committed: the connection is in autocommit mode
                if row is not None:
                    return contract.order_created_reply(row, replayed=False)
                cur.execute(SQL_ORDER_BY_KEY, (key,))
                row = cur.fetchone()
                if row is not None:
                    return contract.order_created_reply(row, replayed=True, order=order)
        raise RuntimeError(f"order with Idempotency-Key {key!r} neither inserted nor found")

    def get_order(self, environ: Environ, route: Route) -> Reply:
        order_id = contract.parse_order_id(route.arg)
        with self._conn(environ) as conn, conn.cursor() as cur:
            cur.execute(SQL_ORDER_BY_ID, (order_id,))
            return contract.order_reply(cur.fetchone(), order_id)

    def health(self, environ: Environ, route: Route) -> Reply:
        return contract.health_reply()  # alive: answering at all is the check

    def ready(self, environ: Environ, route: Route) -> Reply:
        why = self.ready_check.check()
        return contract.ready_reply() if why is None else contract.not_ready(why)

    def render_metrics(self, environ: Environ, route: Route) -> Reply:
        return Reply(200, self.metrics.render().encode(), METRICS_TYPE)

    def config(self, environ: Environ, route: Route) -> Reply:
        return contract.config_reply({**self.settings.public(), "pid": os.getpid()})

    def close(self) -> None:
        self.pool.close()
        self.ready_check.close()


def make_app(
    settings: Settings, semaphore: Callable[[int], Any] = threading.BoundedSemaphore,
    token: Callable[[], Token] = thread_token, background: Background | None = None,
) -> SyncApp:
    """The WSGI callable; its `.metrics`, `.pool` and `.raw_response` serve the runtimes.

    `semaphore` makes the in-flight limiter: anything with acquire(blocking=, timeout=) and
    release(); `token` makes the pool gate's one-shot wake-ups. gevent passes its native ones,
    several times cheaper than threading's that monkey-patching makes cooperative, and a
    `background` that runs blocking calls (query cancels) on a real OS thread."""
    return SyncApp(settings, semaphore, token, background)


def _param(environ: Environ, name: str) -> str | None:
    """The first value of a query parameter (blank values kept, as aiohttp does)."""
    query = environ.get("QUERY_STRING")
    if not query:
        return None
    values = parse_qs(query, keep_blank_values=True).get(name)
    return values[0] if values else None


def _content_length(raw: str) -> int:
    text = raw.strip()
    if not text.isdigit() or len(text) > 18:
        raise contract.bad_request(f"Content-Length must be a non-negative integer, got {raw!r}")
    return int(text)


def _read_body(environ: Environ) -> bytes:
    """The request body, at most MAX_BODY_BYTES + 1 bytes (parse_order answers 413 beyond)."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    raw_length = environ.get("CONTENT_LENGTH")
    if raw_length:
        size = _content_length(raw_length)
    elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        size = contract.MAX_BODY_BYTES + 1
    else:
        return b""
    try:
        return stream.read(size) if size else b""
    except OSError as exc:  # a malformed chunk, a client that stalls or hangs up mid-body
        raise ClientInputError(exc) from exc


class ClientInputError(Exception):
    """Reading the request body failed (malformed chunking, a broken connection): not the app's
    error to answer. It hands the runtime's own exception back to the runtime."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error
