"""What the worker's arq adapter relies on, checked against the installed arq and redis-py, so
that an upgrade that changes it fails here, by name, rather than as a hung or noisy shutdown."""

from __future__ import annotations

import asyncio
import inspect
from importlib.metadata import version
from typing import Any

import pytest
from arq.connections import RedisSettings
from arq.worker import Worker, func
from redis.asyncio import Redis

from pixsim7.backend.main.infrastructure import jobs
from pixsim7.backend.main.infrastructure.arq_adapter import (
    CHECKED_ARQ_VERSIONS,
    WaitForRedis,
    forgive_outages_when_stopping,
)

pytestmark = pytest.mark.integration


def test_the_installed_arq_is_one_the_adapter_was_checked_against() -> None:
    installed = ".".join(version("arq").split(".")[:2])
    assert installed in CHECKED_ARQ_VERSIONS, (
        f"arq {version('arq')} is not among {CHECKED_ARQ_VERSIONS}: re-check each workaround "
        "in infrastructure/arq_adapter.py against it, then add it there and in pyproject.toml")


async def test_redis_py_hands_every_connection_the_one_retry_policy(redis_namespace) -> None:
    # Stopping reaches every connection only if redis-py's copy of the policy is the policy.
    policy = WaitForRedis()
    client = Redis.from_url(redis_namespace.url, retry=policy)
    try:
        connection = await client.connection_pool.get_connection("PING")
        try:
            assert connection.retry is policy
        finally:
            await client.connection_pool.release(connection)
    finally:
        await client.aclose()


async def _echo(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    return payload


async def test_arq_runs_on_startup_in_its_main_task_and_ends_jobs_through_the_wrapped_pool(
    redis_namespace,
) -> None:
    # WaitForRedis cancels `Worker.main_task` from a command retried in on_startup's task, and
    # forgive_outages_when_stopping wraps the pool's `pipeline` (a job's end) and `delete`
    # (the health record at close): each must still be what arq uses.
    seen: dict[str, Any] = {"pipelines": 0, "deletes": 0}

    async def startup(ctx: dict[str, Any]) -> None:
        seen["startup_task"] = asyncio.current_task()
        pool, retry = ctx["redis"], WaitForRedis()
        pipeline, delete = pool.pipeline, pool.delete

        def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
            seen["pipelines"] += 1
            return pipeline(*args, **kwargs)

        async def counting_delete(*args: Any, **kwargs: Any) -> Any:
            seen["deletes"] += 1
            return await delete(*args, **kwargs)

        pool.pipeline, pool.delete = counting_pipeline, counting_delete
        forgive_outages_when_stopping(pool, retry)

    queue = jobs.queue_name(redis_namespace.prefix)
    client = redis_namespace.client()
    try:
        await jobs.enqueue(client, redis_namespace.prefix, "echo", {"value": 1})
    finally:
        await client.aclose()
    worker = Worker(functions=[func(_echo, name="echo")], queue_name=queue, burst=True,
                    redis_settings=RedisSettings.from_dsn(redis_namespace.url),
                    on_startup=startup, handle_signals=False, poll_delay=0.01,
                    health_check_key=f"{redis_namespace.prefix}health")
    try:
        await worker.async_run()
        assert seen["startup_task"] is worker.main_task
        assert worker.jobs_complete == 1
        assert seen["pipelines"] >= 1  # the job's end was written through the pool's pipeline
    finally:
        await worker.close()
    assert seen["deletes"] >= 1  # the health record removed through the pool's delete


def test_arq_takes_signals_through_the_event_loop() -> None:
    # observe_signals chains a Python-level handler; arq's own must stay loop handlers, which
    # asyncio runs from its wakeup fd whatever Python-level handler is set.
    source = inspect.getsource(Worker._add_signal_handler)
    assert "add_signal_handler" in source, source
