"""Background jobs on arq: the kinds a worker runs, enqueueing, and what became of a job.

The queue's name carries REDIS_KEY_PREFIX, so apps sharing one Redis under different prefixes
never take each other's jobs. arq keeps each job's own keys (`arq:job:<id>`, `arq:result:<id>`,
`arq:in-progress:<id>`, `arq:retry:<id>`) outside the queue's name; a job id still answers only
in the deployment that queued it, since `job_state` checks that the job is in, or ended in,
this deployment's queue.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from arq.jobs import DeserializationError, Job, JobStatus
from fastapi import FastAPI
from pydantic import BaseModel
from redis.asyncio import Redis

from pixsim7.backend.main.infrastructure.adapters import job_codec
from pixsim7.backend.main.infrastructure.adapters.arq_adapter import FULL, QUEUED, enqueue_bounded
from pixsim7.backend.main.infrastructure.adapters.database import is_database_outage

QUEUE = "arq:queue"

JobFunction = Callable[[FastAPI, Any], Awaitable[Any]]  # (the worker's app, payload) -> result


class RetryableJobError(Exception):
    """A failure worth another try: the worker retries it with backoff, up to JOB_MAX_TRIES."""


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` is a database or network outage: retried when the kind asks for it. The
    database's own word counts (shutting down, starting up), as does a refused connection."""
    return is_database_outage(exc) or isinstance(exc, OSError)


@dataclass(frozen=True)
class JobKind:
    """A kind of job: its name, the model its payload must validate against, and its function.

    `retry_on` lists the exceptions that are retried like RetryableJobError, and with
    `retry_on_outage` database and network outages are too (`is_outage`);
    `owner` is "core" or the id of the feature plugin that declared the kind; a `debug_only`
    kind (a test's) is not offered by the API of a production app (DEBUG=false).
    """

    name: str
    payload: type[BaseModel]
    run: JobFunction
    description: str = ""
    retry_on: tuple[type[BaseException], ...] = ()
    retry_on_outage: bool = False
    owner: str = "core"
    debug_only: bool = False

    def retries(self, exc: BaseException) -> bool:
        """Whether a try that raised `exc` is worth another."""
        return isinstance(exc, (RetryableJobError, *self.retry_on)) or (
            self.retry_on_outage and is_outage(exc))

    def schema(self) -> dict[str, Any]:
        return self.payload.model_json_schema()


class JobRegistryLocked(RuntimeError):
    """Something tried to change the job registry after startup locked it."""


class QueueFull(RuntimeError):
    """The queue holds as many jobs as JOBS_MAX_QUEUED allows; nothing was queued."""


class JobKindUnavailable(LookupError):
    """A job's kind is not registered in this worker (its plugin failed or is disabled)."""


class JobRegistry:
    """The job kinds of one app, by name; locked once startup is done, like the behavior
    registry. The core kinds come first; feature plugins add theirs when they are enabled."""

    def __init__(self, kinds: tuple[JobKind, ...] = ()) -> None:
        self._kinds: dict[str, JobKind] = {}
        self.locked = False
        self.register_all(kinds)

    def _check_open(self, what: str) -> None:
        if self.locked:
            raise JobRegistryLocked(f"{what}: the job registry is locked after startup")

    def register(self, kind: JobKind) -> None:
        self.register_all((kind,))

    def register_all(self, kinds: tuple[JobKind, ...] | list[JobKind]) -> None:
        """Register every kind or, when one name is taken, none of them."""
        for kind in kinds:
            self._check_open(f"job kind {kind.name!r}")
        names = [kind.name for kind in kinds]
        for name in names:
            taken = self._kinds.get(name)
            if taken is not None or names.count(name) > 1:
                owner = taken.owner if taken is not None else "the same batch"
                raise ValueError(f"job kind {name!r} is registered twice (already by {owner})")
        for kind in kinds:
            self._kinds[kind.name] = kind

    def unregister_owner(self, owner: str) -> list[str]:
        """Remove the kinds `owner` registered (a plugin that failed while being enabled)."""
        self._check_open(f"job kinds of {owner!r}")
        names = [name for name, kind in self._kinds.items() if kind.owner == owner]
        for name in names:
            del self._kinds[name]
        return names

    def lock(self) -> None:
        self.locked = True

    def get(self, name: str) -> JobKind | None:
        return self._kinds.get(name)

    def names(self) -> list[str]:
        return sorted(self._kinds)

    def kinds(self) -> list[JobKind]:
        return [self._kinds[name] for name in sorted(self._kinds)]

    def summary(self) -> dict[str, Any]:
        """JSON-able: locked, and each kind with its owner."""
        return {"locked": self.locked,
                "kinds": {kind.name: kind.owner for kind in self.kinds()}}


# Redis's allocator rounds a value up to its size class (at most a quarter more, above 16 KiB);
# keys, the queue's and the index's entries and a record's own fields add about 2 KiB a job.
ALLOCATOR_ROUNDING, PER_JOB_OVERHEAD = 1.25, 2048


def redis_worst_case_bytes(max_queued: int, max_payload_bytes: int,
                           max_result_bytes: int) -> int:
    """The most memory jobs take in Redis (GETTING_STARTED): JOBS_MAX_QUEUED jobs waiting with
    payloads of JOB_MAX_PAYLOAD_BYTES, and JOBS_MAX_QUEUED kept results of
    JOB_MAX_RESULT_BYTES."""
    return int(max_queued * (ALLOCATOR_ROUNDING * (max_payload_bytes + max_result_bytes)
                             + PER_JOB_OVERHEAD))


def queue_name(prefix: str) -> str:
    return f"{prefix}{QUEUE}"


def health_key(prefix: str, worker: str) -> str:
    """Where worker `worker` records that it is alive (arq's health-check record)."""
    return f"{queue_name(prefix)}:health-check:{worker}"


async def workers(client: Redis, prefix: str) -> list[dict[str, Any]]:
    """The workers alive on this queue: when each last wrote its record and its job counts.

    A record expires one health interval after it was written, so a dead worker drops out.
    """
    found = []
    async for key in client.scan_iter(match=health_key(prefix, "*"), count=500):
        text = await client.get(key)
        if text is None:
            continue  # expired between the scan and the read
        # arq writes "<Mon-DD HH:MM:SS> j_complete=3 j_failed=0 j_retried=0 j_ongoing=0 queued=0"
        words = text.decode().split()
        counts = dict(word.split("=", 1) for word in words if "=" in word)
        found.append({"worker": key.decode().rsplit(":", 1)[1],
                      "last_alive": " ".join(w for w in words if "=" not in w),
                      **{name.removeprefix("j_"): int(value) for name, value in counts.items()}})
    return sorted(found, key=lambda record: record["worker"])


def arq_client(client: Redis, prefix: str) -> ArqRedis:
    """An arq view of `client`: same connection pool, this app's queue."""
    return ArqRedis(connection_pool=client.connection_pool, default_queue_name=queue_name(prefix),
                    **job_codec.ARQ_CODEC)


def job_handle(client: Redis, prefix: str, job_id: str) -> Job:
    """arq's view of job `job_id` of this deployment's queue, read with the JSON codec."""
    return Job(job_id, arq_client(client, prefix), _queue_name=queue_name(prefix),
               _deserializer=job_codec.loads)


async def enqueue(client: Redis, prefix: str, kind: str, payload: dict[str, Any], *,
                  max_queued: int | None = None) -> str:
    """Queue one job of `kind` (already validated); returns its id. With `max_queued`, a
    QueueFull when that many jobs already wait or run: checked and queued in one atomic step,
    so requests at once never queue more."""
    job_id = uuid.uuid4().hex
    outcome = await enqueue_bounded(client, queue_name(prefix), job_id, kind, payload,
                                    max_queued=max_queued or 0)
    if outcome == FULL:
        raise QueueFull(f"the job queue holds {max_queued} jobs (JOBS_MAX_QUEUED)")
    if outcome != QUEUED:  # a fresh UUID4 is never taken
        raise RuntimeError(f"job id {job_id} is already taken")
    return job_id


async def queued(client: Redis, prefix: str) -> int:
    """How many jobs wait in the queue, or run (arq keeps a job queued until it ends)."""
    return int(await client.zcard(queue_name(prefix)))


async def job_state(client: Redis, prefix: str, job_id: str) -> dict[str, Any]:
    """Status of job `job_id` in this deployment's queue and, once it ended, its result or its
    error's class; `not_found` for a job of another queue (another REDIS_KEY_PREFIX)."""
    queue = queue_name(prefix)
    job = job_handle(client, prefix, job_id)
    status = await job.status()
    try:
        info = await job.result_info() if status == JobStatus.complete else None
    except DeserializationError:  # not JSON: written by something else than our worker
        return {"id": job_id, "status": "failed", "error": "DeserializationError"}
    # arq keeps a job in its queue until it ends; its result names the queue it ran from.
    if (status == JobStatus.in_progress and await client.zscore(queue, job_id) is None) or (
            info is not None and info.queue_name != queue):
        status, info = JobStatus.not_found, None
    if status == JobStatus.deferred:  # a retry waiting for its backoff
        status = JobStatus.queued
    state: dict[str, Any] = {"id": job_id, "status": status.value.replace(" ", "_")}
    if info is not None:
        state["tries"] = info.job_try
        if info.success:
            state["result"] = info.result
        else:
            state["status"] = "failed"
            state["error"] = job_codec.error_name(info.result)
    return state
