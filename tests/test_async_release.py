"""The async servers' pool release after a cancelled request, against the real database: the
session must not stay inside asyncpg's half-finished prepare (an open transaction, 'active' in
pg_stat_activity) while the pool idles."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from servers.async_app import AsyncApp
from servers.async_lease import Lease
from servers.settings import Settings

pytestmark = pytest.mark.integration

APP_NAME = "test-async-release"


async def _released_after_prepare(database_url: str, cancelled: bool) -> Any:
    app = AsyncApp(Settings(model="asyncio", database_url=database_url, app_name=APP_NAME))
    monitor = await asyncpg.connect(database_url)
    try:
        ctx = app.pool_ctx(None)  # type: ignore[arg-type]
        await ctx.__anext__()
        try:
            held = asyncio.Event()
            pids: list[int] = []

            async def request() -> None:
                async with Lease(app) as conn:  # as every handler holds its connection
                    pids.append(conn.get_server_pid())
                    # What asyncpg sends before a new statement's first execute: Parse, Describe and
                    # Flush, no Sync. A request cancelled right here leaves the session mid-exchange.
                    await conn.prepare("SELECT pg_sleep($1)")
                    held.set()
                    await asyncio.sleep(10)

            task = asyncio.create_task(request())
            await asyncio.wait_for(held.wait(), 5)
            if cancelled:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            await asyncio.sleep(0.05)
            row = await monitor.fetchrow(
                "SELECT state, xact_start IS NOT NULL AS in_xact FROM pg_stat_activity WHERE pid = $1",
                pids[0],
            )
            if not cancelled:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            return row
        finally:
            with pytest.raises(StopAsyncIteration):
                await ctx.__anext__()
    finally:
        await monitor.close()


def test_a_half_prepared_session_is_what_the_probe_sees(database_url: str) -> None:
    # The check below could not fail if the monitor query never saw the state it guards against.
    row = asyncio.run(_released_after_prepare(database_url, cancelled=False))
    assert row["state"] == "active" and row["in_xact"], dict(row)


def test_a_cancelled_request_leaves_its_session_idle(database_url: str) -> None:
    row = asyncio.run(_released_after_prepare(database_url, cancelled=True))
    assert row["state"] == "idle" and not row["in_xact"], dict(row)
