"""The async (aiohttp) app over asyncpg, served by both `asyncio` and `multiproc`.

It only maps HTTP in and out: every rule lives in servers.contract. One catch-all route hands
each request to `AsyncApp.handle`, which calls `contract.route`, so 404/405 bodies are the
contract's. The runtimes start it with `web.AppRunner`; `attach_connection_counter` hooks the
runner's server to count open client connections and enforce LAB_MAX_CONNECTIONS.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import asyncpg
from aiohttp import HttpVersion11, web, web_server

from servers import contract
from servers.contract import ContractError, Reply, Route
from servers.metrics import Metrics
from servers.settings import Settings

log = logging.getLogger("serverlab")

METRICS_TYPE = "text/plain; charset=utf-8"
# Other processes' metrics snapshots (multiproc); None for a single process.
MetricsPeers = Callable[[], Iterable[dict[str, Any]]]
Handler = Callable[[web.Request, Route], Awaitable[Reply]]

_JSON_REPLY = Reply(200, contract.JSON_BODY)
_TEXT_REPLY = Reply(200, contract.HELLO, contract.TEXT)
# Errors that mean "the database is unreachable or broken", answered 503 rather than 500.
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
SWEEP_SECONDS = 0.02  # how often overdue waits for a pool connection are cancelled


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook: asyncpg already rolls back an open transaction before calling it.

    The app never changes session state (no SET, LISTEN, advisory locks or cursors), so the
    default reset query (RESET ALL, UNLISTEN *, ...) would only cost a round trip per request.
    """


def _expire(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


class Slots:
    """In-flight request slots for one event loop (LAB_MAX_INFLIGHT).

    asyncio.Semaphore costs a dozen Python calls per request even when a slot is free; here a
    free slot is one comparison, and a wait is one future plus one timer handle. Only the loop's
    own thread touches it. (Waits for a pool connection queue in asyncpg's pool: see acquire().)
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.taken = 0
        self.waiting = 0
        self._waiters: deque[asyncio.Future[bool]] = deque()

    def try_take(self) -> bool:
        # Waiters exist only while every slot is taken (give() hands a slot to a waiter before it
        # frees one), so a free slot never jumps the queue.
        if self.taken < self.size:
            self.taken += 1
            return True
        return False

    async def take(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a slot: True once handed one, False if none came."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(fut)
        self.waiting += 1
        timer = loop.call_later(timeout, _expire, fut)
        try:
            return await fut
        except BaseException:  # cancelled (the client went away): a slot handed over goes on
            if fut.done() and not fut.cancelled() and fut.result():
                self.give()
            raise
        finally:
            self.waiting -= 1
            timer.cancel()

    def give(self) -> None:
        """Free a slot: hand it straight to the longest waiter still waiting, if any."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(True)
                return
        self.taken -= 1


class AsyncApp:
    """The request handler plus what the runtimes share with it (metrics, pool, limits)."""

    def __init__(self, settings: Settings, metrics_peers: MetricsPeers | None = None) -> None:
        self.settings = settings
        self.metrics_peers = metrics_peers
        self.pool: asyncpg.Pool | None = None
        self.closing = False
        self.metrics = Metrics(settings.model, enabled=settings.metrics, pool_stats=self.pool_stats)
        self.refused: set[object] = set()  # connections opened beyond LAB_MAX_CONNECTIONS
        self._slots = Slots(settings.max_inflight)
        self.in_use = 0  # connections lent to requests (dropped before release, so never > size)
        self.waiting = 0
        # Waits for a connection, by task, and their deadlines: one sweeper cancels the overdue ones.
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._last_db_log = 0.0
        # Header dicts per content type; aiohttp copies them into each response.
        self._headers = {
            ctype: self._headers_for(ctype)
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
            "metrics": self.render_metrics,
            "config": self.config,
        }

    def pool_stats(self) -> tuple[int, int, int]:
        return (self.settings.pool_size, self.in_use, self.waiting)

    # --- HTTP in and out ------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # One coroutine from request to response: every extra layer costs on each resume, and a
        # /db request resumes four times (measured against a bare handler: see lab/bench.py).
        metrics = self.metrics
        started = time.perf_counter() if metrics.enabled else 0.0
        name = None
        refused = False
        try:
            route = contract.route(request.method, request.path)
            name = route.name
            length = request.content_length
            limited = name not in contract.UNLIMITED
            if self.refused and request.protocol in self.refused and limited:  # probes still answer
                refused = True
                reply = self._connection_limit()
            elif length is not None and length > contract.MAX_BODY_BYTES:
                reply = contract.too_large(length)
            elif limited and not self._slots.try_take() and not await self._slots.take(
                self.settings.acquire_timeout
            ):
                metrics.reject("inflight_timeout")
                reply = contract.inflight_timeout(self.settings.max_inflight, self.settings.acquire_timeout)
            else:
                if limited:
                    metrics.active.add(id(request))
                try:
                    reply = await self._handlers[name](request, route)
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
        headers = self._headers.get(reply.content_type) or self._headers_for(reply.content_type)
        if reply.headers:
            headers = {**headers, **dict(reply.headers)}
        response = web.Response(body=reply.body, status=reply.status, headers=headers)
        if refused or reply.status == 413:  # 413: the unread body is not worth draining
            response.force_close()
        if started:
            metrics.record[name]((reply.status, time.perf_counter() - started))
        return response

    def _headers_for(self, content_type: str) -> dict[str, str]:
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
        self.pool = await asyncpg.create_pool(
            self.settings.database_url,
            min_size=0,
            max_size=self.settings.pool_size,
            max_inactive_connection_lifetime=0,
            server_settings={"application_name": self.settings.application_name},
            reset=_keep_session,
            timeout=self.settings.acquire_timeout,  # connect timeout (asyncpg's default: 60 s)
        )
        sweeper = asyncio.create_task(self._expire_waits())
        yield
        self.closing = True
        sweeper.cancel()
        try:
            await asyncio.wait_for(self.pool.close(), 5.0)
        except TimeoutError:
            log.warning("database pool did not close within 5 s; terminating its connections")
            self.pool.terminate()

    async def acquire(self) -> asyncpg.Connection:
        """A pooled connection, or a 503 once LAB_ACQUIRE_TIMEOUT passes (give or take SWEEP_SECONDS).

        Waits queue in asyncpg's own pool. Their deadline is enforced by one sweeper task rather
        than a timer per wait (asyncio.timeout, or a gate of our own): measured against a bare
        aiohttp + asyncpg handler, a per-wait timer and gate cost /db ~20 % of its throughput.
        """
        pool = self.pool
        if pool is None or self.closing:
            raise ContractError(contract.shutting_down())
        task = asyncio.current_task()
        assert task is not None
        self._deadlines[task] = asyncio.get_running_loop().time() + self.settings.acquire_timeout
        self.waiting += 1
        try:
            conn = await pool.acquire()
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            self._expired.discard(task)
            task.uncancel()
            self.metrics.reject("pool_timeout")
            raise ContractError(
                contract.pool_timeout(self.settings.pool_size, self.settings.acquire_timeout)
            ) from None
        finally:
            self.waiting -= 1
            self._deadlines.pop(task, None)
        self.in_use += 1
        return conn

    async def release(self, conn: asyncpg.Connection) -> None:
        self.in_use -= 1
        if self.pool is not None:
            await self.pool.release(conn)

    async def _expire_waits(self) -> None:
        """Cancel the waits for a connection that outlived their deadline (asyncpg's acquire is
        cancellation-safe: a holder handed to a cancelled wait goes back to the pool)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = loop.time()
            for task, deadline in list(self._deadlines.items()):
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()

    # --- endpoints ------------------------------------------------------------------------

    async def json(self, request: web.Request, route: Route) -> Reply:
        return _JSON_REPLY

    async def plaintext(self, request: web.Request, route: Route) -> Reply:
        return _TEXT_REPLY

    async def db(self, request: web.Request, route: Route) -> Reply:
        conn = await self.acquire()
        try:
            row = await conn.fetchrow(contract.SQL_WORLD, contract.random_id())
        finally:
            await self.release(conn)
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

    async def queries(self, request: web.Request, route: Route) -> Reply:
        ids = contract.random_ids(contract.clamp_queries(request.query.get("queries")))
        conn = await self.acquire()
        try:
            rows = await self._read_worlds(conn, ids)
        finally:
            await self.release(conn)
        return contract.world_reply(None) if rows is None else contract.worlds_reply(rows)

    async def updates(self, request: web.Request, route: Route) -> Reply:
        n = contract.clamp_queries(request.query.get("queries"))
        ids = contract.random_ids(n, distinct=True)
        numbers = contract.new_numbers(n)
        changed = list(zip(ids, numbers, strict=True))
        conn = await self.acquire()
        try:
            if await self._read_worlds(conn, ids) is None:
                return contract.world_reply(None)
            async with conn.transaction():
                await conn.executemany(contract.SQL_UPDATE_WORLD, contract.update_params(changed))
        finally:
            await self.release(conn)
        return contract.worlds_reply(changed)

    async def fortunes(self, request: web.Request, route: Route) -> Reply:
        conn = await self.acquire()
        try:
            rows = await conn.fetch(contract.SQL_FORTUNES)
        finally:
            await self.release(conn)
        return contract.fortunes_reply(rows)

    async def io(self, request: web.Request, route: Route) -> Reply:
        ms = contract.int_param("ms", request.query.get("ms"), contract.IO_MS)
        await asyncio.sleep(ms / 1000.0)
        return contract.io_reply(ms)

    async def cpu(self, request: web.Request, route: Route) -> Reply:
        # Inline on purpose: it blocks the loop, which is what this endpoint exposes.
        return contract.cpu_reply(contract.int_param("n", request.query.get("n"), contract.CPU_N))

    async def hold(self, request: web.Request, route: Route) -> Reply:
        ms = contract.int_param("ms", request.query.get("ms"), contract.HOLD_MS)
        conn = await self.acquire()
        try:
            await conn.execute(contract.SQL_HOLD, ms / 1000.0)
        finally:
            await self.release(conn)
        return contract.hold_reply(ms)

    async def create_order(self, request: web.Request, route: Route) -> Reply:
        order = contract.parse_order(await _read_body(request))
        key = contract.parse_idempotency_key(request.headers.get("Idempotency-Key"))
        conn = await self.acquire()
        try:
            for _attempt in range(2):  # a replayed key's row can only vanish if deleted meanwhile
                row = await conn.fetchrow(contract.SQL_INSERT_ORDER, order.item, order.qty, key)
                if row is not None:  # committed: outside a transaction each statement commits
                    return contract.order_created_reply(row, replayed=False)
                row = await conn.fetchrow(contract.SQL_ORDER_BY_KEY, key)
                if row is not None:
                    return contract.order_created_reply(row, replayed=True)
        finally:
            await self.release(conn)
        raise RuntimeError(f"order with Idempotency-Key {key!r} neither inserted nor found")

    async def get_order(self, request: web.Request, route: Route) -> Reply:
        order_id = contract.parse_order_id(route.arg)
        conn = await self.acquire()
        try:
            row = await conn.fetchrow(contract.SQL_ORDER_BY_ID, order_id)
        finally:
            await self.release(conn)
        return contract.order_reply(row, order_id)

    async def health(self, request: web.Request, route: Route) -> Reply:
        conn = await self.acquire()
        try:
            await conn.fetchval(contract.SQL_HEALTH)
        finally:
            await self.release(conn)
        return contract.health_reply()

    async def render_metrics(self, request: web.Request, route: Route) -> Reply:
        others = self.metrics_peers() if self.metrics_peers is not None else ()
        return Reply(200, self.metrics.render(others).encode(), METRICS_TYPE)

    async def config(self, request: web.Request, route: Route) -> Reply:
        return contract.config_reply({**self.settings.public(), "pid": os.getpid()})


async def _read_body(request: web.Request) -> bytes:
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


async def _expect_continue(request: web.Request) -> None:
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


APP_KEY = web.AppKey("serverlab_app", AsyncApp)


def make_app(settings: Settings, metrics_peers: MetricsPeers | None = None) -> web.Application:
    """The aiohttp application; `app_state(app)` gives its metrics and pool to the runtimes."""
    state = AsyncApp(settings, metrics_peers)
    app = web.Application(client_max_size=contract.MAX_BODY_BYTES + 1)
    app[APP_KEY] = state
    # Exact paths resolve by a dict lookup; the catch-all (a regex) takes the rest, so that every
    # path, known or not, reaches contract.route and its 404/405.
    for path, _methods in contract.ROUTES.values():
        if "{" not in path:
            app.router.add_route("*", path, state.handle, expect_handler=_expect_continue)
    app.router.add_route("*", "/{path:.*}", state.handle, expect_handler=_expect_continue)
    app.cleanup_ctx.append(state.pool_ctx)
    return app


def app_state(app: web.Application) -> AsyncApp:
    return app[APP_KEY]


def attach_connection_counter(app: web.Application, server: web_server.Server) -> None:
    """Count open client connections in metrics; mark those beyond LAB_MAX_CONNECTIONS.

    aiohttp has no public connection hook, so this wraps the two methods each connection's
    RequestHandler calls on its server. A marked connection's requests get a 503 and close.
    """
    state = app_state(app)
    metrics, limit, refused = state.metrics, state.settings.max_connections, state.refused
    made, lost = server.connection_made, server.connection_lost

    def connection_made(handler: Any, transport: asyncio.Transport) -> None:
        made(handler, transport)
        metrics.add_connection(1)
        if metrics.connections > limit:
            refused.add(handler)

    def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
        lost(handler, exc)
        metrics.add_connection(-1)
        refused.discard(handler)

    server.connection_made = connection_made  # type: ignore[method-assign]
    server.connection_lost = connection_lost  # type: ignore[method-assign]
