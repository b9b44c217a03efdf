"""Jobs are data, not code: whoever can write to the worker's Redis cannot run code in it.

A pickled job (arq's default format) placed in the queue by hand is refused by the real
`pixsim7-backend worker`, logged, and never unpickled; finished results keep no payload.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from pixsim7_testing.polling import wait_until_async

from pixsim7.backend.main.infrastructure.adapters import job_codec
from pixsim7.backend.main.infrastructure.registries import jobs

pytestmark = pytest.mark.integration


class _MakesADirectoryWhenUnpickled:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return os.mkdir, (str(self.path),)


async def _ended(client, prefix: str, job_id: str) -> dict[str, Any] | None:
    state = await jobs.job_state(client, prefix, job_id)
    return state if state["status"] in ("complete", "failed") else None


@pytest.mark.template_db
async def test_a_pickled_job_is_refused_and_never_run_and_the_worker_goes_on(
    redis_namespace, backend_processes, backend_services_env, tmp_path
) -> None:
    marker = tmp_path / "unpickled"
    client = redis_namespace.client()
    queue = jobs.queue_name(redis_namespace.prefix)
    try:
        # Written as arq's own enqueue_job would with its default serializer (pickle).
        now = timestamp_ms()
        evil = serialize_job("noop", (_MakesADirectoryWhenUnpickled(marker),), {}, None, now,
                             serializer=pickle.dumps)
        await client.psetex(job_key_prefix + "evil", 60_000, evil)
        await client.zadd(queue, {"evil": now})
        good = await jobs.enqueue(client, redis_namespace.prefix, "noop", {"value": 5})

        worker = backend_processes("worker", {**backend_services_env,
                                              "SHUTDOWN_DRAIN_SECONDS": "0"})
        refused = await wait_until_async(
            lambda: _ended(client, redis_namespace.prefix, "evil"), timeout=60, interval=0.1,
            message=lambda: worker.describe(3000))
        ran = await wait_until_async(
            lambda: _ended(client, redis_namespace.prefix, good), timeout=30, interval=0.1,
            message=lambda: worker.describe(3000))
        stored_result = await client.get(result_key_prefix + good)
    finally:
        await client.aclose()
    assert not marker.exists(), "the worker unpickled a job from Redis"
    assert refused == {"id": "evil", "status": "failed", "tries": 1,
                       "error": "DeserializationError"}
    assert ran["status"] == "complete" and ran["result"] == {"value": 5}
    # The result is JSON and keeps the status and the result, not the payload.
    record = job_codec.loads(stored_result)
    assert (record["s"], record["r"], record["a"], record["k"]) == (True, {"value": 5}, (), {})
    assert worker.stop() == 0, worker.describe()
    logged = [r for r in worker.records() if r["logger"] == "arq.worker"
              and r["message"].startswith("deserializing job evil failed")]
    assert logged, worker.describe(3000)
    # arq's own line of a starting job shows no payload field, only how many there are.
    starts = [r["message"] for r in worker.records() if f"{good}:noop(" in r["message"]]
    assert starts and all("value" not in m and "<payload of 1 fields>" in m for m in starts), (
        starts)


def test_the_codec_refuses_what_is_not_a_json_job_record() -> None:
    for raw in (pickle.dumps({"a": [], "f": "noop"}), b"[]", b'{"f": "noop"}', b"\x80\x04"):
        with pytest.raises(ValueError):
            job_codec.loads(raw)


def test_a_failed_result_stores_its_error_class_name_not_the_exception() -> None:
    stored = job_codec.dumps({"t": 1, "f": "noop", "a": ({"secret": "x"},), "k": {},
                              "s": False, "r": KeyError("x")})
    assert b"secret" not in stored
    record = job_codec.loads(stored)
    assert job_codec.error_name(record["r"]) == "KeyError"
