"""Servers that already run: a CI's service containers or the machine's own."""

from __future__ import annotations

from pixsim7_testing.backends import ENV_DATABASE_URL, ENV_REDIS_URL
from pixsim7_testing.endpoints import (
    PostgresEndpoint,
    RedisEndpoint,
    ServiceSet,
    ServiceStartError,
    probe_versions,
)

from pixsim7.backend.main.infrastructure.adapters.redis import safe_redis_url


class ExternalBackend:
    """The servers at PIXSIM7_TEST_DATABASE_URL and PIXSIM7_TEST_REDIS_URL."""

    name = "external"

    def __init__(self, database_url: str | None, redis_url: str | None) -> None:
        self.database_url = database_url
        self.redis_url = redis_url

    def start(self) -> ServiceSet:
        if not self.database_url or not self.redis_url:
            missing = [n for n, v in ((ENV_DATABASE_URL, self.database_url),
                                      (ENV_REDIS_URL, self.redis_url)) if not v]
            raise ServiceStartError(
                f"external backend needs {' and '.join(missing)}: set them to a PostgreSQL "
                "server where the user may CREATE DATABASE and to a Redis server"
            )
        pg = PostgresEndpoint.parse(self.database_url, ENV_DATABASE_URL)
        rd = RedisEndpoint.parse(self.redis_url, ENV_REDIS_URL)
        try:
            pg_version, redis_version = probe_versions(pg, rd)
        except Exception as exc:
            raise ServiceStartError(
                f"external backend: cannot reach the servers at {pg.host}:{pg.port} "
                f"(PostgreSQL) and {rd.host}:{rd.port} (Redis): {type(exc).__name__}: {exc}. "
                f"Fix: start them, or correct {ENV_DATABASE_URL} / {ENV_REDIS_URL}"
            ) from exc
        return ServiceSet(self.name, pg, rd, pg_version, redis_version,
                          detail=f"{pg.host}:{pg.port}, {rd.host}:{rd.port}")

    def describe(self) -> str:
        return "external: " + ", ".join(
            safe_redis_url(url) for url in (self.database_url, self.redis_url) if url)
