"""The async (aiohttp) app over asyncpg, served by both `asyncio` and `multiproc`.

It only maps HTTP in and out: every rule lives in servers.contract. One catch-all route hands
each request to `AsyncApp.handle`, which calls `contract.route`, so 404/405 bodies are the
contract's. The runtimes start it with `web.AppRunner`; `async_connections.attach_connection_hooks`
hooks the runner's server to count open client connections, enforce LAB_MAX_CONNECTIONS and answer
unparseable HTTP in JSON. Requests queue first come first served in `slots.Slots` (in-flight and
pool gates) and hold a database session through `async_lease.Lease`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import asyncpg
from aiohttp import HttpVersion10, HttpVersion11, web, web_server

from servers import contract, cpuwork
from servers.ablation import NeverHopeless, NoDeadlines
from servers.admission import HoldClock
from servers.async_lease import DB_ERRORS, LOST, Lease, keep_session
from servers.contract import ContractError, Reply, Route
from servers.deadlines import LoopDeadlines
from servers.metrics import Metrics
from servers.settings import Settings
from servers.slots import SWEEP_SECONDS, Slots, loop_time

log = logging.getLogger("serverlab")

METRICS_TYPE = "text/plain; charset=utf-8"
# Other processes' metrics snapshots (multiproc); None for a single process.
MetricsPeers = Callable[[], Iterable[dict[str, Any]]]
Handler = Callable[[web.BaseRequest, Route], Awaitable[Reply]]

_JSON_REPLY = Reply(200, contract.JSON_BODY)
_TEXT_REPLY = Reply(200, contract.HELLO, contract.TEXT)


class AsyncApp:
    """The request handler plus what the runtimes share with it (metrics, pool, limits)."""

    def __init__(self, settings: Settings, metrics_peers: MetricsPeers | None = None) -> None:
        self.settings = settings
        self.metrics_peers = metrics_peers
        self.pool: asyncpg.Pool | None = None
        self.closing = False
        self.metrics = Metrics(settings.model, enabled=settings.metrics, pool_stats=self.pool_stats)
        self.refused: set[object] = set()  # connections opened beyond LAB_MAX_CONNECTIONS
        # LAB_ABLATE (make bench --ablation only) swaps a guarantee for a stand-in that does nothing
        self.timed, self.capped = not settings.off("deadline"), not settings.off("cap")
        self.limited, self.strict = not settings.off("inflight"), not settings.off("strict")
        self.deadlines: LoopDeadlines | NoDeadlines = (
            LoopDeadlines(settings.request_timeout, settings.keepalive_timeout) if self.timed
            else NoDeadlines())
        self._slots = Slots(settings.max_inflight)
        self._connections = Slots(settings.pool_size)  # one per pooled connection lent out
        # how long a request holds a connection: the fail-fast rule
        clock = NeverHopeless if settings.off("failfast") else HoldClock
        self.clock = clock(horizon=settings.acquire_timeout, size=settings.pool_size)
        self._lent: dict[int, float] = {}
        self._ready_conn: asyncpg.Connection | None = None
        self._ready_lock = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None
        self._last_db_log = 0.0
        self._extra_work = cpuwork.Work.for_us(settings.extra_cpu_us)  # lab only; None: none
        # Header dicts per content type; aiohttp copies them into each response.
        self._headers = {
            ctype: self.headers_for(ctype)
            for ctype in (contract.JSON, contract.TEXT, contract.HTML, METRICS_TYPE)
        }
        self._handlers: dict[str, Handler] = {
            "json": self.json,
            "plaintext": self.plaintext,
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

    def pool_stats(self) -> tuple[int, int, int]:
        return (self.settings.pool_size, self._connections.taken, self._connections.waiting)

    # --- HTTP in and out ------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        # One coroutine from request to response: every extra layer costs on each resume, and a
        # /db request resumes four times (measured against a bare handler: see lab/bench/bench.py).
        metrics = self.metrics
        started = time.perf_counter() if metrics.enabled else 0.0
        if self._extra_work:
            self._extra_work.run()  # on the loop, as any code in the handler
        name = None
        refused = False
        protocol = request.protocol
        self.deadlines.busy(protocol)
        if request.headers.get("Expect") is not None:  # as aiohttp's router would (serve_directly)
            await _expect_continue(request)
        try:
            if self.strict and request.version != HttpVersion11 and request.version != HttpVersion10:
                refused = True  # closes the connection, as the sync servers do for malformed HTTP
                raise ContractError(_version_reply(request))
            route = contract.route(request.method, request.path)
            name = route.name
            length = request.content_length
            limited = self.limited and name not in contract.UNLIMITED
            if self.refused and request.protocol in self.refused and limited:  # probes still answer
                refused = True
                reply = self._connection_limit()
            elif length is not None and length > contract.MAX_BODY_BYTES:
                reply = contract.too_large(length)
            elif limited and not self._slots.try_take() and not await self._wait(self._slots):
                metrics.reject("inflight_timeout")
                reply = contract.inflight_timeout(self.settings.max_inflight, self.settings.acquire_timeout)
            else:
                if limited:
                    metrics.active.add(id(request))
                try:
                    try:
                        reply = await self._handlers[name](request, route)
                    except LOST:
                        if name not in contract.READS:
                            raise
                        # A read: once more, on a new session. Sessions lost together (a restart,
                        # a mass termination) may not look closed yet: replace every pooled one.
                        if self.pool is not None:
                            await self.pool.expire_connections()
                        reply = await self._handlers[name](request, route)
                except (TimeoutError, asyncpg.QueryCanceledError) as exc:  # statement_timeout, or no answer
                    self._log_db_error(exc)
                    reply = contract.database_timeout(self.settings.statement_timeout)
                except DB_ERRORS as exc:
                    self._log_db_error(exc)
                    reply = contract.database_error(exc)
                finally:
                    if limited:
                        self._slots.give()
                        metrics.active.discard(id(request))
        except ContractError as exc:
            reply = exc.reply
        except Exception:
            log.exception("unexpected error in %s %s", request.method, request.path)
            reply = contract.internal()
        headers = self._headers.get(reply.content_type) or self.headers_for(reply.content_type)
        if reply.headers:
            headers = {**headers, **dict(reply.headers)}
        response = web.Response(body=reply.body, status=reply.status, headers=headers)
        if refused or reply.status == 413:  # 413: the unread body is not worth draining
            response.force_close()
        if started:
            metrics.record[name]((reply.status, time.perf_counter() - started))
        self.deadlines.idle(protocol)
        return response

    def headers_for(self, content_type: str) -> dict[str, str]:
        return {"Server": contract.server_header(self.settings.model), "Content-Type": content_type}

    def _connection_limit(self) -> Reply:
        self.metrics.reject("connection_limit")
        return contract.connection_limit(self.settings.max_connections)

    def _log_db_error(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_db_log >= 5.0:  # one line per 5 s, not one per request
            self._last_db_log = now
            log.warning("database error (answering 503): %s", str(exc).strip() or repr(exc))

    # --- the pool -------------------------------------------------------------------------

    async def pool_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: a lazy pool (min_size=0 connects on first use, so a down DB is a 503)."""
        timed = not self.settings.off("statement")  # LAB_ABLATE (make bench --ablation only)
        statement_ms = str(round(self.settings.statement_timeout * 1000))
        self.pool = await asyncpg.create_pool(
            self.settings.database_url,
            min_size=0,
            max_size=self.settings.pool_size,
            max_inactive_connection_lifetime=0,
            server_settings={
                "application_name": self.settings.application_name,
                **({"statement_timeout": statement_ms} if timed else {}),
            },
            reset=keep_session,
            connect=self._connect,
            timeout=self.settings.acquire_timeout,  # connect timeout (asyncpg's default: 60 s)
            # No answer at all (an unreachable database): asyncpg gives up, and Lease drops the session.
            command_timeout=self.settings.statement_timeout + contract.UNANSWERED_GRACE if timed else None,
        )
        yield
        self.closing = True
        try:
            await asyncio.wait_for(self.pool.close(), 5.0)
        except TimeoutError:
            log.warning("database pool did not close within 5 s; terminating its connections")
            self.pool.terminate()
        if self._sweeper is not None:  # only now: waits queued while the pool closed must time out
            self._sweeper.cancel()
        if self._ready_conn is not None:
            self._ready_conn.terminate()

    async def _connect(self, *args: Any, **kwargs: Any) -> asyncpg.Connection:
        """asyncpg's connect, counted: while sessions open, a wait for the pool includes one connect."""
        clock = self.clock
        clock.connecting += 1
        began = loop_time()
        try:
            return await asyncpg.connect(*args, **kwargs)
        finally:
            clock.connecting -= 1
            clock.connect_seconds = loop_time() - began

    async def acquire(self) -> asyncpg.Connection:
        """A pooled connection, or a 503 once LAB_ACQUIRE_TIMEOUT passes (give or take SWEEP_SECONDS).

        Requests queue for a connection in `_connections`, first come first served; asyncpg's pool
        then always has one ready (slots never outnumber its connections), so its own queue,
        which is not fair, never holds a wait.
        """
        pool = self.pool
        if pool is None or self.closing:
            raise ContractError(contract.shutting_down())
        gate = self._connections
        if not gate.try_take():
            size, timeout, now = self.settings.pool_size, self.settings.acquire_timeout, loop_time()
            if self.clock.hopeless(gate.waiting, size, timeout, now):
                self.metrics.reject("pool_fail_fast")
                expected = self.clock.expected_wait(gate.waiting, size, now)
                raise ContractError(contract.wait_too_long(gate.waiting, size, expected, timeout))
            if not await self._wait(gate):
                self.metrics.reject("pool_timeout")
                raise ContractError(contract.pool_timeout(size, timeout))
        try:
            conn = await pool.acquire()  # waits only to connect, bounded by the connect timeout
        except BaseException:
            gate.give()
            raise
        self._lent[id(conn)] = loop_time()
        return conn

    async def release(self, conn: asyncpg.Connection) -> None:
        # The slot goes first: the next waiter then queues in asyncpg's pool for this very
        # connection (no one else may take it: slots never outnumber connections) and gets it in
        # the loop iteration it would without the gate. Giving it after the release returns cost
        # one more iteration per request, ~15 % of /db's CPU time, though callgrind saw only 3 %.
        self._connections.give()
        since = self._lent.pop(id(conn), None)
        if since is not None:
            now = loop_time()
            self.clock.held(now - since, now)
        if self.pool is not None:
            await self.pool.release(conn)

    async def _wait(self, gate: Slots) -> bool:
        """Queue for a slot of `gate` until LAB_ACQUIRE_TIMEOUT passes (False then)."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._expire_waits())
        return await gate.take(loop_time() + self.settings.acquire_timeout)

    async def _expire_waits(self) -> None:
        """The sweeper: ends waits that outlived their deadline. It runs only while someone
        waits, so an idle server does not wake up every SWEEP_SECONDS."""
        try:
            while self._slots.waiting or self._connections.waiting:
                await asyncio.sleep(SWEEP_SECONDS)
                now = loop_time()
                self._slots.expire(now)
                self._connections.expire(now)
        finally:
            self._sweeper = None

    # --- endpoints ------------------------------------------------------------------------

    async def json(self, request: web.BaseRequest, route: Route) -> Reply:
        return _JSON_REPLY

    async def plaintext(self, request: web.BaseRequest, route: Route) -> Reply:
        return _TEXT_REPLY

    async def db(self, request: web.BaseRequest, route: Route) -> Reply:
        async with Lease(self) as conn:
            row = await conn.fetchrow(contract.SQL_WORLD, contract.random_id())
        return contract.world_reply(row)

    @staticmethod
    async def _read_worlds(conn: asyncpg.Connection, ids: Iterable[int]) -> list[Any] | None:
        rows = []
        for world_id in ids:
            row = await conn.fetchrow(contract.SQL_WORLD, world_id)
            if row is None:
                return None
            rows.append(row)
        return rows

    async def queries(self, request: web.BaseRequest, route: Route) -> Reply:
        ids = contract.random_ids(contract.clamp_queries(request.query.get("queries")))
        async with Lease(self) as conn:
            rows = await self._read_worlds(conn, ids)
        return contract.world_reply(None) if rows is None else contract.worlds_reply(rows)

    async def updates(self, request: web.BaseRequest, route: Route) -> Reply:
        n = contract.clamp_queries(request.query.get("queries"))
        ids = contract.random_ids(n, distinct=True)
        numbers = contract.new_numbers(n)
        changed = list(zip(ids, numbers, strict=True))
        async with Lease(self) as conn:
            if await self._read_worlds(conn, ids) is None:
                return contract.world_reply(None)
            async with conn.transaction():
                await conn.executemany(contract.SQL_UPDATE_WORLD, contract.update_params(changed))
        return contract.worlds_reply(changed)

    async def fortunes(self, request: web.BaseRequest, route: Route) -> Reply:
        async with Lease(self) as conn:
            rows = await conn.fetch(contract.SQL_FORTUNES)
        return contract.fortunes_reply(rows)

    async def io(self, request: web.BaseRequest, route: Route) -> Reply:
        ms = contract.int_param("ms", request.query.get("ms"), contract.IO_MS)
        await asyncio.sleep(ms / 1000.0)
        return contract.io_reply(ms)

    async def cpu(self, request: web.BaseRequest, route: Route) -> Reply:
        # Inline on purpose: it blocks the loop, which is what this endpoint exposes.
        return contract.cpu_reply(contract.int_param("n", request.query.get("n"), contract.CPU_N))

    async def block(self, request: web.BaseRequest, route: Route) -> Reply:
        """Lab only (LAB_ALLOW_BLOCKING=1): a blocking call inside the coroutine stalls the loop."""
        if not self.settings.allow_blocking:
            return contract.block_reply(None)
        ms = contract.int_param("ms", request.query.get("ms"), contract.BLOCK_MS)
        time.sleep(ms / 1000.0)  # blocking on purpose: that is what it shows
        return contract.block_reply(ms)

    async def hold(self, request: web.BaseRequest, route: Route) -> Reply:
        ms = contract.int_param("ms", request.query.get("ms"), contract.HOLD_MS)
        async with Lease(self) as conn:
            await conn.execute(contract.SQL_HOLD, ms / 1000.0)
        return contract.hold_reply(ms)

    async def create_order(self, request: web.BaseRequest, route: Route) -> Reply:
        try:  # the body is part of the request: it must arrive within LAB_REQUEST_TIMEOUT too
            async with asyncio.timeout(self.settings.request_timeout):
                body = await _read_body(request)
        except TimeoutError:
            self.metrics.reject("request_timeout")
            request.protocol.force_close()
            raise ContractError(contract.request_timeout(self.settings.request_timeout)) from None
        contract.check_json_type(request.headers.get("Content-Type"))
        order = contract.parse_order(body)
        key = contract.parse_idempotency_key(request.headers.get("Idempotency-Key"))
        try:
            return await self._place_order(order, key)
        except LOST as exc:
            if self.pool is None:
                raise
            # The session was lost (PostgreSQL ended it); sessions lost together may not look closed
            # yet: replace every pooled one.
            await self.pool.expire_connections()
            if key is None:  # it may have committed: only the client can retry it, and only with a key
                self._log_db_error(exc)
                return contract.order_session_lost(None)
        # Once more on a new session, as a read is. The key makes that safe: an order the lost
        # session did commit is found, not placed twice.
        try:
            return await self._place_order(order, key)
        except LOST as exc:
            self._log_db_error(exc)
            return contract.order_session_lost(key)

    async def _place_order(self, order: contract.Order, key: str | None) -> Reply:
        async with Lease(self) as conn:
            for _attempt in range(2):  # a replayed key's row can only vanish if deleted meanwhile
                row = await conn.fetchrow(contract.SQL_INSERT_ORDER, order.item, order.qty, key)
                if row is not None:  # committed: outside a transaction each statement commits
                    return contract.order_created_reply(row, replayed=False)
                row = await conn.fetchrow(contract.SQL_ORDER_BY_KEY, key)
                if row is not None:
                    return contract.order_created_reply(row, replayed=True, order=order)
        raise RuntimeError(f"order with Idempotency-Key {key!r} neither inserted nor found")

    async def get_order(self, request: web.BaseRequest, route: Route) -> Reply:
        order_id = contract.parse_order_id(route.arg)
        async with Lease(self) as conn:
            row = await conn.fetchrow(contract.SQL_ORDER_BY_ID, order_id)
        return contract.order_reply(row, order_id)

    async def health(self, request: web.BaseRequest, route: Route) -> Reply:
        return contract.health_reply()  # alive: answering at all is the check

    async def ready(self, request: web.BaseRequest, route: Route) -> Reply:
        """SELECT 1 on a session of its own (outside the pool), within LAB_READY_TIMEOUT."""
        timeout = self.settings.ready_timeout
        try:
            async with asyncio.timeout(timeout):
                async with self._ready_lock:
                    if self._ready_conn is None or self._ready_conn.is_closed():
                        self._ready_conn = await asyncpg.connect(
                            self.settings.database_url,
                            server_settings={"application_name": self.settings.ready_application_name})
                    await self._ready_conn.fetchval(contract.SQL_HEALTH)
        except (TimeoutError, *DB_ERRORS) as exc:
            conn, self._ready_conn = self._ready_conn, None
            if conn is not None:
                conn.terminate()
            text = str(exc).strip()
            return contract.not_ready(text.splitlines()[0] if text else f"no answer within {timeout:g} s")
        return contract.ready_reply()

    async def render_metrics(self, request: web.BaseRequest, route: Route) -> Reply:
        others = self.metrics_peers() if self.metrics_peers is not None else ()
        return Reply(200, self.metrics.render(others).encode(), METRICS_TYPE)

    async def config(self, request: web.BaseRequest, route: Route) -> Reply:
        return contract.config_reply({**self.settings.public(), "pid": os.getpid()})


def _version_reply(request: web.BaseRequest) -> Reply:
    """HTTP/2.0 and HTTP/0.9 request lines get 400, as HTTP/1.2 does: aiohttp's parser lets
    those two through.

    aiohttp answers in the request's version; the reply must say HTTP/1.1, so this overwrites
    the cached value of the `version` property (a private detail of aiohttp's `reify`)."""
    version = request.version
    request._cache["version"] = HttpVersion11
    return contract.malformed_http(f"HTTP/{version.major}.{version.minor} is not spoken here")


async def _read_body(request: web.BaseRequest) -> bytes:
    """The body, at most MAX_BODY_BYTES + 1 bytes (parse_order answers 413 beyond)."""
    chunks: list[bytes] = []
    size = 0
    while size <= contract.MAX_BODY_BYTES:
        chunk = await request.content.read(contract.MAX_BODY_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def _expect_continue(request: web.BaseRequest) -> None:
    """Invite the body only when it may be read; any other expectation is simply ignored.

    (aiohttp's default answers an unknown Expect with its own text/plain 417.)
    """
    length = request.content_length
    if (
        request.version == HttpVersion11
        and request.headers.get("Expect", "").lower() == "100-continue"
        and (length is None or length <= contract.MAX_BODY_BYTES)
    ):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's default: the response has not started
        await request.writer.drain()


async def _expect_in_handle(request: web.BaseRequest) -> None:
    """The router's expect handler: none, as `handle` answers Expect itself."""


APP_KEY = web.AppKey("serverlab_app", AsyncApp)


def make_app(settings: Settings, metrics_peers: MetricsPeers | None = None) -> web.Application:
    """The aiohttp application; `app_state(app)` gives its metrics and pool to the runtimes."""
    state = AsyncApp(settings, metrics_peers)
    app = web.Application(client_max_size=contract.MAX_BODY_BYTES + 1)
    app[APP_KEY] = state
    # One catch-all: every path, known or not, reaches contract.route and its 404/405. The runtimes
    # skip even that (serve_directly); the route keeps the application whole on its own.
    app.router.add_route("*", "/{path:.*}", state.handle, expect_handler=_expect_in_handle)
    app.cleanup_ctx.append(state.pool_ctx)
    return app


def serve_directly(app: web.Application, server: web_server.Server) -> None:
    """Hand each request of `server` (the app's runner's) straight to `AsyncApp.handle`, as aiohttp's
    plain `web.BaseRequest`.

    The app routes by contract.route itself, so aiohttp's router would only find the catch-all on
    every request, and its resolve, match info, Expect check and middleware check cost more per
    /json request than the app's own routing (docs/bench.md). For the same reason the request need
    not be the application's `web.Request` (its match info, its app, its response-prepare signal);
    `handle` reads no more than a `BaseRequest` holds, answers `Expect` itself and bounds the body it
    reads itself (`_read_body`)."""
    loop = asyncio.get_running_loop()

    def base_request(message: Any, payload: Any, protocol: Any, writer: Any,
                     task: asyncio.Task[None]) -> web.BaseRequest:
        return web.BaseRequest(message, payload, protocol, writer, task, loop)

    server.request_factory = base_request
    server.request_handler = app_state(app).handle


def app_state(app: web.Application) -> AsyncApp:
    return app[APP_KEY]
