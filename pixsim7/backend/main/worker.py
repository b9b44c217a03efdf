"""The worker profile as an arq worker: its plan is the startup, its teardown the shutdown.

`pixsim7-backend worker` and `arq pixsim7.backend.main.worker.WorkerSettings` run the same
worker. Each job's context carries the worker's app (`ctx["app"]`) and its state.

arq fixes a worker's function names before its startup runs, so they come from what is known
without starting anything: the core kinds and the kinds the enabled feature plugins declare in
their manifests. Each function runs the kind the worker's own app registered during the plan
(`app.state.job_registry`, filled when the plugin was enabled, then locked).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Function, Retry, func

from pixsim7.backend.main.core_jobs import CORE_JOBS
from pixsim7.backend.main.infrastructure.adapters import job_codec
from pixsim7.backend.main.infrastructure.adapters.arq_adapter import (
    WaitForRedis,
    forgive_outages_when_stopping,
    leave_jobs_queued_when_a_watch_is_lost,
    observe_signals,
    restore_signal_handlers,
    stop_waiting_for_redis,
)
from pixsim7.backend.main.infrastructure.adapters.redis import REDIS_DOWN
from pixsim7.backend.main.infrastructure.discovery.manifests import ManifestError, manifest_folders
from pixsim7.backend.main.infrastructure.discovery.plugins.manifest import (
    MANIFEST_FILENAME,
    load_manifest,
)
from pixsim7.backend.main.infrastructure.registries import jobs
from pixsim7.backend.main.shared.config import Settings, get_settings
from pixsim7.backend.main.shared.logs import configure_logging
from pixsim7.backend.main.startup import WORKER, check_required, run_plan

logger = logging.getLogger("pixsim7.worker")


class WorkerConfigError(ValueError):
    """The worker cannot run with these settings; the message says what to set."""


def _function(name: str) -> Function:
    async def run(ctx: dict[str, Any], payload: dict[str, Any]) -> Any:
        kind = ctx["app"].state.job_registry.get(name)
        if kind is None:
            raise jobs.JobKindUnavailable(
                f"job kind {name!r} is not registered in this worker: the plugin declaring it "
                "failed or was not enabled here (see the worker's plugins step)")
        try:
            return await kind.run(ctx["app"], kind.payload.model_validate(payload))
        except Exception as exc:
            settings: Settings = ctx["settings"]
            if not kind.retries(exc) or ctx["job_try"] >= settings.job_max_tries:
                raise  # not worth another try, or the last: the job ends failed with its class
            delay = settings.job_retry_backoff_seconds * 2 ** (ctx["job_try"] - 1)
            logger.warning("job %s (%s) try %d failed with %s; retrying in %.1f s",
                           ctx["job_id"], name, ctx["job_try"], type(exc).__name__, delay)
            raise Retry(defer=delay) from exc

    return func(run, name=name)


def declared_job_kinds(settings: Settings) -> list[str]:
    """The core kinds and those the enabled feature plugins' manifests declare, by name.

    Read before anything starts. A folder or manifest that cannot be read adds nothing here:
    the worker plan's settings or plugins step reports it.
    """
    names = {kind.name for kind in CORE_JOBS}
    try:
        folders = manifest_folders(Path(settings.feature_plugins_dir), "feature_plugins_dir")
    except ManifestError:
        folders = []
    for folder in folders:
        try:
            manifest = load_manifest(folder / MANIFEST_FILENAME, "feature")
        except ManifestError:
            continue
        if manifest.enabled:
            names.update(job.kind for job in manifest.jobs)
    return sorted(names)


def unregistered_job_kinds(declared: list[str], registry: jobs.JobRegistry) -> list[str]:
    """The declared kinds a worker's app did not register (their plugin failed there)."""
    return sorted(set(declared) - set(registry.names()))


async def _startup(ctx: dict[str, Any]) -> None:
    from pixsim7.backend.main.main import create_app  # the app module imports the route plugins

    settings: Settings = ctx["settings"]
    queue = jobs.queue_name(settings.redis_key_prefix)
    app = create_app(settings, profile=WORKER.name)
    stack = AsyncExitStack()
    await stack.enter_async_context(run_plan(app, WORKER.plan, WORKER.name))
    ctx.update(app=app, state=app.state, teardown=stack, job_registry=app.state.job_registry)
    missing = unregistered_job_kinds(ctx["job_kinds"], app.state.job_registry)
    if missing:
        logger.warning("job kinds declared but not registered (their plugin failed): %s; "
                       "their jobs fail with JobKindUnavailable", ", ".join(missing))
    # From now on a lost Redis is waited for, not fatal: every command arq sends retries with
    # backoff until Redis answers again (startup itself still fails fast, per the plan).
    retry: WaitForRedis = ctx["redis_retry"]
    retry.main_loop = asyncio.current_task()  # arq runs on_startup in its main loop's task
    ctx["redis"].set_retry(retry)
    forgive_outages_when_stopping(ctx["redis"], retry)
    leave_jobs_queued_when_a_watch_is_lost(ctx["redis"], queue)
    # Stopping begins at SIGTERM or SIGINT (see observe_signals), and at the latest when
    # arq's main loop ends: from then on nothing waits for Redis, so neither a job ending
    # during the drain nor the teardown waits on a Redis that is gone.
    if ctx.get("observe_signals"):
        observe_signals(ctx)
    asyncio.current_task().add_done_callback(lambda _: stop_waiting_for_redis(ctx))
    logger.info("worker ready; taking jobs from %s", queue)


async def _shutdown(ctx: dict[str, Any]) -> None:
    restore_signal_handlers(ctx)
    stack: AsyncExitStack | None = ctx.pop("teardown", None)
    if stack is not None:
        await stack.aclose()


def worker_name() -> str:
    """This worker among the others on its queue: host and process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


def worker_settings(settings: Settings, *, owns_process: bool = False) -> dict[str, Any]:
    """The keyword arguments of arq's Worker for this backend's settings.

    `owns_process`: the worker runs alone in its process (the command lines), so it may
    observe SIGINT and SIGTERM to begin stopping; in-process workers (tests) leave signals be.
    """
    check_required(settings, WORKER.required_settings)
    if not settings.redis_url:  # in debug: only `pixsim7-backend worker` uses embedded servers
        raise WorkerConfigError(
            "REDIS_URL is not set; arq's command line starts no embedded Redis: set REDIS_URL, "
            "or run `pixsim7-backend worker`")
    names = declared_job_kinds(settings)
    return {
        "functions": [_function(name) for name in names],
        "queue_name": jobs.queue_name(settings.redis_key_prefix),
        # redis-py retries, through the policy set at startup (WaitForRedis), only the errors
        # a connection's `retry_on_error` names: without them a connection lost while a
        # command runs (not found dead when taken from the pool) ends arq's main loop.
        "redis_settings": replace(RedisSettings.from_dsn(settings.redis_url),
                                  retry_on_error=list(REDIS_DOWN)),
        "on_startup": _startup,
        "on_shutdown": _shutdown,
        "ctx": {"settings": settings, "job_kinds": names, "redis_retry": WaitForRedis(),
                "observe_signals": owns_process},
        # A job taken by a worker that died runs again JOB_TIMEOUT_SECONDS + 10 s later.
        "job_timeout": settings.job_timeout_seconds,
        "max_tries": settings.job_max_tries,
        # One record per worker (arq's default is one per queue, which workers overwrite).
        "health_check_key": jobs.health_key(settings.redis_key_prefix, worker_name()),
        "health_check_interval": settings.worker_health_interval_seconds,
        "poll_delay": settings.job_poll_delay_seconds,
        "job_completion_wait": settings.shutdown_drain_seconds,
        # Jobs and results are JSON: a record in any other form fails, unread (job_codec).
        **job_codec.worker_codec(settings.job_max_result_bytes),
        "keep_result": settings.job_result_ttl_seconds,
    }


# For `arq ... --custom-log-dict pixsim7.backend.main.worker.ARQ_LOG_CONFIG`: arq's command line
# otherwise adds its own plain-text handler to the `arq` logger, so each arq line would appear
# twice, once in LOG_FORMAT and once as plain text. This configuration leaves logging as
# WorkerSettings set it up.
ARQ_LOG_CONFIG: dict[str, Any] = {"version": 1, "disable_existing_loggers": False}


def __getattr__(name: str) -> Any:
    # Built on first use so that importing this module never parses the environment.
    if name == "WorkerSettings":  # what the `arq` command line reads: it logs like our CLI
        settings = get_settings()
        configure_logging(settings.log_level, settings.log_format, settings.secret_values())
        return worker_settings(settings, owns_process=True)
    raise AttributeError(name)
