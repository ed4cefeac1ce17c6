"""The asyncio peer of `make bench`: a plain aiohttp app over an asyncpg pool, as its users write it.

Routes by aiohttp's router, one asyncpg pool (asyncpg's defaults, its reset query on release
included) whose acquire times out (503), PostgreSQL's statement_timeout on every session and
asyncpg's command_timeout, run by web.run_app with aiohttp's defaults (keep-alive timeout 75 s) and
no access log; uvloop as the event loop when installed, as the lab's asyncio server uses it. The
same app, as `gunicorn_app`, is what the multiproc peer (lab/bench/peer_gunicorn.py) serves. Bodies
and SQL are servers.contract's. A benchmark reference only.
`python -m lab.bench.peer_aiohttp --port N --database-url URL [--pool-size N]`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from lab.bench import bare_cli
from servers import contract
from servers.contract import Reply

ACQUIRE_TIMEOUT = 1.0  # seconds a request waits for a pool connection (as the servers' default)
STATEMENT_TIMEOUT = 30.0  # seconds (as the servers' default)
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
POOL = web.AppKey("pool", asyncpg.Pool)
# the multiproc peer's settings: gunicorn imports the app, so they come through the environment
ENV_URL, ENV_POOL = "SERVERLAB_PEER_DATABASE_URL", "SERVERLAB_PEER_POOL_SIZE"


def respond(reply: Reply) -> web.Response:
    return web.Response(body=reply.body, status=reply.status,
                        headers={"Content-Type": reply.content_type, **dict(reply.headers)})


def make_app(database_url: str, pool_size: int, name: str = "serverlab-peer-aiohttp") -> web.Application:
    app = web.Application()

    async def pool_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app[POOL] = await asyncpg.create_pool(
            database_url, min_size=1, max_size=pool_size, command_timeout=STATEMENT_TIMEOUT + 1,
            server_settings={"application_name": name,
                             "statement_timeout": str(round(STATEMENT_TIMEOUT * 1000))})
        yield
        await app[POOL].close()

    def with_conn(work: Callable[[asyncpg.Connection, web.Request], Awaitable[Reply]]) -> Callable[
            [web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            try:
                async with app[POOL].acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                    reply = await work(conn, request)
            except contract.ContractError as exc:  # bad input, e.g. ?queries=x
                reply = exc.reply
            except TimeoutError:
                reply = contract.pool_timeout(pool_size, ACQUIRE_TIMEOUT)
            except DB_ERRORS as exc:
                reply = contract.database_error(exc)
            return respond(reply)
        return handler

    async def db(conn: asyncpg.Connection, request: web.Request) -> Reply:
        return contract.world_reply(await conn.fetchrow(contract.SQL_WORLD, contract.random_id()))

    async def queries(conn: asyncpg.Connection, request: web.Request) -> Reply:
        rows = []
        for world_id in contract.random_ids(contract.clamp_queries(request.query.get("queries"))):
            row = await conn.fetchrow(contract.SQL_WORLD, world_id)
            if row is None:
                return contract.world_reply(None)
            rows.append(row)
        return contract.worlds_reply(rows)

    async def fortunes(conn: asyncpg.Connection, request: web.Request) -> Reply:
        return contract.fortunes_reply(await conn.fetch(contract.SQL_FORTUNES))

    async def json(request: web.Request) -> web.Response:
        return respond(Reply(200, contract.JSON_BODY))

    async def health(request: web.Request) -> web.Response:
        return respond(contract.health_reply())

    async def ready(request: web.Request) -> web.Response:
        return respond(contract.ready_reply())  # the pool opened a session before requests were taken

    app.cleanup_ctx.append(pool_ctx)
    app.router.add_get("/json", json)
    app.router.add_get("/db", with_conn(db))
    app.router.add_get("/queries", with_conn(queries))
    app.router.add_get("/fortunes", with_conn(fortunes))
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    return app


async def gunicorn_app() -> web.Application:
    """The multiproc peer's app: gunicorn's aiohttp worker awaits this in each worker."""
    return make_app(os.environ[ENV_URL], int(os.environ.get(ENV_POOL) or 10), "serverlab-peer-gunicorn")


def main() -> None:
    args = bare_cli.parse_args(__doc__)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    web.run_app(make_app(args.database_url, args.pool_size), host=args.host, port=args.port,
                access_log=None, print=None, backlog=1024)


if __name__ == "__main__":
    main()
