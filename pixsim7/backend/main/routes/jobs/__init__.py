"""POST /api/v1/jobs queues a job for the worker; GET /api/v1/jobs/status says what works.

Background jobs need Redis. While Redis is down the API says so (503 on enqueue, `disabled` in
the status) instead of failing with an error.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import redis.exceptions as redis_errors
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from pixsim7.backend.main.infrastructure import jobs
from pixsim7.backend.main.infrastructure.redis import ping_redis


class JobIn(BaseModel):
    kind: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_.]+$")
    payload: dict[str, Any] = Field(default_factory=dict)


class JobsStatus(BaseModel):
    background_jobs: Literal["enabled", "disabled"]
    reason: str | None = None
    queued: int | None = None


router = APIRouter(tags=["jobs"])


async def _redis_if_available(request: Request) -> Any:
    state = request.app.state
    client = getattr(state, "redis", None)
    if client is None:
        return None
    timeout = state.settings.ready_check_timeout
    if not await ping_redis(client, timeout):
        state.redis_available = False
        return None
    state.redis_available = True
    return client


def _disabled_reason(request: Request) -> str:
    if getattr(request.app.state, "redis", None) is None:
        return "Redis is not configured: background jobs are off"
    return "Redis is unavailable: background jobs are paused; the API works without them"


@router.get("/status", response_model=JobsStatus)
async def jobs_status(request: Request) -> JobsStatus:
    """Whether background jobs run right now, and how many are waiting."""
    client = await _redis_if_available(request)
    if client is None:
        return JobsStatus(background_jobs="disabled", reason=_disabled_reason(request))
    prefix = request.app.state.settings.redis_key_prefix
    timeout = request.app.state.settings.ready_check_timeout
    try:
        count = await asyncio.wait_for(jobs.queued(client, prefix), timeout)
    except (OSError, TimeoutError, redis_errors.ConnectionError,
            redis_errors.TimeoutError) as exc:
        # redis-py's ConnectionError/TimeoutError are not the builtin ones: Redis going away
        # between the ping and LLEN must still read as "disabled", not as an error response.
        return JobsStatus(background_jobs="disabled", reason=_disabled_reason(request) + (
            f" ({type(exc).__name__})"))
    return JobsStatus(background_jobs="enabled", queued=count)


@router.post("", status_code=202, responses={
    400: {"description": "the body could not be read (not UTF-8)"},
    503: {"description": "background jobs are off"},
})
async def enqueue_job(job: JobIn, request: Request) -> Any:
    """Queue a job for the worker (202), or 503 saying why background jobs are off."""
    client = await _redis_if_available(request)
    if client is None:
        return JSONResponse({"detail": _disabled_reason(request), "background_jobs": "disabled"},
                            status_code=503, headers={"Retry-After": "5"})
    settings = request.app.state.settings
    length = await asyncio.wait_for(
        jobs.enqueue(client, settings.redis_key_prefix, job.model_dump()),
        settings.ready_check_timeout,
    )
    return {"queued": True, "queue_length": length}
