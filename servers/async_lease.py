"""The async app's session per request (Lease), its pool reset hook, and which errors lose a session."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from servers.async_app import AsyncApp

# Errors that mean "the database is unreachable or broken", answered 503 rather than 500.
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)
# Of those, the ones where a session that worked was lost: a read may run once more on a new one.
# (InternalClientError: "cannot switch to state ...", asyncpg's protocol on a session ended mid-query.)
LOST = (asyncpg.ConnectionDoesNotExistError, asyncpg.AdminShutdownError, asyncpg.ConnectionFailureError,
        asyncpg.InterfaceError, asyncpg.InternalClientError, ConnectionResetError, BrokenPipeError)


async def keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook: asyncpg already rolls back an open transaction before calling it.

    The app never changes session state (no SET, LISTEN, advisory locks or cursors), so the
    default reset query (RESET ALL, UNLISTEN *, ...) would only cost a round trip per request.
    """


class Lease:
    """`async with Lease(app) as conn`: a pooled connection for one request, given back after.

    How the request ended decides what the session needs first:
    - a statement that got no answer (asyncpg's command_timeout) leaves asyncpg waiting for a cancel
      that an unreachable database never confirms: the session is dropped instead of given back;
    - a cancelled request (the client hung up, or a timeout fired) may have stopped between asyncpg's
      prepare (Parse, Describe and Flush, but no Sync) and its execute, leaving the session in an
      implicit transaction, 'active' in pg_stat_activity, until the connection's next use: on an
      idle pool, never. One simple query ends it (after asyncpg has finished cancelling a running
      query); a session that fails it is dropped.
    """

    __slots__ = ("app", "conn")

    def __init__(self, app: AsyncApp) -> None:
        self.app = app

    async def __aenter__(self) -> asyncpg.Connection:
        self.conn = await self.app.acquire()
        return self.conn

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if kind is TimeoutError:
            self.conn.terminate()
        elif kind is asyncio.CancelledError:
            try:
                await self.conn.execute("SELECT 1", timeout=self.app.settings.acquire_timeout)
            except Exception:  # a broken connection: the pool replaces a closed one
                self.conn.terminate()
        await self.app.release(self.conn)
