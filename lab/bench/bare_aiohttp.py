"""The reference for `make bench`: a bare aiohttp + asyncpg handler doing /db's query.

No contract, no limits, no metrics: the floor of per-request overhead that the asyncio
server is measured against. `python -m lab.bench.bare_aiohttp --port N --database-url URL`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random

import asyncpg
from aiohttp import web

from servers.contract import SQL_WORLD


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Like for like: the asyncio server's pool also skips asyncpg's per-release reset query."""


def make_app(database_url: str, pool_size: int) -> web.Application:
    app = web.Application()

    async def open_pool(app: web.Application) -> None:
        app["pool"] = await asyncpg.create_pool(
            database_url,
            min_size=pool_size,
            max_size=pool_size,
            server_settings={"application_name": "serverlab-bare"},
            reset=_no_reset,
        )

    async def close_pool(app: web.Application) -> None:
        await app["pool"].close()

    async def db(request: web.Request) -> web.Response:
        async with app["pool"].acquire() as conn:
            row = await conn.fetchrow(SQL_WORLD, random.randint(1, 10000))
        body = json.dumps({"id": row[0], "randomNumber": row[1]}, separators=(",", ":"))
        return web.Response(body=body.encode(), content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.on_startup.append(open_pool)
    app.on_cleanup.append(close_pool)
    app.router.add_get("/db", db)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", health)  # what the lab waits for at start
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--pool-size", type=int, default=10)
    args = parser.parse_args()
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
