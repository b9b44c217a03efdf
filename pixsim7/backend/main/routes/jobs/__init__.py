"""POST /api/v1/jobs queues a job for the arq worker; GET /api/v1/jobs/{id} says what became of
it; GET /api/v1/jobs/kinds lists the kinds; GET /api/v1/jobs/status says whether jobs run.

Background jobs need Redis. While Redis is down the API says so (503 on enqueue, `disabled` in
the status) instead of failing with an error.

Queueing is bounded: in production (DEBUG=false) it needs `Authorization: Bearer <JOBS_TOKEN>`
(JOBS_TOKEN defaults to ADMIN_TOKEN), a payload may hold JOB_MAX_PAYLOAD_BYTES of JSON, and
at most JOBS_MAX_QUEUED jobs wait or run at once; debug-only kinds (`noop`) are not offered.
"""


import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from pixsim7.backend.main.api.deps import AppSettings, Jobs, MaybeRedis
from pixsim7.backend.main.api.schemas import (
    JOB_IN_SCHEMA,
    JobAccepted,
    JobIn,
    JobKindOut,
    JobsStatus,
    JobState,
)
from pixsim7.backend.main.api.security import require_bearer
from pixsim7.backend.main.infrastructure.adapters.redis import REDIS_DOWN, RedisStatus
from pixsim7.backend.main.infrastructure.registries import jobs
from pixsim7.backend.main.shared.config import Settings
from pixsim7.backend.main.state import state_of

QUEUE_FULL_RETRY_AFTER_S = 30


router = APIRouter(tags=["jobs"])


def _offered(settings: Settings, registry: jobs.JobRegistry) -> list[jobs.JobKind]:
    """The kinds this app's API takes: its registry's (locked), without the debug-only ones
    in production."""
    return [kind for kind in registry.kinds() if settings.debug or not kind.debug_only]


def _require_writer(request: Request, settings: Settings) -> None:
    """In production, queueing needs the jobs token (JOBS_TOKEN, else ADMIN_TOKEN); in debug,
    only when JOBS_TOKEN is set."""
    if settings.debug and not settings.jobs_token:
        return
    expected = settings.jobs_token or state_of(request.app).admin_token
    require_bearer(request, expected,
                   "queueing jobs is off: set JOBS_TOKEN (or ADMIN_TOKEN) to allow it",
                   "jobs authentication required: Authorization: Bearer <JOBS_TOKEN>")


async def _job_in(request: Request) -> JobIn:
    """The body, read only once the caller may queue: a client without the credential learns
    nothing of the schema. Errors as FastAPI reports a body's."""
    raw = await request.body()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, detail="There was an error parsing the body") from None
    try:
        return JobIn.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]) from None




async def _on_redis(
    redis: RedisStatus | None, settings: Settings,
    operation: Callable[[Any, str], Awaitable[Any]],
) -> Any:
    """Run one Redis command bounded by READY_CHECK_TIMEOUT; None when Redis is off or down.

    The outcome is recorded on the app's RedisStatus, so background features follow the live
    state.
    """
    if redis is None or not redis.configured:
        return None
    try:
        async with asyncio.timeout(settings.ready_check_timeout):  # no task per request
            result = await operation(redis.client, settings.redis_key_prefix)
    except REDIS_DOWN as exc:  # nothing here runs under WATCH (enqueueing is one script)
        redis.mark(type(exc).__name__)
        return None
    redis.mark(None)
    return result


def _disabled_reason(redis: RedisStatus | None) -> str:
    if redis is None or not redis.configured:
        return "Redis is not configured: background jobs are off"
    return "Redis is unavailable: background jobs are paused; the API works without them"


@router.get("/status", response_model=JobsStatus)
async def jobs_status(redis: MaybeRedis, settings: AppSettings) -> JobsStatus:
    """Whether background jobs run right now, and how many are waiting."""
    count = await _on_redis(redis, settings, jobs.queued)
    if count is None:
        return JobsStatus(background_jobs="disabled", reason=_disabled_reason(redis))
    return JobsStatus(background_jobs="enabled", queued=count)


def _unavailable(redis: RedisStatus | None) -> JSONResponse:
    return JSONResponse({"detail": _disabled_reason(redis), "background_jobs": "disabled"},
                        status_code=503, headers={"Retry-After": "5"})


def _validated_payload(job: JobIn, offered: list[jobs.JobKind]) -> dict[str, Any]:
    """The payload as its kind's model reads it; 422 naming the culprit otherwise."""
    kind = next((kind for kind in offered if kind.name == job.kind), None)
    if kind is None:
        known = ", ".join(kind.name for kind in offered)
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
async def job_kinds(settings: AppSettings, registry: Jobs) -> list[JobKindOut]:
    """The job kinds a worker runs, each with its owner and the JSON Schema of its payload."""
    return [JobKindOut(kind=k.name, description=k.description, owner=k.owner,
                       payload_schema=k.schema())
            for k in _offered(settings, registry)]


# One dict for every app: FastAPI reads it to build an app's OpenAPI document and changes nothing.
@router.post("", status_code=202, response_model=JobAccepted, openapi_extra={
    "requestBody": {"required": True, "content": {"application/json": {
        "schema": JOB_IN_SCHEMA}}}}, responses={
    400: {"description": "the body could not be read (not UTF-8)"},
    401: {"description": "queueing needs `Authorization: Bearer <JOBS_TOKEN>` (production)"},
    413: {"description": "the payload is larger than JOB_MAX_PAYLOAD_BYTES"},
    422: {"description": "unknown job kind, or a payload its kind refuses; nothing is queued"},
    503: {"description": "background jobs are off, or the queue is full (Retry-After)"},
})
async def enqueue_job(request: Request, settings: AppSettings, registry: Jobs,
                      redis: MaybeRedis) -> Any:
    """Queue a job for the worker (202 with its id), or 503 saying why background jobs are off."""
    _require_writer(request, settings)
    job = await _job_in(request)
    payload = _validated_payload(job, _offered(settings, registry))
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    if size > settings.job_max_payload_bytes:
        raise HTTPException(413, detail=(
            f"the payload has {size} bytes of JSON; a job's payload may have "
            f"{settings.job_max_payload_bytes} (JOB_MAX_PAYLOAD_BYTES)"))
    try:
        job_id = await _on_redis(redis, settings, lambda client, prefix: jobs.enqueue(
            client, prefix, job.kind, payload, max_queued=settings.jobs_max_queued))
    except jobs.QueueFull as exc:
        return JSONResponse({"detail": f"{exc}; retry later", "background_jobs": "enabled"},
                            status_code=503,
                            headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_S)})
    if job_id is None:
        return _unavailable(redis)
    return JobAccepted(id=job_id, kind=job.kind)


@router.get("/{job_id}", response_model=JobState, responses={
    404: {"description": "no such job (never queued, or its result has expired)"},
    503: {"description": "background jobs are off"},
})
async def get_job(redis: MaybeRedis, settings: AppSettings, job_id: str = Path(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9]+$")) -> Any:
    """A job's status and, once it ended, its result or its error's class."""
    state = await _on_redis(redis, settings, lambda client, prefix: jobs.job_state(
        client, prefix, job_id))
    if state is None:
        return _unavailable(redis)
    if state["status"] == "not_found":
        return JSONResponse(state, status_code=404)
    return JobState(**state)
