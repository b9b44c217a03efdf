"""POST /api/v1/jobs queues a job for the worker; GET /api/v1/jobs/status says what works.

Background jobs need Redis. While Redis is down the API says so (503 on enqueue, `disabled` in
the status) instead of failing with an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import redis.exceptions as redis_errors
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from pixsim7.backend.main.infrastructure import jobs


class JobIn(BaseModel):
    kind: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_.]+$")
    payload: dict[str, Any] = Field(default_factory=dict)


class JobsStatus(BaseModel):
    background_jobs: Literal["enabled", "disabled"]
    reason: str | None = None
    queued: int | None = None


router = APIRouter(tags=["jobs"])


# What Redis going away looks like from redis-py (its own classes, not the builtin ones).
_REDIS_DOWN = (OSError, TimeoutError, redis_errors.ConnectionError, redis_errors.TimeoutError)


async def _on_redis(
    request: Request, operation: Callable[[Any, str], Awaitable[int]]
) -> int | None:
    """Run one Redis command bounded by READY_CHECK_TIMEOUT; None when Redis is off or down.

    The outcome is recorded on `app.state.redis`, so background features follow the live state.
    """
    state = request.app.state
    redis = getattr(state, "redis", None)
    if redis is None or not redis.configured:
        return None
    settings = state.settings
    try:
        result = await asyncio.wait_for(operation(redis.client, settings.redis_key_prefix),
                                        settings.ready_check_timeout)
    except _REDIS_DOWN as exc:
        redis.mark(type(exc).__name__)
        return None
    redis.mark(None)
    return result


def _disabled_reason(request: Request) -> str:
    redis = getattr(request.app.state, "redis", None)
    if redis is None or not redis.configured:
        return "Redis is not configured: background jobs are off"
    return "Redis is unavailable: background jobs are paused; the API works without them"


@router.get("/status", response_model=JobsStatus)
async def jobs_status(request: Request) -> JobsStatus:
    """Whether background jobs run right now, and how many are waiting."""
    count = await _on_redis(request, jobs.queued)
    if count is None:
        return JobsStatus(background_jobs="disabled", reason=_disabled_reason(request))
    return JobsStatus(background_jobs="enabled", queued=count)


@router.post("", status_code=202, responses={
    400: {"description": "the body could not be read (not UTF-8)"},
    503: {"description": "background jobs are off"},
})
async def enqueue_job(job: JobIn, request: Request) -> Any:
    """Queue a job for the worker (202), or 503 saying why background jobs are off."""
    length = await _on_redis(request, lambda client, prefix: jobs.enqueue(
        client, prefix, job.model_dump()))
    if length is None:
        return JSONResponse({"detail": _disabled_reason(request), "background_jobs": "disabled"},
                            status_code=503, headers={"Retry-After": "5"})
    return {"queued": True, "queue_length": length}
