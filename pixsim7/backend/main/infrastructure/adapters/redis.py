"""Redis client construction and bounded health checks."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import redis
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

try:
    from redis.driver_info import DriverInfo
except ImportError:
    DriverInfo = None  # type: ignore[assignment,misc]

__all__ = [
    "REDIS_DOWN",
    "RedisConfigError",
    "RedisStatus",
    "close_redis",
    "client_identity",
    "connect_redis",
    "ping_redis",
    "safe_redis_url",
]

logger = logging.getLogger(__name__)

# What Redis going away looks like from redis-py: its own classes (not the builtin ones) and a
# socket's OSError, which covers the builtin TimeoutError of a bounded wait (asyncio.timeout).
REDIS_DOWN: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

_SCHEMES = ("redis", "rediss", "unix")
_EXPECTED_FORM = "redis://[:password@]host:port/db"


class RedisConfigError(ValueError):
    """REDIS_URL cannot be used; the message says what to change (never the password)."""


@dataclass
class RedisStatus:
    """A Redis client and whether it answered last; `error` is the failure's class name only.

    An app keeps one as `app.state.redis`; `client` is None when REDIS_URL is unset.
    """

    client: Redis | None
    available: bool
    error: str | None = None

    @property
    def configured(self) -> bool:
        return self.client is not None

    def mark(self, error: str | None) -> None:
        """Record how the latest command to Redis went (None: it answered)."""
        self.available, self.error = self.configured and error is None, error

    async def refresh(self, timeout: float) -> bool:
        """PING within `timeout` seconds and record the answer; never raises."""
        self.mark(await _probe(self.client, timeout) if self.client is not None else None)
        return self.available

    def summary(self) -> dict[str, bool | str | None]:
        return {"configured": self.configured, "available": self.available, "error": self.error}


def _split(url: str) -> SplitResult:
    if not isinstance(url, str) or not url.strip():
        raise RedisConfigError(f"REDIS_URL is empty; set it to {_EXPECTED_FORM}")
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - a non-numeric port only fails when read
    except ValueError:
        raise RedisConfigError(f"REDIS_URL is not a valid URL; expected {_EXPECTED_FORM}") from None
    if parts.scheme not in _SCHEMES:
        raise RedisConfigError(
            f"REDIS_URL uses the scheme {parts.scheme or '(none)'!r}; use redis://, rediss:// "
            f"or unix://, e.g. {_EXPECTED_FORM}"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise RedisConfigError(f"REDIS_URL has no host; expected {_EXPECTED_FORM}")
    database = parts.path.strip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        # redis-py would quietly fall back to database 0 here.
        raise RedisConfigError(
            f"REDIS_URL names database {database!r}; the path must be a number, e.g. "
            f"{_EXPECTED_FORM}"
        )
    return parts


def check_redis_url(url: str) -> None:
    """Raise RedisConfigError (naming REDIS_URL, never the password) unless `url` is usable."""
    _split(url)


def safe_redis_url(url: str) -> str:
    """`url` with its password replaced by ***, for logs and status pages."""
    try:
        parts = urlsplit(url)
        if parts.password is None and parts.username is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        if parts.password is None:  # `redis://SECRET@host`: a password where the user goes
            return urlunsplit(parts._replace(netloc=f"***@{host}"))
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "<unparseable REDIS_URL>"


def client_identity() -> dict[str, Any]:
    """What a client reports in CLIENT SETINFO, given up front: left to redis-py, each new
    connection object reads the package metadata again (about 0.3 ms)."""
    if DriverInfo is None:  # redis-py before driver_info
        return {}
    return {"driver_info": DriverInfo(lib_version=redis.__version__)}


async def connect_redis(url: str, *, timeout: float) -> RedisStatus:
    """Build a client for `url` and ping it; an unreachable server still returns the client."""
    _split(url)
    if not timeout > 0:
        raise RedisConfigError(
            f"Redis timeout must be positive, got {timeout!r}; check REDIS_CONNECT_TIMEOUT"
        )
    try:
        client = Redis.from_url(
            url.strip(),
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            # A couple of quick retries ride out a blip; redis-py's default (ten, backing off to
            # a second each) would turn a down server into a long stall on every command.
            retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=min(0.25, timeout)), 2),
            **client_identity(),
        )
        # Query-string options are only checked when a connection object is built; building
        # one now (it does not connect) reports a bad option as configuration, not an outage.
        client.connection_pool.make_connection()
    except (ValueError, TypeError):
        raise RedisConfigError(
            f"REDIS_URL has an invalid option or value; expected {_EXPECTED_FORM}"
        ) from None
    error = await _probe(client, timeout)
    if error is not None:
        logger.warning("Redis at %s is unavailable (%s)", safe_redis_url(url), error)
    return RedisStatus(client=client, available=error is None, error=error)


async def _probe(client: Redis, timeout: float) -> str | None:
    try:
        async with asyncio.timeout(timeout):
            await client.ping()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return type(exc).__name__
    return None


async def ping_redis(client: Redis | None, timeout: float) -> bool:
    """True if `client` answers PING within `timeout` seconds; never raises."""
    if client is None:
        return False
    return await _probe(client, timeout) is None


async def close_redis(client: Redis | None) -> None:
    """Close `client` and its connection pool; a failure while closing is only logged."""
    if client is None:
        return
    try:
        await client.aclose()
    except Exception:
        logger.debug("closing the Redis client raised", exc_info=True)
