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
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

from arq.connections import RedisSettings
from arq.worker import Function, Retry, func
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pixsim7.backend.main.core_jobs import CORE_JOBS
from pixsim7.backend.main.infrastructure import jobs
from pixsim7.backend.main.infrastructure.manifests import ManifestError, manifest_folders
from pixsim7.backend.main.infrastructure.plugins.manifest import MANIFEST_FILENAME, load_manifest
from pixsim7.backend.main.shared.config import Settings, get_settings
from pixsim7.backend.main.shared.logs import configure_logging
from pixsim7.backend.main.startup import WORKER, check_required, run_plan

logger = logging.getLogger("pixsim7.worker")
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)
T = TypeVar("T")


class WaitForRedis(RedisRetry):
    """The retry policy of a running worker's Redis commands.

    While the worker runs, a lost Redis is waited for (backoff capped at 2 s) and the worker
    goes on once it answers. Once it is stopping (`stop()`), nothing waits for a Redis that is
    gone: a command tries once more at once and fails, and arq's main loop ends as the drain
    would end it (while it waited, it held the connection pool's lock, so a job ending during
    the drain could not even try to record its end).
    """

    __slots__ = ("stopped", "main_loop")

    def __init__(self) -> None:
        super().__init__(ExponentialWithJitterBackoff(base=0.1, cap=2.0), -1,
                         (*REDIS_DOWN, OSError))
        self.stopped = asyncio.Event()
        self.main_loop: asyncio.Task[Any] | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> WaitForRedis:
        # redis-py copies the retry policy into each connection; the worker has one policy,
        # so that stopping reaches every connection.
        return self

    def stop(self) -> None:
        self.stopped.set()

    @property
    def stopping(self) -> bool:
        return self.stopped.is_set()

    async def call_with_retry(self, do: Callable[[], Awaitable[T]],
                              fail: Callable[[Exception], Any]) -> T:
        self._backoff.reset()
        failures = 0
        while True:
            try:
                return await do()
            except self._supported_errors as error:
                failures += 1
                await fail(error)
                if self.stopping:
                    if asyncio.current_task() is not self.main_loop:
                        raise
                    self.main_loop.cancel()  # arq treats this as the end of its main loop
                    await asyncio.sleep(0)
                with contextlib.suppress(TimeoutError):  # woken early when stopping begins
                    await asyncio.wait_for(self.stopped.wait(), self._backoff.compute(failures))


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
        except (jobs.RetryableJobError, *kind.retry_on) as exc:
            settings: Settings = ctx["settings"]
            if ctx["job_try"] >= settings.job_max_tries:
                raise  # the last try: the job ends failed with this error's class
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
    _forgive_outages_when_stopping(ctx["redis"], retry)
    # Stopping begins at SIGTERM or SIGINT (see _observe_signals), and at the latest when
    # arq's main loop ends: from then on nothing waits for Redis, so neither a job ending
    # during the drain nor the teardown waits on a Redis that is gone.
    if ctx.get("observe_signals"):
        _observe_signals(ctx)
    asyncio.current_task().add_done_callback(lambda _: stop_waiting_for_redis(ctx))
    logger.info("worker ready; taking jobs from %s", jobs.queue_name(settings.redis_key_prefix))


def stop_waiting_for_redis(ctx: dict[str, Any]) -> None:
    """The worker is stopping: Redis commands no longer wait for a lost Redis."""
    ctx["redis_retry"].stop()


def _observe_signals(ctx: dict[str, Any]) -> None:
    """Begin stopping at SIGINT and SIGTERM, beside arq's own handlers (the drain).

    arq takes these signals through its event loop, which asyncio wakes from its wakeup file
    descriptor whatever Python-level handler is set; so a Python-level handler set here runs
    as well, without replacing arq's. Only for a worker that owns its process (both command
    lines); `_shutdown` puts the previous handlers back.
    """
    loop = asyncio.get_running_loop()
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        before = previous[signum] = signal.getsignal(signum)

        def observe(num: int, frame: Any, before: Any = before) -> None:
            loop.call_soon_threadsafe(stop_waiting_for_redis, ctx)
            if callable(before):
                before(num, frame)

        signal.signal(signum, observe)
    ctx["previous_signal_handlers"] = previous


def _forgive_outages_when_stopping(pool: Any, retry: WaitForRedis) -> None:
    """Once the worker is stopping, what arq still writes to a lost Redis is best effort.

    That is the bookkeeping of a job the drain cancelled (or that ended meanwhile) and the
    removal of the health record. Skipped, the job's in-progress mark and the health record
    expire by themselves, so such a job runs again as after a killed worker.
    """

    def best_effort(call: Callable[..., Awaitable[Any]], what: str, empty: Any) -> Callable:
        async def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return await call(*args, **kwargs)
            except (*REDIS_DOWN, OSError) as exc:
                if not retry.stopping:
                    raise
                logger.warning("Redis is unavailable at shutdown (%s): %s", type(exc).__name__,
                               what)
                return empty
        return run

    pipeline = pool.pipeline

    def pipeline_forgiving(*args: Any, **kwargs: Any) -> Any:
        pipe = pipeline(*args, **kwargs)
        pipe.execute = best_effort(pipe.execute, "a job's state was not written; it runs "
                                   "again once its in-progress mark expires", [])
        return pipe

    # arq writes a job's end through a pipeline, and removes the health record with DEL.
    pool.pipeline = pipeline_forgiving
    pool.delete = best_effort(pool.delete, "the worker's health record expires by itself "
                              "within WORKER_HEALTH_INTERVAL_SECONDS", 0)


async def _shutdown(ctx: dict[str, Any]) -> None:
    for signum, handler in ctx.pop("previous_signal_handlers", {}).items():
        signal.signal(signum, handler)
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
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
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
