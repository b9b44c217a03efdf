"""Redis connection status, bounded pings and URL handling against the testing kit's server."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from pixsim7_testing.isolation import RedisNamespace
from pixsim7_testing.proxy import FaultProxy

from pixsim7.backend.main.infrastructure.adapters.embedded import free_port
from pixsim7.backend.main.infrastructure.adapters.redis import (
    RedisConfigError,
    close_redis,
    connect_redis,
    ping_redis,
    safe_redis_url,
)

pytestmark = pytest.mark.integration


async def test_real_server_is_available(redis_namespace: RedisNamespace) -> None:
    status = await connect_redis(redis_namespace.url, timeout=2)
    assert status.available and status.error is None
    assert status.client is not None
    key = f"{redis_namespace.prefix}k"  # the fixture deletes every key under its prefix
    try:
        await status.client.set(key, "v", ex=60)
        assert await status.client.get(key) == b"v"
        assert await ping_redis(status.client, 1.0)
    finally:
        await close_redis(status.client)


async def test_closed_port_is_unavailable_but_keeps_the_client() -> None:
    started = time.monotonic()
    status = await connect_redis(f"redis://127.0.0.1:{free_port()}/0", timeout=1.0)
    try:
        assert time.monotonic() - started < 1.5
        assert not status.available
        assert status.client is not None
        assert status.error == "ConnectionError"
        assert not await ping_redis(status.client, 0.5)
    finally:
        await close_redis(status.client)


async def test_silent_server_is_bounded_and_the_client_recovers(
    redis_namespace: RedisNamespace, fault_proxy: Callable[[str], FaultProxy]
) -> None:
    proxy = fault_proxy("redis")
    proxy.blackhole()
    started = time.monotonic()
    status = await connect_redis(proxy.rewrite_url(redis_namespace.url), timeout=0.5)
    try:
        assert time.monotonic() - started < 1.0
        assert not status.available and status.error is not None

        started = time.monotonic()
        assert not await ping_redis(status.client, 0.3)
        assert time.monotonic() - started < 0.8

        proxy.restore()
        assert await ping_redis(status.client, 2.0)
    finally:
        await close_redis(status.client)


async def test_ping_without_client_is_false() -> None:
    assert await ping_redis(None, 0.1) is False
    await close_redis(None)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "REDIS_URL is empty"),
        ("http://:s3cret@127.0.0.1:6379/0", "REDIS_URL uses the scheme 'http'"),
        ("127.0.0.1:6379", "REDIS_URL uses the scheme"),
        ("redis://:s3cret@127.0.0.1:port/0", "REDIS_URL is not a valid URL"),
        ("redis://:s3cret@/0", "REDIS_URL has no host"),
        ("redis://:s3cret@127.0.0.1:6379/notadb", "REDIS_URL names database 'notadb'"),
        ("redis://:s3cret@127.0.0.1:6379/0?ssl_cert_reqs=maybe", "REDIS_URL has an invalid"),
    ],
)
async def test_bad_urls_name_redis_url_without_the_password(url: str, problem: str) -> None:
    with pytest.raises(RedisConfigError, match=problem) as info:
        await connect_redis(url, timeout=1)
    assert "s3cret" not in str(info.value)


def test_safe_redis_url() -> None:
    assert safe_redis_url("redis://:s3cret@cache:6380/2") == "redis://:***@cache:6380/2"
    assert safe_redis_url("rediss://app:s3cret@cache/0") == "rediss://app:***@cache/0"
    assert safe_redis_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert "s3cret" not in safe_redis_url("redis://:s3cret@cache:port/0")
