"""GET /api/v1/admin/workers: the workers alive on this app's job queue, from their records."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from pixsim7.backend.main.api.deps import AppSettings, MaybeRedis
from pixsim7.backend.main.api.security import require_admin
from pixsim7.backend.main.infrastructure.adapters.redis import REDIS_DOWN
from pixsim7.backend.main.infrastructure.registries import jobs
from pixsim7.backend.main.shared.paths import ADMIN_PREFIX

router = APIRouter(prefix=ADMIN_PREFIX, dependencies=[Depends(require_admin)], tags=["admin"])


@router.get("/workers", responses={503: {"description": "Redis is off or unavailable"}})
async def workers(redis: MaybeRedis, settings: AppSettings) -> Any:
    """Each live worker: when it last wrote its record and its job counts."""
    if redis is None or not redis.configured:
        return JSONResponse({"detail": "Redis is not configured: no workers"}, status_code=503)
    try:
        found = await asyncio.wait_for(
            jobs.workers(redis.client, settings.redis_key_prefix),
            settings.ready_check_timeout)
    except REDIS_DOWN as exc:
        redis.mark(type(exc).__name__)
        return JSONResponse({"detail": "Redis is unavailable, try again later"}, status_code=503,
                            headers={"Retry-After": "1"})
    return {"queue": jobs.queue_name(settings.redis_key_prefix), "workers": found}
