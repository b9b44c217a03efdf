"""Backend selection, each runnable backend starting and stopping, and clear failures."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from pixsim7_testing.services import (
    ENV_BACKEND,
    ENV_DATABASE_URL,
    ENV_POSTGRES_IMAGE,
    ENV_REDIS_IMAGE,
    ENV_REDIS_URL,
    POSTGRES_IMAGE,
    REDIS_IMAGE,
    EmbeddedBackend,
    ExternalBackend,
    ServiceSet,
    ServiceStartError,
    TestcontainersBackend,
    select_backend,
)

from pixsim7.backend.main.infrastructure.adapters.embedded import private_folder
from tests.kit import inner

REPO_ROOT = Path(__file__).resolve().parents[2]


def no_docker() -> bool:
    return False


def docker_up() -> bool:
    return True


@pytest.mark.parametrize(
    ("env", "docker", "expected"),
    [
        ({}, no_docker, EmbeddedBackend),
        ({}, docker_up, TestcontainersBackend),
        ({ENV_DATABASE_URL: "postgresql://h/db", ENV_REDIS_URL: "redis://h"}, docker_up,
         ExternalBackend),
        ({ENV_DATABASE_URL: "postgresql://h/db"}, no_docker, EmbeddedBackend),
        ({ENV_BACKEND: "embedded"}, docker_up, EmbeddedBackend),
        ({ENV_BACKEND: "testcontainers"}, no_docker, TestcontainersBackend),
        ({ENV_BACKEND: "external"}, docker_up, ExternalBackend),
    ],
)
def test_backend_selection(env, docker, expected) -> None:
    assert type(select_backend(env, docker_check=docker)) is expected


def test_unknown_backend_name_is_refused() -> None:
    with pytest.raises(ServiceStartError, match="is not one of auto, external"):
        select_backend({ENV_BACKEND: "podman"})


def test_testcontainers_configuration_is_pinned() -> None:
    backend = TestcontainersBackend()
    options = backend.postgres_options()
    for image in (options["image"], backend.redis_image):
        name, _, tag = image.partition(":")
        assert name in ("postgres", "redis") and tag[0].isdigit(), image
    assert backend.redis_image == REDIS_IMAGE
    assert options["username"] == "postgres" and options["dbname"] == "postgres"
    assert "fsync=off" in options["command"]


def test_testcontainers_password_is_not_the_user_name() -> None:
    # A password equal to the user name would make every mention of the user look like a leak.
    options = TestcontainersBackend().postgres_options()
    assert options["password"] and options["password"] != options["username"]
    assert options["password"] != TestcontainersBackend().postgres_options()["password"]


def test_image_settings_choose_the_images() -> None:
    env = {ENV_BACKEND: "testcontainers", ENV_POSTGRES_IMAGE: "local/postgres:15.20",
           ENV_REDIS_IMAGE: "local/redis:7.0.15"}
    chosen = select_backend(env)
    assert (chosen.postgres_image, chosen.redis_image) == ("local/postgres:15.20",
                                                           "local/redis:7.0.15")
    default = select_backend({ENV_BACKEND: "testcontainers"})
    assert (default.postgres_image, default.redis_image) == (POSTGRES_IMAGE, REDIS_IMAGE)


def test_testcontainers_without_docker_names_the_fix(monkeypatch) -> None:
    monkeypatch.setattr("pixsim7_testing.backends.containers.docker_available",
                        lambda timeout=2.0: False)
    with pytest.raises(ServiceStartError, match="no Docker engine answered.*embedded"):
        TestcontainersBackend().start()


async def _roundtrip(services: ServiceSet) -> tuple[int, bytes]:
    conn = await asyncpg.connect(services.postgres.url(), timeout=5)
    try:
        value = await conn.fetchval("SELECT 41 + 1")
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(services.redis.url())
    try:
        pong = await client.execute_command("ECHO", b"up")
    finally:
        await client.aclose()
    return value, pong


async def test_embedded_backend_starts_and_stops_cleanly() -> None:
    # Not under pytest's tmp_path: pytest-of-<user> is 0700, which the unprivileged server user
    # (under root) cannot traverse; a folder of the servers' own is made private to them.
    base = private_folder(Path(tempfile.mkdtemp(prefix="pixsim7-kit-test-")))
    services = EmbeddedBackend(base_dir=base).start()
    try:
        (root,) = list(base.iterdir())
        assert services.postgres_version[0].isdigit() and services.redis_version[0].isdigit()
        assert await _roundtrip(services) == (42, b"up")
        pg_port, redis_port = services.postgres.port, services.redis.port
    finally:
        services.stop()
    assert not root.exists()
    for port in (pg_port, redis_port):
        with pytest.raises(OSError):
            await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", timeout=1)
    services.stop()  # idempotent
    base.rmdir()


async def test_external_backend_uses_given_servers(kit_services: ServiceSet) -> None:
    backend = ExternalBackend(kit_services.postgres.url(), kit_services.redis.url())
    services = await asyncio.to_thread(backend.start)
    assert services.postgres_version == kit_services.postgres_version.split(" ")[0]
    assert await _roundtrip(services) == (42, b"up")
    services.stop()
    assert await _roundtrip(kit_services) == (42, b"up")  # stopping external stops nothing


async def test_backend_starts_from_inside_a_running_event_loop(kit_services) -> None:
    # Called straight from this test's running loop, not through a thread of the caller's.
    services = ExternalBackend(kit_services.postgres.url(), kit_services.redis.url()).start()
    assert services.postgres_version == kit_services.postgres_version.split(" ")[0]
    assert services.redis_version == kit_services.redis_version


def test_service_set_travels_to_a_worker_without_its_stop(kit_services) -> None:
    copy = ServiceSet.from_dict(kit_services.to_dict())
    assert copy.to_dict() == kit_services.to_dict()
    assert (copy.postgres, copy.redis) == (kit_services.postgres, kit_services.redis)
    copy.stop()  # a worker's copy stops nothing
    assert asyncio.run(_roundtrip(kit_services)) == (42, b"up")


def test_external_backend_names_missing_variables() -> None:
    with pytest.raises(ServiceStartError, match=f"needs {ENV_REDIS_URL}"):
        ExternalBackend("postgresql://postgres@127.0.0.1/postgres", None).start()


def test_external_backend_rejects_a_bad_url() -> None:
    with pytest.raises(ServiceStartError, match=f"{ENV_DATABASE_URL} must look like"):
        ExternalBackend("mysql://root@127.0.0.1/x", "redis://127.0.0.1:6379/0").start()


def test_broken_configuration_fails_the_run_once_with_the_message(tmp_path) -> None:
    # A port nothing listens on: the whole pytest run must fail, once, and say what to fix;
    # the snapshots of the tests that never ran are not called unused.
    from pixsim7.backend.main.infrastructure.adapters.embedded import free_port

    port = free_port()
    (tmp_path / "test_needs_services.py").write_text(textwrap.dedent("""
        def test_uses_database(test_database):
            assert test_database.name

        def test_uses_redis(redis_namespace):
            assert redis_namespace.prefix

        def test_snapshot(test_database, snapshot):
            assert snapshot == 1
    """))
    snapshots = tmp_path / "__snapshots__" / "test_needs_services"
    snapshots.mkdir(parents=True)
    (snapshots / "test_snapshot.ambr").write_text(
        "# serializer version: 1\n# name: test_snapshot\n  1\n# ---\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXSIM7_")}
    env.update({ENV_BACKEND: "external",
                ENV_DATABASE_URL: f"postgresql://postgres:hunter2@127.0.0.1:{port}/postgres",
                ENV_REDIS_URL: f"redis://127.0.0.1:{port}/0", **inner.ENV,
                "PYTHONPATH": str(REPO_ROOT)})
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *inner.PLUGIN_ARGS, "-q", str(tmp_path),
         "--rootdir", str(tmp_path), "-c", os.devnull],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert output.count("external backend: cannot reach the servers") == 1, output
    assert f"Fix: start them, or correct {ENV_DATABASE_URL}" in output
    assert "unused" not in output and "--snapshot-update" not in output, output
    assert "hunter2" not in output
