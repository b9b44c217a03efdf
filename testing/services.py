"""PostgreSQL and Redis for a test session: one interface, three backends.

`PIXSIM7_TEST_SERVICES` picks the backend: `external` (servers you point at with
`PIXSIM7_TEST_DATABASE_URL` and `PIXSIM7_TEST_REDIS_URL`), `testcontainers` (pinned images, or
`PIXSIM7_TEST_POSTGRES_IMAGE` / `PIXSIM7_TEST_REDIS_IMAGE`, through a Docker engine), `embedded`
(servers from pip wheels or binaries on PATH, no Docker) or `auto`. Each backend lives in a
module of its own under `pixsim7_testing.backends`; this module chooses one.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pixsim7_testing.backends import (
    ENV_BACKEND,
    ENV_DATABASE_URL,
    ENV_POSTGRES_IMAGE,
    ENV_REDIS_IMAGE,
    ENV_REDIS_URL,
    Backend,
)
from pixsim7_testing.backends.containers import POSTGRES_IMAGE, REDIS_IMAGE, TestcontainersBackend
from pixsim7_testing.backends.embedded import EmbeddedBackend
from pixsim7_testing.backends.external import ExternalBackend
from pixsim7_testing.endpoints import PostgresEndpoint, RedisEndpoint, ServiceSet, ServiceStartError
from pixsim7_testing.host import docker_available

__all__ = [
    "BACKENDS", "ENV_BACKEND", "ENV_DATABASE_URL", "ENV_POSTGRES_IMAGE", "ENV_REDIS_IMAGE",
    "ENV_REDIS_URL", "POSTGRES_IMAGE", "REDIS_IMAGE", "Backend", "EmbeddedBackend",
    "ExternalBackend", "PostgresEndpoint", "RedisEndpoint", "ServiceSet", "ServiceStartError",
    "TestcontainersBackend", "describe_selection", "docker_available", "select_backend",
]

BACKENDS = ("auto", "external", "testcontainers", "embedded")


def select_backend(env: dict[str, str] | None = None,
                   docker_check: Callable[[], bool] = docker_available) -> Backend:
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
    return backend.describe()
