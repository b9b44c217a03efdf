"""POST /api/v1/jobs queues a job for the arq worker; GET /api/v1/jobs/{id} says what became of
it; GET /api/v1/jobs/kinds lists the kinds; GET /api/v1/jobs/status says whether jobs run.

Background jobs need Redis. While Redis is down the API says so (503 on enqueue, `disabled` in
the status) instead of failing with an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import redis.exceptions as redis_errors
from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from pixsim7.backend.main.infrastructure import jobs


class JobIn(BaseModel):
    kind: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_.]+$")
    payload: dict[str, Any] = Field(default_factory=dict)


class JobAccepted(BaseModel):
    id: str
    kind: str
    status: Literal["queued"] = "queued"


class JobState(BaseModel):
    id: str
    status: Literal["queued", "in_progress", "complete", "failed", "not_found"]
    tries: int | None = None
    result: Any = None
    error: str | None = None


class JobKindOut(BaseModel):
    kind: str
    description: str
    owner: str = Field(description='"core", or the id of the feature plugin declaring the kind')
    payload_schema: dict[str, Any]


class JobsStatus(BaseModel):
    background_jobs: Literal["enabled", "disabled"]
    reason: str | None = None
    queued: int | None = None


router = APIRouter(tags=["jobs"])


def _registry(request: Request) -> jobs.JobRegistry:
    """This app's job kinds: the core's and its enabled feature plugins' (locked)."""
    return request.app.state.job_registry


# What Redis going away looks like from redis-py (its own classes, not the builtin ones).
# arq enqueues under WATCH, and redis-py reports a connection lost while watching as a
# WatchError; a real conflict cannot happen, each job id being a fresh UUID.
_REDIS_DOWN = (OSError, TimeoutError, redis_errors.ConnectionError, redis_errors.TimeoutError,
               redis_errors.WatchError)


async def _on_redis(
    request: Request, operation: Callable[[Any, str], Awaitable[Any]]
) -> Any:
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


def _unavailable(request: Request) -> JSONResponse:
    return JSONResponse({"detail": _disabled_reason(request), "background_jobs": "disabled"},
                        status_code=503, headers={"Retry-After": "5"})


def _validated_payload(job: JobIn, registry: jobs.JobRegistry) -> dict[str, Any]:
    """The payload as its kind's model reads it; 422 naming the culprit otherwise."""
    kind = registry.get(job.kind)
    if kind is None:
        known = ", ".join(registry.names())
        raise HTTPException(422, detail=[{
            "type": "unknown_job_kind", "loc": ["body", "kind"], "input": job.kind,
            "msg": f"unknown job kind {job.kind!r}; known kinds: {known}"}])
    try:
        return kind.payload.model_validate(job.payload).model_dump(mode="json")
    except ValidationError as exc:
        raise HTTPException(422, detail=[
            {"type": e["type"], "loc": ["body", "payload", *e["loc"]], "msg": e["msg"]}
            for e in exc.errors()]) from None


@router.get("/kinds", response_model=list[JobKindOut])
async def job_kinds(request: Request) -> list[JobKindOut]:
    """The job kinds a worker runs, each with its owner and the JSON Schema of its payload."""
    return [JobKindOut(kind=k.name, description=k.description, owner=k.owner,
                       payload_schema=k.schema())
            for k in _registry(request).kinds()]


@router.post("", status_code=202, response_model=JobAccepted, responses={
    400: {"description": "the body could not be read (not UTF-8)"},
    422: {"description": "unknown job kind, or a payload its kind refuses; nothing is queued"},
    503: {"description": "background jobs are off"},
})
async def enqueue_job(job: JobIn, request: Request) -> Any:
    """Queue a job for the worker (202 with its id), or 503 saying why background jobs are off."""
    payload = _validated_payload(job, _registry(request))
    job_id = await _on_redis(request, lambda client, prefix: jobs.enqueue(
        client, prefix, job.kind, payload))
    if job_id is None:
        return _unavailable(request)
    return JobAccepted(id=job_id, kind=job.kind)


@router.get("/{job_id}", response_model=JobState, responses={
    404: {"description": "no such job (never queued, or its result has expired)"},
    503: {"description": "background jobs are off"},
})
async def get_job(request: Request, job_id: str = Path(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9]+$")) -> Any:
    """A job's status and, once it ended, its result or its error's class."""
    state = await _on_redis(request, lambda client, prefix: jobs.job_state(
        client, prefix, job_id))
    if state is None:
        return _unavailable(request)
    if state["status"] == "not_found":
        return JSONResponse(state, status_code=404)
    return JobState(**state)
