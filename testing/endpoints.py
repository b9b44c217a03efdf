"""What a backend hands the kit: PostgreSQL and Redis endpoints, their versions, and how to
stop what it started."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import asyncpg
import redis.asyncio as aioredis
from pixsim7_testing.host import run_sync


class ServiceStartError(RuntimeError):
    """A backend could not provide PostgreSQL and Redis; the message says what was tried."""


@dataclass(frozen=True)
class PostgresEndpoint:
    """A PostgreSQL server the kit may create and drop databases on."""

    host: str
    port: int
    user: str = "postgres"
    password: str | None = None
    admin_database: str = "postgres"

    def url(self, database: str | None = None, *, driver: str | None = None) -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        auth = self.user + (f":{self.password}" if self.password else "")
        return f"{scheme}://{auth}@{self.host}:{self.port}/{database or self.admin_database}"

    @classmethod
    def parse(cls, url: str, source: str) -> PostgresEndpoint:
        """From a URL; a ServiceStartError naming `source` (the setting) if it is not one."""
        parts = urlsplit(url)
        if not parts.scheme.startswith("postgres") or not parts.hostname:
            raise ServiceStartError(
                f"{source} must look like postgresql://user[:password]@host:port/database, "
                f"got scheme {parts.scheme or '(none)'!r}"
            )
        return cls(host=parts.hostname, port=parts.port or 5432,
                   user=parts.username or "postgres", password=parts.password,
                   admin_database=parts.path.lstrip("/") or "postgres")


@dataclass(frozen=True)
class RedisEndpoint:
    host: str
    port: int
    password: str | None = None
    db: int = 0

    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/{self.db}"

    @classmethod
    def parse(cls, url: str, source: str) -> RedisEndpoint:
        """From a URL; a ServiceStartError naming `source` (the setting) if it is not one."""
        parts = urlsplit(url)
        if parts.scheme != "redis" or not parts.hostname:
            raise ServiceStartError(
                f"{source} must look like redis://[:password@]host:port/db, "
                f"got scheme {parts.scheme or '(none)'!r}"
            )
        db = parts.path.lstrip("/")
        return cls(parts.hostname, parts.port or 6379, parts.password, int(db or 0))


@dataclass
class ServiceSet:
    """What a backend started (or found): endpoints, versions, and how to stop it."""

    backend: str
    postgres: PostgresEndpoint
    redis: RedisEndpoint
    postgres_version: str = "?"
    redis_version: str = "?"
    detail: str = ""
    _stop: list[Callable[[], object]] = field(default_factory=list, repr=False)

    def describe(self) -> str:
        text = (f"backend={self.backend} PostgreSQL {self.postgres_version}, "
                f"Redis {self.redis_version}")
        return f"{text} ({self.detail})" if self.detail else text

    def stop(self) -> None:
        """Stop whatever this set started, newest first; safe to call twice."""
        while self._stop:
            stop = self._stop.pop()
            with contextlib.suppress(Exception):
                stop()

    def to_dict(self) -> dict:
        """Plain data for another process (an xdist worker) to use these servers."""
        return {"backend": self.backend, "postgres": asdict(self.postgres),
                "redis": asdict(self.redis), "postgres_version": self.postgres_version,
                "redis_version": self.redis_version, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict) -> ServiceSet:
        """Servers another process started and will stop: `stop()` here does nothing."""
        return cls(**{**data, "postgres": PostgresEndpoint(**data["postgres"]),
                      "redis": RedisEndpoint(**data["redis"])})


async def _probe_versions(
    pg: PostgresEndpoint, rd: RedisEndpoint, timeout: float
) -> tuple[str, str]:
    conn = await asyncpg.connect(pg.url(), timeout=timeout)
    try:
        pg_version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    client = aioredis.Redis(host=rd.host, port=rd.port, password=rd.password, db=rd.db,
                            socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    return str(pg_version).split(" ")[0], str(info.get("redis_version", "?"))


def probe_versions(
    pg: PostgresEndpoint, rd: RedisEndpoint, timeout: float = 5.0
) -> tuple[str, str]:
    """Connect to both servers and read their versions."""
    return run_sync(lambda: _probe_versions(pg, rd, timeout))
