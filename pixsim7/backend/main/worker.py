"""The worker profile as an arq worker: `WORKER_PLAN` is its startup, its teardown the shutdown.

`pixsim7-backend worker` and `arq pixsim7.backend.main.worker.WorkerSettings` run the same
worker. Each job's context carries the worker's app (`ctx["app"]`) and its state.
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import AsyncExitStack
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Function, Retry, func
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pixsim7.backend.main.infrastructure import jobs
from pixsim7.backend.main.infrastructure.core_jobs import job_registry
from pixsim7.backend.main.shared.config import Settings, get_settings
from pixsim7.backend.main.shared.logs import configure_logging
from pixsim7.backend.main.startup import PLANS, run_plan

logger = logging.getLogger("pixsim7.worker")
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)


class WorkerConfigError(ValueError):
    """The worker cannot run with these settings; the message says what to set."""


def _function(kind: jobs.JobKind) -> Function:
    retryable = (jobs.RetryableJobError, *kind.retry_on)

    async def run(ctx: dict[str, Any], payload: dict[str, Any]) -> Any:
        try:
            return await kind.run(ctx["app"], kind.payload.model_validate(payload))
        except retryable as exc:
            settings: Settings = ctx["settings"]
            if ctx["job_try"] >= settings.job_max_tries:
                raise  # the last try: the job ends failed with this error's class
            delay = settings.job_retry_backoff_seconds * 2 ** (ctx["job_try"] - 1)
            logger.warning("job %s (%s) try %d failed with %s; retrying in %.1f s",
                           ctx["job_id"], kind.name, ctx["job_try"], type(exc).__name__, delay)
            raise Retry(defer=delay) from exc

    return func(run, name=kind.name)


async def _startup(ctx: dict[str, Any]) -> None:
    from pixsim7.backend.main.main import create_app  # the app module imports the route plugins

    settings: Settings = ctx["settings"]
    app = create_app(settings, profile="worker")
    stack = AsyncExitStack()
    await stack.enter_async_context(run_plan(app, PLANS["worker"], "worker"))
    ctx.update(app=app, state=app.state, teardown=stack)
    # From now on a lost Redis is waited for, not fatal: every command arq sends retries with
    # backoff until Redis answers again (startup itself still fails fast, per the plan).
    ctx["redis"].set_retry(RedisRetry(ExponentialWithJitterBackoff(base=0.1, cap=2.0), -1,
                                      (*REDIS_DOWN, OSError)))
    logger.info("worker ready; taking jobs from %s", jobs.queue_name(settings.redis_key_prefix))


async def _shutdown(ctx: dict[str, Any]) -> None:
    stack: AsyncExitStack | None = ctx.pop("teardown", None)
    if stack is not None:
        await stack.aclose()


def worker_name() -> str:
    """This worker among the others on its queue: host and process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


def worker_settings(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of arq's Worker for this backend's settings."""
    if not settings.redis_url:
        raise WorkerConfigError(
            "REDIS_URL: the worker takes its jobs from the Redis the API enqueues to; set it")
    registry = job_registry()
    return {
        "functions": [_function(kind) for kind in registry.kinds()],
        "queue_name": jobs.queue_name(settings.redis_key_prefix),
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "on_startup": _startup,
        "on_shutdown": _shutdown,
        "ctx": {"settings": settings, "job_registry": registry},
        # A job taken by a worker that died runs again JOB_TIMEOUT_SECONDS + 10 s later.
        "job_timeout": settings.job_timeout_seconds,
        "max_tries": settings.job_max_tries,
        # One record per worker (arq's default is one per queue, which workers overwrite).
        "health_check_key": jobs.health_key(settings.redis_key_prefix, worker_name()),
        "health_check_interval": settings.worker_health_interval_seconds,
        "job_completion_wait": settings.shutdown_drain_seconds,
    }


def __getattr__(name: str) -> Any:
    # Built on first use so that importing this module never parses the environment.
    if name == "WorkerSettings":  # what the `arq` command line reads: it logs like our CLI
        settings = get_settings()
        configure_logging(settings.log_level, settings.log_format)
        return worker_settings(settings)
    raise AttributeError(name)
