"""scripts/build_test_images.py: images built here behave as testcontainers expects.

Needs a Docker engine: the testcontainers run of .ci/run starts one.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from pixsim7_testing.services import docker_available

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not docker_available(), reason="needs a Docker engine (the testcontainers run of .ci/run)"
)


def build(repository: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "build_test_images.py"),
         "--repository", repository],
        capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def images() -> Iterator[tuple[dict[str, str], list[str]]]:
    """Images built under a repository of this module's own; (settings, output of two runs)."""
    import docker

    repository = f"pixsim7-test-{uuid.uuid4().hex[:8]}"
    runs = [build(repository), build(repository)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    settings = dict(line.split("=", 1) for line in runs[0].stdout.splitlines() if "=" in line)
    yield settings, [run.stdout for run in runs]
    client = docker.from_env()
    for image in settings.values():
        client.images.remove(image, force=True)
    client.close()


def test_tags_carry_the_versions_inside_and_a_second_run_builds_nothing(images) -> None:
    settings, (first, second) = images
    postgres, redis = settings["PIXSIM7_TEST_POSTGRES_IMAGE"], settings["PIXSIM7_TEST_REDIS_IMAGE"]
    inside = subprocess.run(["docker", "run", "--rm", "--entrypoint", "postgres", postgres,
                             "--version"], capture_output=True, text=True, check=True).stdout
    assert f"(PostgreSQL) {postgres.rsplit(':', 1)[1]}" in inside
    inside = subprocess.run(["docker", "run", "--rm", redis, "redis-server", "--version"],
                            capture_output=True, text=True, check=True).stdout
    assert f"v={redis.rsplit(':', 1)[1]} " in inside
    assert f"{postgres}: built in" in first and f"{redis}: built in" in first
    assert f"{postgres}: already built" in second and f"{redis}: already built" in second


def test_postgres_image_takes_the_official_settings(images) -> None:
    from testcontainers.community.postgres import PostgresContainer

    settings, _ = images
    container = PostgresContainer(settings["PIXSIM7_TEST_POSTGRES_IMAGE"], username="kit",
                                  password="kit-pw", dbname="kitdb", driver=None)
    container.with_command("postgres -c max_connections=77")
    with container:
        async def ask() -> tuple:
            conn = await asyncpg.connect(container.get_connection_url(), timeout=10)
            try:
                return (await conn.fetchval("SELECT current_user"),
                        await conn.fetchval("SELECT current_database()"),
                        await conn.fetchval("SHOW max_connections"))
            finally:
                await conn.close()

        assert asyncio.run(ask()) == ("kit", "kitdb", "77")
        url = container.get_connection_url().replace(":kit-pw@", ":wrong@")
        with pytest.raises(asyncpg.InvalidPasswordError):
            asyncio.run(asyncpg.connect(url, timeout=10))


def test_redis_image_answers_clients_from_outside(images) -> None:
    from testcontainers.community.redis import RedisContainer

    settings, _ = images
    with RedisContainer(settings["PIXSIM7_TEST_REDIS_IMAGE"]) as container:
        client = container.get_client()
        assert client.ping()
        assert client.config_get("protected-mode") == {"protected-mode": "no"}
        client.close()
