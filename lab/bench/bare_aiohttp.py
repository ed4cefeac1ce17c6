"""The asyncio stack's reference for `make bench`: a bare aiohttp + asyncpg app.

/json, /db, /queries, /fortunes, /health and /ready with the servers' SQL and bodies
(servers.contract), on asyncpg's own pool. No contract limits, no metrics: the floor of
per-request overhead that the asyncio (and multiproc) server is measured against.
`python -m lab.bench.bare_aiohttp --port N --database-url URL`.
"""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp import web

from lab.bench import bare_cli
from servers import contract
from servers.contract import Reply

_HEADERS = {contract.JSON: {"Content-Type": contract.JSON}, contract.HTML: {"Content-Type": contract.HTML}}
_JSON_REPLY = Reply(200, contract.JSON_BODY)
_HEALTH = contract.health_reply()
_READY = contract.ready_reply()


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Like for like: the asyncio server's pool also skips asyncpg's per-release reset query."""


def make_app(database_url: str, pool_size: int) -> web.Application:
    app = web.Application()

    async def open_pool(app: web.Application) -> None:
        app["pool"] = await asyncpg.create_pool(
            database_url,
            min_size=pool_size,
            max_size=pool_size,
            server_settings={"application_name": "serverlab-bare-aiohttp"},
            reset=_no_reset,
        )

    async def close_pool(app: web.Application) -> None:
        await app["pool"].close()

    def respond(reply: Reply) -> web.Response:
        return web.Response(body=reply.body, status=reply.status, headers=_HEADERS[reply.content_type])

    async def json(request: web.Request) -> web.Response:
        return respond(_JSON_REPLY)

    async def db(request: web.Request) -> web.Response:
        async with app["pool"].acquire() as conn:
            row = await conn.fetchrow(contract.SQL_WORLD, contract.random_id())
        return respond(contract.world_reply(row))

    async def queries(request: web.Request) -> web.Response:
        ids = contract.random_ids(contract.clamp_queries(request.query.get("queries")))
        rows = []
        async with app["pool"].acquire() as conn:
            for world_id in ids:
                row = await conn.fetchrow(contract.SQL_WORLD, world_id)
                if row is None:
                    return respond(contract.world_reply(None))
                rows.append(row)
        return respond(contract.worlds_reply(rows))

    async def fortunes(request: web.Request) -> web.Response:
        async with app["pool"].acquire() as conn:
            rows = await conn.fetch(contract.SQL_FORTUNES)
        return respond(contract.fortunes_reply(rows))

    async def health(request: web.Request) -> web.Response:
        return respond(_HEALTH)

    async def ready(request: web.Request) -> web.Response:
        return respond(_READY)  # the pool opened its connections before the app took requests

    app.on_startup.append(open_pool)
    app.on_cleanup.append(close_pool)
    app.router.add_get("/json", json)
    app.router.add_get("/db", db)
    app.router.add_get("/queries", queries)
    app.router.add_get("/fortunes", fortunes)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)  # what the lab waits for at start
    return app


def main() -> None:
    args = bare_cli.parse_args(__doc__)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    web.run_app(
        make_app(args.database_url, args.pool_size),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
