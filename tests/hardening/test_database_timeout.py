"""Database work inside a request is bounded by DATABASE_STATEMENT_TIMEOUT.

The app's pooled connection goes silent (a kit fault proxy blackholes PostgreSQL): the request
that picks it up gets a clean 503 within about the bound, not when the network comes back.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from pixsim7_testing.apps import started
from sqlalchemy import text

pytestmark = pytest.mark.integration

STATEMENT_TIMEOUT = 1.0


async def test_a_silent_pooled_connection_gives_a_503_within_the_statement_timeout(
    app_factory, make_settings, fault_proxy
) -> None:
    proxy = fault_proxy("postgres")
    running = await started(app_factory, make_settings(
        database_proxy=proxy, database_statement_timeout=STATEMENT_TIMEOUT,
        database_connect_timeout=5.0))
    assert (await running.get("/api/v1/presets")).status_code == 200
    proxy.blackhole()
    try:
        began = time.monotonic()
        async with asyncio.timeout(STATEMENT_TIMEOUT + 15):  # unbounded, it waits for restore()
            listed = await running.get("/api/v1/presets")
        took = time.monotonic() - began
    finally:
        proxy.restore()
    assert listed.status_code == 503, listed.text
    assert listed.headers["Retry-After"]
    # The pre-ping on the silent connection, then its rollback: each bounded by the setting.
    assert took < 2 * STATEMENT_TIMEOUT + 1.0, took


async def test_a_slow_statement_is_cancelled_at_the_timeout(app_factory, make_settings) -> None:
    running = await started(app_factory, make_settings(database_statement_timeout=0.5))
    db = running.app.state.db
    began = time.monotonic()
    with pytest.raises(Exception) as failed:
        async with db.session() as session:
            await session.execute(text("SELECT pg_sleep(5)"))
    assert time.monotonic() - began < 2.0
    assert "timeout" in type(failed.value).__name__.lower() + str(failed.value).lower()
