"""What the worker's arq adapter relies on, checked against the installed arq and redis-py, so
that an upgrade that changes it fails here, by name, rather than as a hung or noisy shutdown."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import replace
from importlib.metadata import version
from typing import Any

import pytest
from arq.connections import RedisSettings, create_pool
from arq.constants import expires_extra_ms, in_progress_key_prefix, job_key_prefix
from arq.jobs import Job
from arq.worker import Worker, func
from redis.asyncio import Redis
from redis.exceptions import WatchError

from pixsim7.backend.main.infrastructure.adapters import job_codec
from pixsim7.backend.main.infrastructure.adapters.arq_adapter import (
    CHECKED_ARQ_VERSIONS,
    FULL,
    QUEUED,
    TAKEN,
    WaitForRedis,
    enqueue_bounded,
    forgive_outages_when_stopping,
    leave_jobs_queued_when_a_watch_is_lost,
)
from pixsim7.backend.main.infrastructure.registries import jobs
from pixsim7.backend.main.shared.config import Settings
from pixsim7.backend.main.worker import worker_settings

pytestmark = pytest.mark.integration


def stored_job(job_id: str, pool: Any, queue: str) -> Job:
    return Job(job_id, pool, _queue_name=queue, _deserializer=job_codec.loads)


def test_the_installed_arq_is_one_the_adapter_was_checked_against() -> None:
    installed = ".".join(version("arq").split(".")[:2])
    assert installed in CHECKED_ARQ_VERSIONS, (
        f"arq {version('arq')} is not among {CHECKED_ARQ_VERSIONS}: re-check each workaround "
        "in infrastructure/adapters/arq_adapter.py against it, then add it there and in "
        "pyproject.toml")


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
                    **job_codec.ARQ_CODEC,
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


async def test_a_bounded_enqueue_is_stored_as_arq_stores_a_job(redis_namespace) -> None:
    # enqueue_bounded writes arq's job format itself: what arq reads back from it must be
    # what it reads back from a job its own enqueue_job queued.
    client = redis_namespace.client()
    queue = jobs.queue_name(redis_namespace.prefix)
    arq = jobs.arq_client(client, redis_namespace.prefix)
    try:
        ours = "a" * 32
        assert await enqueue_bounded(client, queue, ours, "echo", {"value": 1}) == QUEUED
        theirs = await arq.enqueue_job("echo", {"value": 1}, _job_id="b" * 32,
                                       _queue_name=queue)
        infos = [await stored_job(job_id, arq, queue).info() for job_id in (ours, theirs.job_id)]
        assert [(i.function, i.args, i.kwargs, i.job_try) for i in infos] == [
            ("echo", ({"value": 1},), {}, None)] * 2
        scores = [await client.zscore(queue, job_id) for job_id in (ours, theirs.job_id)]
        assert [score == info.enqueue_time.timestamp() * 1000
                for score, info in zip(scores, infos, strict=True)] == [True, True]
        ttls = [await client.pttl(job_key_prefix + job_id) for job_id in (ours, theirs.job_id)]
        assert all(expires_extra_ms - 5_000 < ttl <= expires_extra_ms for ttl in ttls), ttls
        # An id already queued, or with a result, is not queued again (as enqueue_job).
        assert await enqueue_bounded(client, queue, ours, "echo", {"value": 2}) == TAKEN
        assert (await stored_job(ours, arq, queue).info()).args == ({"value": 1},)
    finally:
        await client.aclose()


async def test_the_bound_holds_when_requests_enqueue_at_once(redis_namespace) -> None:
    client = redis_namespace.client()
    queue = jobs.queue_name(redis_namespace.prefix)
    try:
        outcomes = await asyncio.gather(*(
            enqueue_bounded(client, queue, f"{n:032x}", "echo", {"value": n}, max_queued=5)
            for n in range(40)))
        assert sorted(outcomes).count(QUEUED) == 5
        assert sorted(outcomes).count(FULL) == 35
        assert await client.zcard(queue) == 5
        with pytest.raises(jobs.QueueFull, match="JOBS_MAX_QUEUED"):
            await jobs.enqueue(client, redis_namespace.prefix, "echo", {}, max_queued=5)
    finally:
        await client.aclose()


async def test_the_worker_waits_out_a_connection_lost_under_a_command(redis_namespace) -> None:
    # A connection that breaks between being handed out and answering (not only one found
    # dead when taken from the pool) must be waited for, not raised into arq's main loop:
    # redis-py retries only the errors the connection's `retry_on_error` names.
    settings = worker_settings(Settings(redis_url=redis_namespace.url, debug=True))
    pool = await create_pool(replace(settings["redis_settings"], max_connections=1))
    killer = redis_namespace.client()
    retry = WaitForRedis()
    try:
        pool.set_retry(retry)
        connection_id = await pool.client_id()
        key = f"{redis_namespace.prefix}list"
        waiting = asyncio.ensure_future(pool.blpop([key], timeout=10))
        await asyncio.sleep(0.2)  # BLPOP now waits on the pool's one connection
        await killer.client_kill_filter(_id=connection_id)
        await asyncio.sleep(0.2)
        await killer.rpush(key, b"after")
        assert await asyncio.wait_for(waiting, 10) == (key.encode(), b"after")
        assert await pool.client_id() != connection_id
    finally:
        retry.stop()
        await pool.aclose()
        await killer.aclose()


async def _start_a_job_losing_the_connection_after_watch(
    redis_namespace, *, adapted: bool
) -> tuple[Worker, str, list[int]]:
    """arq's own `start_jobs` takes one queued job while the connection under its WATCH is
    killed (CLIENT KILL, from another client) right after WATCH answered."""
    queue = jobs.queue_name(redis_namespace.prefix)
    settings = worker_settings(Settings(redis_url=redis_namespace.url, debug=True))
    pool = await create_pool(settings["redis_settings"])
    pool.set_retry(WaitForRedis())
    if adapted:
        leave_jobs_queued_when_a_watch_is_lost(pool, queue)
    killer = redis_namespace.client()
    killed: list[int] = []
    pipeline = pool.pipeline

    def pipeline_killed_after_watch(*args: Any, **kwargs: Any) -> Any:
        pipe = pipeline(*args, **kwargs)
        watch = pipe.watch

        async def watch_then_kill(*names: Any) -> Any:
            answer = await watch(*names)
            if not killed:
                killed.append(await pipe.client_id())  # on the watching connection
                await killer.client_kill_filter(_id=killed[0])
            return answer

        pipe.watch = watch_then_kill
        return pipe

    pool.pipeline = pipeline_killed_after_watch
    try:
        job_id = await jobs.enqueue(killer, redis_namespace.prefix, "echo", {"value": 7})
    finally:
        await killer.aclose()
    worker = Worker(functions=[func(_echo, name="echo")], queue_name=queue, redis_pool=pool,
                    **job_codec.ARQ_CODEC,
                    handle_signals=False, poll_delay=0.01, max_jobs=4,
                    health_check_key=f"{redis_namespace.prefix}health")
    return worker, job_id, killed


async def test_without_the_adapter_a_lost_watch_ends_arqs_start_jobs(redis_namespace) -> None:
    # What leave_jobs_queued_when_a_watch_is_lost is for: should an arq release catch this
    # itself, this test fails and the workaround can go.
    worker, job_id, killed = await _start_a_job_losing_the_connection_after_watch(
        redis_namespace, adapted=False)
    try:
        with pytest.raises(WatchError):
            await worker.start_jobs([job_id.encode()])
        assert killed
    finally:
        worker.pool.connection_pool.connection_kwargs["retry"].stop()
        await worker.pool.aclose()


async def test_a_job_whose_watch_is_lost_stays_queued_and_runs_at_the_next_poll(
    redis_namespace,
) -> None:
    worker, job_id, killed = await _start_a_job_losing_the_connection_after_watch(
        redis_namespace, adapted=True)
    queue = jobs.queue_name(redis_namespace.prefix)
    try:
        await worker.start_jobs([job_id.encode()])  # returns: the job was left for later
        assert killed, "the connection under WATCH was not killed"
        assert worker.job_counter == 0 and not worker.tasks
        assert await worker.pool.zscore(queue, job_id) is not None
        assert not await worker.pool.exists(in_progress_key_prefix + job_id)
        # The next poll takes it, on a new connection, and it runs to its end.
        await worker.start_jobs([job_id.encode()])
        await asyncio.wait_for(worker.tasks[job_id], 10)
        info = await stored_job(job_id, worker.pool, queue).result_info()
        assert info is not None and info.success and info.result == {"value": 7}
    finally:
        worker.pool.connection_pool.connection_kwargs["retry"].stop()
        await worker.pool.aclose()
