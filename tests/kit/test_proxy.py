"""FaultProxy in front of the session's real PostgreSQL and Redis servers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
import redis
import redis.asyncio as aioredis
from pixsim7_testing.polling import wait_until_async
from pixsim7_testing.proxy import FaultProxy
from pixsim7_testing.services import ServiceSet
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

pytestmark = pytest.mark.integration


# The session's servers, whichever backend the kit chose; set for each test by `_servers`.
PG_HOST, PG_PORT, PG_URL = "", 0, ""
REDIS_HOST, REDIS_PORT, REDIS_URL = "", 0, ""


@pytest.fixture(autouse=True)
def _servers(kit_services: ServiceSet) -> None:
    global PG_HOST, PG_PORT, PG_URL, REDIS_HOST, REDIS_PORT, REDIS_URL
    PG_HOST, PG_PORT = kit_services.postgres.host, kit_services.postgres.port
    PG_URL = kit_services.postgres.url()
    REDIS_HOST, REDIS_PORT = kit_services.redis.host, kit_services.redis.port
    REDIS_URL = kit_services.redis.url()


@pytest.fixture
def pg_proxy(fault_proxy: Callable[[str], FaultProxy]) -> FaultProxy:
    return fault_proxy("postgres")


@pytest.fixture
def redis_proxy(fault_proxy: Callable[[str], FaultProxy]) -> FaultProxy:
    return fault_proxy("redis")


async def _pg_connect(proxy: FaultProxy, timeout: float = 2.0) -> asyncpg.Connection:
    return await asyncpg.connect(proxy.rewrite_url(PG_URL), timeout=timeout)


def _redis_kwargs(*, sync: bool = False) -> dict[str, object]:
    # No retries: a fault must surface as one error, not be papered over by reconnects.
    retry = Retry(NoBackoff(), 0) if sync else AsyncRetry(NoBackoff(), 0)
    return {"socket_timeout": 0.5, "socket_connect_timeout": 0.5, "retry": retry}


@pytest.fixture
async def aredis(redis_proxy: FaultProxy) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_proxy.rewrite_url(REDIS_URL), **_redis_kwargs(sync=True))
    yield client
    await client.aclose()


# asyncpg reports a connection dropped under it in several ways depending on timing.
PG_CLOSED_ERRORS = (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError)


async def test_pass_forwards_postgres(pg_proxy: FaultProxy) -> None:
    conn = await _pg_connect(pg_proxy)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert pg_proxy.mode == "pass"
        assert pg_proxy.connections == 1
    finally:
        await conn.close()
    await wait_until_async(lambda: pg_proxy.connections == 0, timeout=1.0, interval=0.01)


async def test_pass_forwards_redis(redis_proxy: FaultProxy, aredis: aioredis.Redis) -> None:
    key = f"pixsim7:test:proxy:{uuid.uuid4().hex}"
    try:
        assert await aredis.ping() is True
        await aredis.set(key, b"x" * 200_000)
        assert await aredis.get(key) == b"x" * 200_000
    finally:
        await aredis.delete(key)


async def test_proxy_serves_while_test_loop_is_blocked(redis_proxy: FaultProxy) -> None:
    # A blocking client on the test's loop thread: the proxy must not need that loop.
    client = redis.Redis.from_url(redis_proxy.rewrite_url(REDIS_URL), **_redis_kwargs(sync=True))
    try:
        assert client.ping() is True
    finally:
        client.close()


async def test_closed_connections_are_released(pg_proxy: FaultProxy) -> None:
    for _ in range(5):
        conn = await _pg_connect(pg_proxy)
        await conn.close()
    await wait_until_async(lambda: pg_proxy.connections == 0, timeout=1.0, interval=0.01)


async def test_cut_refuses_new_postgres_connections(pg_proxy: FaultProxy) -> None:
    pg_proxy.cut()
    assert pg_proxy.mode == "cut"
    started = time.monotonic()
    with pytest.raises(OSError):
        await _pg_connect(pg_proxy)
    assert time.monotonic() - started < 0.5
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((pg_proxy.host, pg_proxy.port), timeout=1).close()


async def test_cut_closes_open_postgres_connection(pg_proxy: FaultProxy) -> None:
    conn = await _pg_connect(pg_proxy)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        pg_proxy.cut()
        assert pg_proxy.connections == 0
        started = time.monotonic()
        with pytest.raises(PG_CLOSED_ERRORS):
            await asyncio.wait_for(conn.fetchval("SELECT 1"), 2)
        assert time.monotonic() - started < 0.5
    finally:
        conn.terminate()


async def test_cut_fails_redis(redis_proxy: FaultProxy, aredis: aioredis.Redis) -> None:
    assert await aredis.ping() is True
    redis_proxy.cut()
    started = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError):
        await aredis.ping()
    fresh = aioredis.Redis.from_url(redis_proxy.rewrite_url(REDIS_URL), **_redis_kwargs(sync=True))
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            await fresh.ping()
    finally:
        await fresh.aclose()
    assert time.monotonic() - started < 0.5


async def test_blackhole_times_out_postgres_connect(pg_proxy: FaultProxy) -> None:
    pg_proxy.blackhole()
    assert pg_proxy.mode == "blackhole"
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await _pg_connect(pg_proxy, timeout=0.5)
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 3


async def test_blackhole_silences_open_postgres_connection(pg_proxy: FaultProxy) -> None:
    conn = await _pg_connect(pg_proxy)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        pg_proxy.blackhole()
        assert pg_proxy.connections == 1, "blackhole keeps the connection open"
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(conn.fetchval("SELECT 1"), 0.5)
        assert 0.4 <= time.monotonic() - started < 3
    finally:
        conn.terminate()


async def test_blackhole_times_out_redis(redis_proxy: FaultProxy, aredis: aioredis.Redis) -> None:
    assert await aredis.ping() is True
    redis_proxy.blackhole()
    started = time.monotonic()
    with pytest.raises(redis.exceptions.TimeoutError):
        await aredis.ping()
    assert 0.4 <= time.monotonic() - started < 3

    fresh = aioredis.Redis.from_url(redis_proxy.rewrite_url(REDIS_URL), **_redis_kwargs())
    try:
        started = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            await fresh.ping()
        assert 0.4 <= time.monotonic() - started < 3
    finally:
        await fresh.aclose()


async def test_restore_after_cut_relistens_on_same_port(
    pg_proxy: FaultProxy, redis_proxy: FaultProxy, aredis: aioredis.Redis
) -> None:
    pg_port, redis_port = pg_proxy.port, redis_proxy.port
    conn = await _pg_connect(pg_proxy)
    conn.terminate()
    pg_proxy.cut()
    redis_proxy.cut()
    with pytest.raises(redis.exceptions.ConnectionError):
        await aredis.ping()

    pg_proxy.restore()
    redis_proxy.restore()
    assert (pg_proxy.mode, redis_proxy.mode) == ("pass", "pass")
    assert (pg_proxy.port, redis_proxy.port) == (pg_port, redis_port)
    conn = await _pg_connect(pg_proxy)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
    assert await aredis.ping() is True


async def test_restore_after_blackhole_forwards_and_drops_silenced(
    pg_proxy: FaultProxy, redis_proxy: FaultProxy, aredis: aioredis.Redis
) -> None:
    port = pg_proxy.port
    silenced = await _pg_connect(pg_proxy)
    assert await aredis.ping() is True
    pg_proxy.blackhole()
    redis_proxy.blackhole()
    # Opened during the blackhole: accepted, then never answered.
    with socket.create_connection((pg_proxy.host, pg_proxy.port), timeout=1) as raw:
        raw.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")  # SSLRequest
        await wait_until_async(lambda: pg_proxy.connections == 2, timeout=1.0, interval=0.01)
        pg_proxy.restore()
        # restore() closes connections that were silenced instead of resuming them.
        assert pg_proxy.connections == 0
        # FIN, or RST if the SSLRequest was still unread in the proxy's receive buffer.
        with contextlib.suppress(ConnectionResetError):
            assert raw.recv(1) == b""
    redis_proxy.restore()
    assert redis_proxy.connections == 0
    try:
        with pytest.raises(PG_CLOSED_ERRORS):
            await asyncio.wait_for(silenced.fetchval("SELECT 1"), 2)
    finally:
        silenced.terminate()

    assert (pg_proxy.port, pg_proxy.mode) == (port, "pass")
    conn = await _pg_connect(pg_proxy)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
    fresh = aioredis.Redis.from_url(redis_proxy.rewrite_url(REDIS_URL), **_redis_kwargs())
    try:
        assert await fresh.ping() is True
        assert redis_proxy.connections == 1
    finally:
        await fresh.aclose()


def test_rewrite_url_keeps_everything_but_the_address(pg_proxy: FaultProxy) -> None:
    addr = pg_proxy.address
    assert addr == f"127.0.0.1:{pg_proxy.port}"
    cases = {
        "postgresql://app:s%40cr%3At@db.internal:5432/pixsim7?sslmode=disable&application_name=t": (
            f"postgresql://app:s%40cr%3At@{addr}/pixsim7?sslmode=disable&application_name=t"
        ),
        "postgresql+asyncpg://postgres:pw@127.0.0.1:5432/postgres": (
            f"postgresql+asyncpg://postgres:pw@{addr}/postgres"
        ),
        "postgresql://postgres@localhost/postgres": f"postgresql://postgres@{addr}/postgres",
        "redis://:hunter2@127.0.0.1:6379/3": f"redis://:hunter2@{addr}/3",
        "redis://default:pw@[::1]:6379/0?protocol=3": f"redis://default:pw@{addr}/0?protocol=3",
        "redis://localhost:6379": f"redis://{addr}",
    }
    for url, expected in cases.items():
        assert pg_proxy.rewrite_url(url) == expected
    with pytest.raises(ValueError, match="bypass"):
        pg_proxy.rewrite_url("postgresql://postgres@db/postgres?host=/tmp")
    with pytest.raises(ValueError, match="no host"):
        pg_proxy.rewrite_url("postgresql:///postgres")


async def test_stop_closes_everything_and_refuses_later(pg_proxy: FaultProxy) -> None:
    conn = await _pg_connect(pg_proxy)
    other = await _pg_connect(pg_proxy)
    try:
        pg_proxy.blackhole()
        assert pg_proxy.connections == 2
        pg_proxy.stop()
        assert pg_proxy.connections == 0
        for open_conn in (conn, other):
            with pytest.raises(PG_CLOSED_ERRORS):
                await asyncio.wait_for(open_conn.fetchval("SELECT 1"), 2)
        with pytest.raises(OSError):
            await _pg_connect(pg_proxy)
        pg_proxy.stop()  # idempotent
        with pytest.raises(RuntimeError):
            pg_proxy.cut()
    finally:
        conn.terminate()
        other.terminate()


def test_context_manager_and_lifecycle() -> None:
    proxy = FaultProxy(PG_HOST, PG_PORT, name="lifecycle")
    with pytest.raises(RuntimeError):
        _ = proxy.port
    with proxy as started:
        assert started is proxy
        assert proxy.mode == "pass"
        assert proxy.host == "127.0.0.1"
        socket.create_connection((proxy.host, proxy.port), timeout=1).close()
        assert "lifecycle" in repr(proxy)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((proxy.host, proxy.port), timeout=1).close()
    with pytest.raises(RuntimeError):
        proxy.start()
