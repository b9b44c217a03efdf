"""PostgreSQL and Redis containers through testcontainers-python, one pair per test run."""

from __future__ import annotations

import contextlib
import secrets

from pixsim7_testing.backends import ENV_BACKEND, ENV_POSTGRES_IMAGE, ENV_REDIS_IMAGE
from pixsim7_testing.endpoints import (
    PostgresEndpoint,
    RedisEndpoint,
    ServiceSet,
    ServiceStartError,
    probe_versions,
)
from pixsim7_testing.host import docker_available
from pixsim7_testing.ownership import container_labels

POSTGRES_IMAGE = "postgres:16.4-alpine"
REDIS_IMAGE = "redis:7.4.1-alpine"


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

    POSTGRES_COMMAND = "postgres -c fsync=off -c synchronous_commit=off -c max_connections=300"

    def __init__(self, postgres_image: str = POSTGRES_IMAGE,
                 redis_image: str = REDIS_IMAGE) -> None:
        self.postgres_image = postgres_image
        self.redis_image = redis_image
        # Unlike the user name, so a leak check that looks for the password means it.
        self.password = f"kit-{secrets.token_hex(8)}"

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

    def describe(self) -> str:
        if not docker_available():
            return (f"testcontainers: {self.postgres_image}, {self.redis_image} "
                    "(no Docker engine answered)")
        pg = image_server_version(self.postgres_image, "PG_VERSION")
        rd = image_server_version(self.redis_image, "REDIS_VERSION")
        return (f"testcontainers: {self.postgres_image} (PostgreSQL {pg}), "
                f"{self.redis_image} (Redis {rd})")
