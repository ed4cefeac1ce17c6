"""The async app's connection hooks: the connection count and cap, JSON for unparseable HTTP, deadlines."""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web, web_protocol, web_server

from servers import contract
from servers.async_app import AsyncApp, app_state
from servers.deadlines import SWEEP_SECONDS as DEADLINE_SWEEP

log = logging.getLogger("serverlab")


def json_errors_handler(state: AsyncApp, timed: bool = True) -> type[web_protocol.RequestHandler]:
    """aiohttp's per-connection protocol, except that HTTP it cannot parse gets the JSON 400 the
    sync servers send, not aiohttp's text page, and is logged at debug rather than as an error
    with a traceback; and that arriving bytes start the receive deadline. RequestHandler has
    __slots__, so attach_connection_hooks switches each new connection to this class rather than
    setting an attribute."""
    wake = state.deadlines.wake
    receive = web_protocol.RequestHandler.data_received  # called directly: no super() per read

    class JsonErrorsHandler(web_protocol.RequestHandler):
        __slots__ = ()

        def data_received(self, data: bytes) -> None:
            wake(self)  # an idle connection starts receiving; others are left be
            receive(self, data)

        def handle_error(self, request: web.BaseRequest, status: int = 500,
                         exc: BaseException | None = None, message: str | None = None) -> web.StreamResponse:
            if request.writer.output_size > 0:  # as aiohttp's own: too late for another response
                raise ConnectionError("the response was already started; cannot send an error reply")
            if status >= 500:
                log.error("error handling a request from %s", request.remote, exc_info=exc)
                reply = contract.internal()
            else:
                log.debug("invalid request from %s: %s", request.remote, exc or message)
                detail = " ".join(str(message or exc or HTTPStatus(status).phrase).split())[:200]
                reply = contract.malformed_http(detail, status)
            state.metrics.observe(None, reply.status, 0.0)
            headers = state.headers_for(reply.content_type)
            response = web.Response(body=reply.body, status=reply.status, headers=headers)
            response.force_close()
            return response

    if timed:
        return JsonErrorsHandler

    class UntimedHandler(JsonErrorsHandler):
        """Lab only (LAB_ABLATE=deadline): arriving bytes start no deadline."""

        __slots__ = ()
        data_received = web_protocol.RequestHandler.data_received

    return UntimedHandler


def attach_connection_hooks(app: web.Application, server: web_server.Server) -> asyncio.Task[None]:
    """Count open client connections in metrics; at LAB_MAX_CONNECTIONS close the longest-receiving
    (else longest idle) connection, or mark the newcomer when all run requests; answer HTTP that
    cannot be parsed in JSON (json_errors_handler); enforce the receive deadline and the
    keep-alive idle timeout (a sweeper task, returned).

    aiohttp has no public connection hook, so this wraps the two methods each connection's
    RequestHandler calls on its server (and the protocol's data_received, above). A marked
    connection's requests get a 503 and close.
    """
    state = app_state(app)
    metrics, limit, refused = state.metrics, state.settings.max_connections, state.refused
    deadlines = state.deadlines
    made, lost = server.connection_made, server.connection_lost
    json_errors = json_errors_handler(state, state.timed)
    server_name = contract.server_header(state.settings.model)

    def end(handler: Any, late: bool) -> None:
        transport = handler.transport
        if transport is None:
            return
        if late:
            metrics.reject("request_timeout")
            reply = contract.request_timeout(state.settings.request_timeout)
            transport.write(contract.raw_response(reply, server_name, contract.http_date()))
        transport.close()

    def connection_made(handler: Any, transport: asyncio.Transport) -> None:
        made(handler, transport)
        handler.__class__ = json_errors
        metrics.add_connection(1)
        if state.capped and metrics.connections > limit:
            found = deadlines.victim()
            if found is None:
                refused.add(handler)
            else:
                end(*found)
        deadlines.receiving(handler)  # the first request's deadline runs from the connection's start

    def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
        lost(handler, exc)
        metrics.add_connection(-1)
        refused.discard(handler)
        deadlines.forget(handler)

    async def sweep() -> None:
        while True:
            await asyncio.sleep(DEADLINE_SWEEP)
            late, expired = deadlines.overdue()
            for handler in late:
                end(handler, True)
            for handler in expired:
                end(handler, False)

    server.connection_made = connection_made  # type: ignore[method-assign]
    server.connection_lost = connection_lost  # type: ignore[method-assign]
    return asyncio.get_running_loop().create_task(sweep() if state.timed else asyncio.sleep(0))
