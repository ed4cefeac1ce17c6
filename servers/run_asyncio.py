"""The `asyncio` server: one process, one event loop (uvloop when installed), the async app.

`run_app` is shared with `multiproc`, whose workers pass the socket they inherited.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable

from aiohttp import web

from servers.async_app import make_app, serve_directly
from servers.async_connections import attach_connection_hooks
from servers.settings import Settings

log = logging.getLogger("serverlab")

BACKLOG = 1024
SHUTDOWN_TIMEOUT = 5.0  # seconds in-flight requests get to finish after SIGTERM


def loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when wanted and installed, else None (asyncio's default); logs which."""
    if settings.uvloop:
        try:
            import uvloop
        except ImportError:
            log.info("event loop: asyncio (uvloop is not installed)")
            return None
        log.info("event loop: uvloop %s", uvloop.__version__)
        return uvloop.new_event_loop
    log.info("event loop: asyncio (LAB_UVLOOP=0)")
    return None


async def run_app(app: web.Application, settings: Settings, sock: socket.socket | None = None) -> None:
    """Serve `app` until SIGTERM or SIGINT, then shut down gracefully (bounded)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # handler_cancellation: a request whose client hangs up is cancelled (its query with it).
    # LAB_ABLATE=cancel (make bench --ablation only): aiohttp's default, a request runs on alone.
    cancellation = not settings.off("cancel")
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT,
                           handler_cancellation=cancellation,
                           keepalive_timeout=settings.keepalive_timeout)
    await runner.setup()
    sweeper = None
    try:
        assert runner.server is not None  # set by setup()
        serve_directly(app, runner.server)
        sweeper = attach_connection_hooks(app, runner.server)
        site: web.BaseSite
        if sock is None:
            site = web.TCPSite(
                runner, settings.host, settings.port, backlog=BACKLOG, reuse_address=True
            )
        else:
            site = web.SockSite(runner, sock, backlog=BACKLOG)
        await site.start()
        log.info("listening on http://%s:%d", settings.host, settings.port)
        await stop.wait()
        log.info("shutting down: waiting up to %g s for requests in flight", SHUTDOWN_TIMEOUT)
    finally:
        await runner.cleanup()
        if sweeper is not None:
            sweeper.cancel()
    log.info("stopped")


def serve(settings: Settings) -> None:
    try:
        with asyncio.Runner(loop_factory=loop_factory(settings)) as runner:
            runner.run(run_app(make_app(settings), settings))
    except OSError as exc:  # typically the port is taken
        log.error("cannot listen on %s:%d: %s; choose another --port (LAB_PORT)",
                  settings.host, settings.port, exc)
        sys.exit(1)
