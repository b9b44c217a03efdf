"""What jobs take in Redis stays under GETTING_STARTED's worst case, a formula of the settings
(`jobs.redis_worst_case_bytes`):

    JOBS_MAX_QUEUED x (1.25 x (JOB_MAX_PAYLOAD_BYTES + JOB_MAX_RESULT_BYTES) + 2 KiB)

The queue and the kept results are filled to their bounds, several times over, on a Redis of
the test's own (so nothing else moves its memory), with real arq workers running the jobs.
"""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from arq.connections import RedisSettings
from arq.worker import Worker, func

from pixsim7.backend.main.infrastructure.adapters import job_codec
from pixsim7.backend.main.infrastructure.adapters.embedded import EmbeddedRedis
from pixsim7.backend.main.infrastructure.registries import jobs

pytestmark = pytest.mark.integration

MAX_QUEUED = 40
MAX_PAYLOAD = MAX_RESULT = 16 * 1024
PREFIX = "memory:"


async def _as_big_as_its_payload(ctx: dict, payload: dict) -> dict:
    # A result whose stored record (with arq's fields) is just under JOB_MAX_RESULT_BYTES.
    return {"blob": payload["blob"][:MAX_RESULT - 400]}


def _payload() -> dict:
    return {"blob": "x" * (MAX_PAYLOAD - 11)}  # exactly JOB_MAX_PAYLOAD_BYTES of JSON


async def test_a_full_queue_and_full_results_stay_under_the_documented_worst_case(
    servers_data_dir,
) -> None:
    server = EmbeddedRedis(servers_data_dir / "redis").start()
    client = None
    try:
        client = aioredis.Redis.from_url(server.url())
        baseline = (await client.info("memory"))["used_memory"]
        queue = jobs.queue_name(PREFIX)
        for _ in range(4):  # four times the bound of jobs run to their end
            for _ in range(MAX_QUEUED):
                await jobs.enqueue(client, PREFIX, "echo", _payload(), max_queued=MAX_QUEUED)
            worker = Worker(functions=[func(_as_big_as_its_payload, name="echo")],
                            queue_name=queue,
                            redis_settings=RedisSettings.from_dsn(server.url()), burst=True,
                            handle_signals=False, poll_delay=0.01, max_jobs=20,
                            health_check_key=f"{PREFIX}health",
                            **job_codec.worker_codec(MAX_RESULT))
            try:
                await worker.async_run()
                assert worker.jobs_complete == MAX_QUEUED
            finally:
                await worker.close()
        # ... and a full queue waiting for a worker.
        for _ in range(MAX_QUEUED):
            await jobs.enqueue(client, PREFIX, "echo", _payload(), max_queued=MAX_QUEUED)
        with pytest.raises(jobs.QueueFull):
            await jobs.enqueue(client, PREFIX, "echo", _payload(), max_queued=MAX_QUEUED)

        results = [key async for key in client.scan_iter(match="arq:result:*")]
        assert len(results) == MAX_QUEUED  # the newest ones
        assert await jobs.queued(client, PREFIX) == MAX_QUEUED
        used = (await client.info("memory"))["used_memory"] - baseline
        worst = jobs.redis_worst_case_bytes(MAX_QUEUED, MAX_PAYLOAD, MAX_RESULT)
        assert used <= worst, f"{used} bytes used, the documented worst case is {worst}"
        # Those kept are whole results of the last round, not failures.
        kept = [job_codec.loads(await client.get(key)) for key in results]
        assert all(record["s"] is True for record in kept)
    finally:
        if client is not None:
            await client.aclose()
        server.stop()


def test_a_result_over_the_bound_is_stored_as_a_failure() -> None:
    stored = job_codec.dumps({"t": 1, "f": "echo", "a": (), "k": {}, "s": True,
                              "r": {"blob": "x" * 2000}}, max_result_bytes=1000)
    record = job_codec.loads(stored)
    assert record["s"] is False and job_codec.error_name(record["r"]) == "ResultTooLarge"
    assert len(stored) < 1000
