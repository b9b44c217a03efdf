"""How jobs and their results are stored in Redis: JSON, never pickles.

arq pickles by default, so whoever can write to the worker's Redis could run code in the
worker. Here a job and its result are JSON (arq's `job_serializer` and `job_deserializer`); a
record in any other form does not decode, and arq ends that job failed with
`DeserializationError` (logged) without running anything.

A finished job's record keeps its status and result, not its payload, and the worker stores a
result over JOB_MAX_RESULT_BYTES as the failure `ResultTooLarge`: with the count the jobs API
keeps (JOBS_MAX_QUEUED), what results take in Redis is bounded (GETTING_STARTED).
A payload decodes as a `Payload`, a dict whose repr shows its size, not its content, so that
arq's log line of a starting job does not carry it.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

# A failed job's result is its error's class name under this key (an exception is not data).
ERROR_KEY = "$error"


class Payload(dict):
    """A job's payload as the worker reads it; its repr hides the content (arq logs it)."""

    def __repr__(self) -> str:
        return f"<payload of {len(self)} fields>"


class JobFailure(Exception):
    """A failed job's error as stored: the class name of what it raised."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def error_name(result: Any) -> str:
    """The class name of the error a failed job's result stands for."""
    return result.name if isinstance(result, JobFailure) else type(result).__name__


def _encode_other(value: Any) -> Any:
    if isinstance(value, BaseException):
        return {ERROR_KEY: error_name(value)}
    raise TypeError(f"a job's data must be JSON, not {type(value).__name__}")


def dumps(record: dict[str, Any], *, max_result_bytes: int | None = None) -> bytes:
    """arq's job or result record as JSON; a result's record without the payload, and with
    `max_result_bytes`, a larger result stored as the failure `ResultTooLarge`."""
    if "r" in record:  # a result (a job's record has no "r")
        record = {**record, "a": [], "k": {}}
    encoded = _encode(record)
    if max_result_bytes is not None and "r" in record and len(encoded) > max_result_bytes:
        encoded = _encode({**record, "s": False, "r": {ERROR_KEY: "ResultTooLarge"}})
    return encoded


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, default=_encode_other, separators=(",", ":"),
                      allow_nan=False).encode()


def loads(raw: bytes) -> dict[str, Any]:
    """A record `dumps` wrote; anything else (a pickle among them) raises ValueError."""
    record = json.loads(raw)
    if not isinstance(record, dict) or not isinstance(record.get("a"), list):
        raise ValueError("not a job record")
    record["a"] = tuple(Payload(arg) if isinstance(arg, dict) else arg for arg in record["a"])
    result = record.get("r")
    if record.get("s") is False and isinstance(result, dict) and set(result) == {ERROR_KEY}:
        record["r"] = JobFailure(str(result[ERROR_KEY]))
    return record


# arq's keyword arguments (Worker, ArqRedis) for this codec.
ARQ_CODEC: dict[str, Any] = {"job_serializer": dumps, "job_deserializer": loads}


def worker_codec(max_result_bytes: int) -> dict[str, Any]:
    """ARQ_CODEC for a worker: results over `max_result_bytes` are stored as a failure."""
    return {**ARQ_CODEC, "job_serializer": partial(dumps, max_result_bytes=max_result_bytes)}
