"""Liveness (`/`), readiness (`/ready`) and the soft health view (`/health`).

Readiness is 503 when the database check fails, when a required plugin failed, before startup
completes and once shutdown has begun; `degraded` (200) when only optional parts are down.
Checks run concurrently, each bounded by READY_CHECK_TIMEOUT, and a result is reused for
READY_CACHE_TTL seconds so a storm of probes is not a storm of queries.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse

from pixsim7.backend.main.api.deps import AppSettings
from pixsim7.backend.main.api.health_models import Health, Liveness, Readiness
from pixsim7.backend.main.state import state_of

router = APIRouter(tags=["health"])
logger = logging.getLogger("pixsim7.health")


@dataclass(frozen=True)
class CheckState:
    """One dependency check's last result: its status, how long it took, since when it holds."""

    status: str
    duration_ms: float
    since: float  # wall-clock time of the first result with this status

    def public(self) -> dict[str, Any]:
        since = datetime.fromtimestamp(self.since, UTC).isoformat(timespec="milliseconds")
        return {"status": self.status, "duration_ms": round(self.duration_ms, 3),
                "since": since}


class ReadinessChecker:
    """Runs the dependency checks for one app and remembers the last result briefly."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._cached: tuple[float, dict[str, str]] | None = None
        self._inflight: asyncio.Task[dict[str, str]] | None = None
        self.checks: dict[str, CheckState] = {}
        self.runs: collections.Counter[str] = collections.Counter()  # checks run, by name
        self.status: str | None = None

    def summary(self) -> dict[str, Any]:
        settings = state_of(self.app).settings
        return {"check_timeout": settings.ready_check_timeout,
                "cache_ttl": settings.ready_cache_ttl}

    async def dependencies(self) -> dict[str, str]:
        """`database` and `redis` states, fresh or at most READY_CACHE_TTL seconds old."""
        settings = state_of(self.app).settings
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < settings.ready_cache_ttl:
            return self._cached[1]
        if self._inflight is None or self._inflight.done():
            # Concurrent probes share one round of checks.
            self._inflight = asyncio.ensure_future(self._check(settings.ready_check_timeout))
        result = await asyncio.shield(self._inflight)
        self._cached = (time.monotonic(), result)
        return result

    def forget(self) -> None:
        """Drop the remembered result: the next probe checks afresh."""
        self._cached = None

    async def observe(self, status: str, lifecycle: str) -> None:
        """Log and publish `readiness.changed` when the readiness status differs from the last."""
        previous, self.status = self.status, status
        if previous is None or previous == status:
            return
        logger.log(logging.WARNING if status == "unavailable" else logging.INFO,
                   "readiness changed from %s to %s", previous, status,
                   extra={"readiness": status, "previous": previous, "lifecycle": lifecycle})
        bus = state_of(self.app).event_bus
        if bus is not None:
            await bus.publish("readiness.changed", {"status": status, "previous": previous,
                                                    "lifecycle": lifecycle})

    async def _check(self, timeout: float) -> dict[str, str]:
        database, redis = await asyncio.gather(self._timed("database", self._database, timeout),
                                               self._timed("redis", self._redis, timeout))
        return {"database": database, "redis": redis}

    async def _timed(self, name: str, check: Callable[[float], Awaitable[str]],
                     timeout: float) -> str:
        started = time.perf_counter()
        status = await check(timeout)
        previous = self.checks.get(name)
        since = previous.since if previous and previous.status == status else time.time()
        self.checks[name] = CheckState(status, (time.perf_counter() - started) * 1000, since)
        self.runs[name] += 1
        return status

    async def _database(self, timeout: float) -> str:
        db = state_of(self.app).db
        if db is None:
            return "error: NotConnected"
        try:
            await asyncio.wait_for(db.ping(timeout), timeout + 0.1)
        except Exception as exc:
            return f"error: {type(exc).__name__}"
        return "connected"

    async def _redis(self, timeout: float) -> str:
        redis = state_of(self.app).redis
        if redis is None or not redis.configured:
            return "disabled"
        # The answer is recorded on the app's RedisStatus, so background features follow it.
        return "connected" if await redis.refresh(timeout) else "disconnected"


def _checker(app: FastAPI) -> ReadinessChecker:
    checker = state_of(app).readiness
    if not isinstance(checker, ReadinessChecker):
        raise RuntimeError("this app has no readiness checker: build it with create_app")
    return checker


def plugin_counts(app: FastAPI) -> tuple[dict[str, Any], list[str]]:
    """(`{"enabled": n, "failed": [ids]}`, the ids of failed required plugins)."""
    enabled, failed, required_failed = 0, [], []
    state = state_of(app)
    for manager in (state.plugin_manager, state.routes_manager):
        if manager is None:
            continue
        enabled += len(manager.enabled_ids())
        failed += manager.failed_ids()
        required_failed += manager.required_failed_ids()
    return {"enabled": enabled, "failed": sorted(failed)}, required_failed


async def readiness(app: FastAPI) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of the readiness check."""
    state = state_of(app)
    lifecycle = state.lifecycle or "starting"
    plugins, required_failed = plugin_counts(app)
    checker = _checker(app)
    if lifecycle != "ready":
        body = {"status": "unavailable", "lifecycle": lifecycle,
                "database": "unknown", "redis": "unknown",
                "plugins_loaded": False, "plugins": plugins}
        await checker.observe("unavailable", lifecycle)
        return 503, body
    deps = await checker.dependencies()
    writes = state.db.write_failure() if state.db is not None else None
    if deps["database"] != "connected" or required_failed:
        status = "unavailable"
    elif deps["redis"] != "connected" or plugins["failed"] or writes:
        status = "degraded"
    else:
        status = "ready"
    body = {"status": status, "lifecycle": lifecycle, **deps,
            "plugins_loaded": not required_failed, "plugins": plugins}
    if writes:  # reads still work, so the instance stays in rotation
        body["database_writes"] = f"failing: {writes}"
    await checker.observe(status, lifecycle)
    return (503 if status == "unavailable" else 200), body


@router.get("/", summary="Liveness: the process answers", response_model=Liveness)
async def liveness(settings: AppSettings) -> JSONResponse:
    # A response returned as is skips the model's validation: liveness should cost nothing.
    return JSONResponse({"name": settings.app_name, "version": settings.app_version,
                         "status": "running"})


@router.get("/ready", summary="Readiness: 503 unless this instance can take traffic",
            response_model=Readiness,
            responses={503: {"model": Readiness,
                             "description": "unavailable: not started, stopping, or the "
                                            "database or a required plugin is down"}})
async def ready(request: Request, verbose: str | None = Query(
        None, description="present (any value, or none as in `?verbose`): add `checks`, "
                          "each dependency check's status, duration and since when")
) -> JSONResponse:
    status_code, body = await readiness(request.app)
    if verbose is not None:
        checks = _checker(request.app).checks
        body["checks"] = {name: state.public() for name, state in checks.items()}
    return JSONResponse(body, status_code=status_code)


@router.get("/health", summary="Soft health view for dashboards: always 200",
            response_model=Health)
async def health(request: Request) -> dict[str, Any]:
    _, body = await readiness(request.app)
    state = state_of(request.app)
    seed = state.startup.status("seed") if state.startup is not None else None
    providers = state.providers
    return {
        # The service's original meaning: healthy when the database answers.
        "status": "healthy" if body["database"] == "connected" else "degraded",
        "database": body["database"],
        "redis": "connected" if body["redis"] == "connected" else "disconnected",
        "providers": providers.ids() if providers is not None else [],
        "readiness": body["status"],
        "lifecycle": body["lifecycle"],
        "plugins_loaded": body["plugins_loaded"],
        "plugins": body["plugins"],
        "seed": seed or "not_run",
    }
