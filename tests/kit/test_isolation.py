"""Each test gets its own database and Redis keyspace, gone after it; safe under xdist."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg
import pytest
import redis
from pixsim7_testing.isolation import (
    DatabaseJanitor,
    create_database,
    database_exists,
    drop_database,
    new_namespace,
    server_offers_ssl,
    ssl_negotiation_skipped,
)
from pixsim7_testing.services import ENV_BACKEND, ENV_DATABASE_URL, ENV_REDIS_URL, ServiceSet

from tests.kit import inner

REPO_ROOT = Path(__file__).resolve().parents[2]

# Run as a separate pytest session so that "the next test" and "a parallel test" are real.
INNER_TESTS = '''
import os
import asyncpg
import redis.asyncio as aioredis

from pixsim7_testing.polling import wait_until_async

RUN = os.environ["KIT_RUN_ID"]

async def write_and_wait(test_database, redis_namespace, marker):
    conn = await asyncpg.connect(test_database.url)
    await conn.execute("CREATE TABLE notes (body text)")
    await conn.execute("INSERT INTO notes VALUES ($1)", marker)
    client = redis_namespace.client()
    await client.set(redis_namespace.prefix + "marker", marker)
    # A barrier outside any namespace: both tests hold their data at the same moment.
    barrier = aioredis.Redis.from_url(redis_namespace.url)
    await barrier.incr(f"kit-barrier:{RUN}")
    await barrier.expire(f"kit-barrier:{RUN}", 60)

    async def both_arrived() -> bool:
        return int(await barrier.get(f"kit-barrier:{RUN}")) >= 2

    await wait_until_async(both_arrived, timeout=15.0,
                           message="the other test never ran alongside")
    rows = [r["body"] for r in await conn.fetch("SELECT body FROM notes")]
    assert rows == [marker]
    assert await client.get(redis_namespace.prefix + "marker") == marker.encode()
    await barrier.aclose(); await client.aclose(); await conn.close()
    return test_database.name, redis_namespace.prefix

async def test_left(test_database, redis_namespace):
    await write_and_wait(test_database, redis_namespace, "left")

async def test_right(test_database, redis_namespace):
    await write_and_wait(test_database, redis_namespace, "right")
'''

SEQUENTIAL_TESTS = '''
import asyncio

import asyncpg

seen = {}

async def test_first_writes(test_database, redis_namespace):
    conn = await asyncpg.connect(test_database.url)
    await conn.execute("CREATE TABLE notes (body text)")
    await conn.execute("INSERT INTO notes VALUES ('first')")
    await conn.close()
    client = redis_namespace.client()
    await client.set(redis_namespace.prefix + "k", "first")
    await client.aclose()
    seen["db"], seen["prefix"] = test_database.name, redis_namespace.prefix

async def test_second_sees_nothing(test_database, redis_namespace, kit_services):
    assert seen["db"] != test_database.name
    # The first test's database is dropped off the test's path, by the worker's pool: soon.
    admin = await asyncpg.connect(kit_services.postgres.url())
    for _ in range(200):
        if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname=$1", seen["db"]) is None:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"{seen['db']} was not dropped within 10 s of its test's end")
    await admin.close()
    conn = await asyncpg.connect(test_database.url)
    assert await conn.fetchval("SELECT to_regclass('notes')") is None
    await conn.close()
    client = redis_namespace.client()
    assert [k async for k in client.scan_iter(match=seen["prefix"] + "*")] == []
    await client.aclose()
'''


def run_inner(tmp_path: Path, services: ServiceSet, source: str, *args: str,
              asyncio_settings: bool = True):
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(source))
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        if asyncio_settings else "[pytest]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXSIM7_")}
    env.update({ENV_BACKEND: "external", ENV_DATABASE_URL: services.postgres.url(),
                ENV_REDIS_URL: services.redis.url(), "PYTHONPATH": str(REPO_ROOT),
                "KIT_RUN_ID": tmp_path.name, **inner.ENV})
    try:
        return subprocess.run(
            [sys.executable, "-m", "pytest", *inner.PLUGIN_ARGS,
             "-q", *args, str(tmp_path / "test_inner.py")],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180,
        )
    finally:
        # The inner tests' barrier lies outside their namespaces: it goes here, not by expiry.
        with redis.Redis.from_url(services.redis.url()) as client:
            client.delete(f"kit-barrier:{tmp_path.name}")


TIERS_WITHOUT_ASYNCIO_SETTINGS = '''
import pytest
from pixsim7_testing.apps import started

@pytest.mark.rollback_db
async def test_rollback_tier(app_factory):
    running = await started(app_factory)
    assert (await running.get("/ready")).json()["status"] == "ready"

@pytest.mark.template_db
async def test_template_tier(app_factory):
    running = await started(app_factory)
    assert (await running.get("/api/v1/presets")).status_code == 200

async def test_empty_tier(app_factory):
    running = await started(app_factory)
    assert (await running.get("/ready")).json()["database"] == "connected"
'''


def test_the_tiers_run_with_no_asyncio_settings_in_the_users_configuration(
    tmp_path, kit_services
) -> None:
    # pytest-asyncio's defaults (strict mode, function loops): the kit arranges its own loop.
    result = run_inner(tmp_path, kit_services, TIERS_WITHOUT_ASYNCIO_SETTINGS,
                       asyncio_settings=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_parallel_tests_do_not_see_each_other(tmp_path, kit_services) -> None:
    result = run_inner(tmp_path, kit_services, INNER_TESTS, "-n", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_a_row_written_in_one_test_is_gone_in_the_next(tmp_path, kit_services) -> None:
    result = run_inner(tmp_path, kit_services, SEQUENTIAL_TESTS, "-p", "no:randomly")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


async def test_create_and_drop_database(kit_services: ServiceSet) -> None:
    database = await create_database(kit_services.postgres)
    assert await database_exists(kit_services.postgres, database.name)
    conn = await asyncpg.connect(database.url)  # left open on purpose: drop must still work
    await drop_database(database)
    assert not await database_exists(kit_services.postgres, database.name)
    await conn.close()


async def test_the_janitor_drops_its_database_even_after_a_failure(
    kit_services: ServiceSet
) -> None:
    with pytest.raises(RuntimeError, match="the test failed"):
        async with DatabaseJanitor(kit_services.postgres) as database:
            left_open = await asyncpg.connect(database.url)
            raise RuntimeError("the test failed")
    assert not await database_exists(kit_services.postgres, database.name)
    left_open.terminate()


async def test_namespace_clear_removes_only_its_keys(kit_services: ServiceSet) -> None:
    mine, other = new_namespace(kit_services.redis), new_namespace(kit_services.redis)
    client = mine.client()
    try:
        await client.mset({f"{mine.prefix}a": 1, f"{mine.prefix}b": 2, f"{other.prefix}a": 3})
        assert await mine.clear() == 2
        assert await mine.keys() == []
        assert len(await other.keys()) == 1
    finally:
        await other.clear()
        await client.aclose()


async def _echo(ctx: dict, payload: dict) -> dict:
    return payload


async def test_namespace_clear_removes_the_results_of_its_jobs_that_ended(
    kit_services: ServiceSet
) -> None:
    # A job that ended has left its queue; arq keeps its result under `arq:result:<id>`, outside
    # any prefix. Each namespace's clear takes its own jobs' results, and only those.
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    from pixsim7.backend.main.infrastructure.adapters import job_codec
    from pixsim7.backend.main.infrastructure.registries import jobs

    mine, other = new_namespace(kit_services.redis), new_namespace(kit_services.redis)
    client = mine.client()
    ids = {}
    try:
        for namespace in (mine, other):
            ids[namespace.prefix] = await jobs.enqueue(client, namespace.prefix, "echo", {})
            worker = Worker(functions=[func(_echo, name="echo")], burst=True, poll_delay=0.01,
                            **job_codec.ARQ_CODEC,
                            queue_name=jobs.queue_name(namespace.prefix), handle_signals=False,
                            redis_settings=RedisSettings.from_dsn(namespace.url),
                            health_check_key=f"{namespace.prefix}health")
            try:
                await worker.async_run()
                assert worker.jobs_complete == 1
            finally:
                await worker.close()
        results = {prefix: f"arq:result:{job_id}" for prefix, job_id in ids.items()}
        assert await client.exists(*results.values()) == 2
        await mine.clear()
        assert not await client.exists(results[mine.prefix])
        assert await client.exists(results[other.prefix])
        await other.clear()
        assert not await client.exists(results[other.prefix])
    finally:
        await mine.clear()
        await other.clear()
        await client.aclose()


def test_ssl_negotiation_is_skipped_only_with_a_server_without_ssl(
    kit_services: ServiceSet, monkeypatch
) -> None:
    monkeypatch.delenv("PGSSLMODE", raising=False)
    offers_ssl = asyncio.run(server_offers_ssl(kit_services.postgres))
    with ssl_negotiation_skipped(kit_services.postgres):
        inside = os.environ.get("PGSSLMODE")
    assert inside == (None if offers_ssl else "disable")
    assert "PGSSLMODE" not in os.environ
