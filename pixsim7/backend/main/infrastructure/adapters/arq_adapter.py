"""Where the worker and the jobs API need more of arq than its extension points give: each
workaround of arq's (or redis-py's) internals lives here, and `tests/backend/test_arq_adapter.py`
fails when an upgrade changes what it relies on.

Checked against arq 0.26 to 0.28 and redis-py 5 (pyproject pins arq below 0.29):

- `WaitForRedis`: redis-py's retry policy of a running worker's commands. arq has no hook for
  "Redis went away"; the policy waits for Redis while the worker runs, and once it is
  stopping cancels arq's main loop (`Worker.main_task`, the task `on_startup` runs in) rather
  than waiting on a Redis that is gone. It returns itself from `__deepcopy__` because redis-py
  copies the policy into each connection, and stopping must reach every one.
- `forgive_outages_when_stopping`: wraps `pipeline` and `delete` of arq's pool. arq writes a
  job's end through a pipeline and deletes its health record with DEL; when Redis is gone at
  shutdown, those raise inside arq and the process exits with a traceback. No arq hook runs
  around them.
- `leave_jobs_queued_when_a_watch_is_lost`: arq's `start_jobs` reads a job's in-progress mark
  and its score under WATCH, and catches WatchError only around EXEC. A connection lost after
  WATCH makes redis-py raise WatchError at once from EXISTS or ZSCORE (a retry cannot restore
  a WATCH), so it would leave arq's main loop and end the worker. Those two reads answer
  "already taken" instead, which arq handles: it leaves the job queued for its next poll.
- `observe_signals`: arq's `handle_signals` replaces SIGINT and SIGTERM with its own loop
  handlers and offers no callback; a Python-level handler chained beside them learns that
  stopping began (asyncio wakes from its wakeup fd for either).
- `enqueue_bounded`: arq's `enqueue_job` cannot refuse a job when the queue is full, and
  takes three round trips (WATCH, EXISTS, MULTI/EXEC). A bound read before it (ZCARD) is a
  fourth, and two requests at once can both pass it. One Lua script checks the bound and
  writes the job as `enqueue_job` writes it (arq's key prefixes, `serialize_job` with the
  JSON codec, the default expiry), atomically, in one round trip. arq keeps every result until
  it expires; the same script drops the oldest results past the bound (an index of the jobs
  it queued), so what results take in Redis is bounded by the settings, not by throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from arq.constants import (
    expires_extra_ms,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
)
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import Redis
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import NoScriptError, WatchError

from pixsim7.backend.main.infrastructure.adapters import job_codec
from pixsim7.backend.main.infrastructure.adapters.redis import REDIS_DOWN

logger = logging.getLogger("pixsim7.worker")
# The arq releases the workarounds below were checked against (test_arq_adapter pins them).
CHECKED_ARQ_VERSIONS = ("0.26", "0.27", "0.28")
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
        super().__init__(ExponentialWithJitterBackoff(base=0.1, cap=2.0), -1, REDIS_DOWN)
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


def stop_waiting_for_redis(ctx: dict[str, Any]) -> None:
    """The worker is stopping: Redis commands no longer wait for a lost Redis."""
    ctx["redis_retry"].stop()


def observe_signals(ctx: dict[str, Any]) -> None:
    """Begin stopping at SIGINT and SIGTERM, beside arq's own handlers (the drain).

    arq takes these signals through its event loop, which asyncio wakes from its wakeup file
    descriptor whatever Python-level handler is set; so a Python-level handler set here runs
    as well, without replacing arq's. Only for a worker that owns its process (both command
    lines); `restore_signal_handlers` puts the previous handlers back.
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


def forgive_outages_when_stopping(pool: Any, retry: WaitForRedis) -> None:
    """Once the worker is stopping, what arq still writes to a lost Redis is best effort.

    That is the bookkeeping of a job the drain cancelled (or that ended meanwhile) and the
    removal of the health record. Skipped, the job's in-progress mark and the health record
    expire by themselves, so such a job runs again as after a killed worker.
    """

    def best_effort(call: Callable[..., Awaitable[Any]], what: str, empty: Any) -> Callable:
        async def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return await call(*args, **kwargs)
            except REDIS_DOWN as exc:
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


def leave_jobs_queued_when_a_watch_is_lost(pool: Any, queue: str) -> None:
    """When the connection under arq's WATCH of a job is lost, the job stays queued.

    arq's `start_jobs` takes a job by WATCHing its in-progress mark, reading that mark
    (EXISTS) and the job's score in `queue` (ZSCORE), then MULTI/EXEC. Lost after WATCH, the
    connection cannot be retried (the WATCH went with it): redis-py raises WatchError from the
    read. Here those two reads, and only those, answer as for a job another worker took (the
    mark exists; no score), so arq releases its slot and takes the job at its next poll.
    """

    def lost(args: tuple[Any, ...]) -> tuple[bool, Any]:
        name = str(args[0]).upper()
        if name == "EXISTS" and len(args) == 2 and str(args[1]).startswith(
                in_progress_key_prefix):
            return True, 1
        if name == "ZSCORE" and len(args) == 3 and args[1] == queue:
            return True, None
        return False, None

    pipeline = pool.pipeline

    def pipeline_leaving_jobs_queued(*args: Any, **kwargs: Any) -> Any:
        pipe = pipeline(*args, **kwargs)
        immediate = pipe.immediate_execute_command

        async def immediate_or_taken(*command: Any, **options: Any) -> Any:
            try:
                return await immediate(*command, **options)
            except WatchError as exc:
                handled, answer = lost(command)
                if not handled or not isinstance(exc.__context__, REDIS_DOWN):
                    raise
                logger.warning("Redis connection lost while taking a job (%s); the job stays "
                               "queued for the next poll", type(exc.__context__).__name__)
                return answer

        pipe.immediate_execute_command = immediate_or_taken
        return pipe

    pool.pipeline = pipeline_leaving_jobs_queued


def restore_signal_handlers(ctx: dict[str, Any]) -> None:
    """Put back the handlers `observe_signals` chained onto."""
    for signum, handler in ctx.pop("previous_signal_handlers", {}).items():
        signal.signal(signum, handler)


# KEYS: the queue, the job's key, its result's key, the index of the jobs queued here (by
# enqueue time). ARGV: the bound (0: none), the expiry in ms, the serialized job, its score, its
# id, arq's result key prefix. 1: queued; 0: the id is taken; -1: the queue is full. What arq's
# enqueue_job does under WATCH, plus the bound, in one atomic step; and with a bound, the
# results kept stay within it too: past `bound` jobs that ended, the oldest ones' results go.
_ENQUEUE_BOUNDED = """
local bound = tonumber(ARGV[1])
if bound > 0 and redis.call('ZCARD', KEYS[1]) >= bound then return -1 end
if redis.call('EXISTS', KEYS[2], KEYS[3]) > 0 then return 0 end
redis.call('PSETEX', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[5])
if bound > 0 then
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
  local over = redis.call('ZCARD', KEYS[4]) - redis.call('ZCARD', KEYS[1]) - bound
  if over > 0 then
    local oldest = redis.call('ZRANGE', KEYS[4], 0, over + redis.call('ZCARD', KEYS[1]) - 1)
    for _, id in ipairs(oldest) do
      if over == 0 then break end
      if not redis.call('ZSCORE', KEYS[1], id) then
        redis.call('UNLINK', ARGV[6] .. id)
        redis.call('ZREM', KEYS[4], id)
        over = over - 1
      end
    end
  end
end
return 1
"""
_ENQUEUE_BOUNDED_SHA = hashlib.sha1(_ENQUEUE_BOUNDED.encode()).hexdigest()
QUEUED, TAKEN, FULL = 1, 0, -1


async def enqueue_bounded(client: Redis, queue: str, job_id: str, function: str,
                          payload: Any, *, max_queued: int = 0) -> int:
    """Queue job `job_id` running `function(payload)` on `queue`, stored exactly as arq's
    `enqueue_job` stores it, unless `max_queued` (> 0) jobs already wait or run there; with
    that bound, at most `max_queued` jobs that ended keep their results (the newest).

    QUEUED, TAKEN (a job or result with this id exists; nothing written) or FULL.
    """
    now = timestamp_ms()
    job = serialize_job(function, (payload,), {}, None, now, serializer=job_codec.dumps)
    keys_and_args = (queue, job_key_prefix + job_id, result_key_prefix + job_id,
                     kept_index(queue), max_queued, expires_extra_ms, job, now, job_id,
                     result_key_prefix)
    try:
        return int(await client.evalsha(_ENQUEUE_BOUNDED_SHA, 4, *keys_and_args))
    except NoScriptError:  # the first call on this server (or after SCRIPT FLUSH)
        return int(await client.eval(_ENQUEUE_BOUNDED, 4, *keys_and_args))


def kept_index(queue: str) -> str:
    """The key of the index of jobs queued on `queue` whose results may be kept."""
    return f"{queue}:kept"
