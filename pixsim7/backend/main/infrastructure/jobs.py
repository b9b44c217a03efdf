"""The background job queue: a Redis list that the API fills and the worker drains."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

QUEUE = "jobs"


def queue_key(prefix: str) -> str:
    return f"{prefix}{QUEUE}"


async def enqueue(client: Redis, prefix: str, job: dict[str, Any]) -> int:
    """Append `job` to the queue; returns the queue length."""
    return int(await client.rpush(queue_key(prefix), json.dumps(job, sort_keys=True)))


async def queued(client: Redis, prefix: str) -> int:
    return int(await client.llen(queue_key(prefix)))


async def next_job(client: Redis, prefix: str, timeout: float) -> dict[str, Any] | None:
    """The oldest job, waiting up to `timeout` seconds; None when there is none.

    A job that is not JSON raises ValueError (it has been taken off the queue).
    """
    item = await client.blpop([queue_key(prefix)], timeout=timeout)
    if item is None:
        return None
    return json.loads(item[1])
