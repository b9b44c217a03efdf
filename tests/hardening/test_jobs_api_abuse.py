"""The jobs API and its jobs under abuse: concurrent imports, other deployments' job ids, who
may enqueue, and the queue's bounds."""

from __future__ import annotations

import asyncio

import pytest
from arq.connections import RedisSettings
from arq.worker import Worker, func

from pixsim7.backend.main.infrastructure import jobs
from pixsim7.backend.main.infrastructure.core_jobs import PresetImport, import_presets
from testing.apps import started
from testing.polling import wait_until_async

pytestmark = pytest.mark.integration

PRESET = {"provider_id": "pixverse", "operation": "text_to_video"}


# Two sessions really run at once here: the rollback tier would put them on one connection.
@pytest.mark.template_db
async def test_the_same_batch_imported_four_times_at_once_stores_each_name_once(
    app_factory
) -> None:
    running = await started(app_factory)
    batch = PresetImport.model_validate(
        {"presets": [{"name": f"overlap-{n}", **PRESET} for n in range(300)]})
    results = await asyncio.gather(*(import_presets(running.app, batch) for _ in range(4)))
    assert sum(result["created"] for result in results) == 300, results
    assert all(result["created"] + result["skipped"] == 300 for result in results), results
    listed = (await running.get("/api/v1/presets")).json()
    assert sorted(p["name"] for p in listed if p["name"].startswith("overlap-")) == sorted(
        f"overlap-{n}" for n in range(300))


@pytest.mark.rollback_db
async def test_a_name_twice_in_one_batch_is_stored_once_and_the_first_wins(app_factory) -> None:
    running = await started(app_factory)
    batch = PresetImport.model_validate({"presets": [
        {"name": "twice", **PRESET, "params": {"first": True}},
        {"name": "twice", **PRESET, "params": {"first": False}}]})
    assert await import_presets(running.app, batch) == {"created": 1, "skipped": 1}
    stored = [p for p in (await running.get("/api/v1/presets")).json() if p["name"] == "twice"]
    assert [p["params"] for p in stored] == [{"first": True}]


async def _sleep_then_echo(ctx: dict, payload: dict) -> dict:
    await asyncio.sleep(payload.get("seconds", 0))
    return {"value": payload.get("value")}


@pytest.mark.rollback_db
async def test_a_job_id_answers_only_in_the_deployment_that_queued_it(
    app_factory, make_settings, redis_namespace
) -> None:
    mine = await started(app_factory)
    other = await started(app_factory, make_settings(
        redis_key_prefix=f"{redis_namespace.prefix}other:"))
    queued = await mine.client.post("/api/v1/jobs", json={
        "kind": "noop", "payload": {"value": 7, "seconds": 0.5}})
    assert queued.status_code == 202, queued.text
    job_url = f"/api/v1/jobs/{queued.json()['id']}"

    async def status(running) -> tuple[int, str]:
        answer = await running.get(job_url)
        return answer.status_code, answer.json()["status"]

    assert await status(mine) == (200, "queued")
    assert await status(other) == (404, "not_found")
    # Run by arq itself, from this deployment's queue.
    worker = Worker(functions=[func(_sleep_then_echo, name="noop")], burst=True,
                    queue_name=jobs.queue_name(mine.settings.redis_key_prefix),
                    redis_settings=RedisSettings.from_dsn(redis_namespace.url),
                    handle_signals=False, poll_delay=0.01)
    running = asyncio.create_task(worker.main())
    try:
        async def in_progress() -> bool:
            return await status(mine) == (200, "in_progress")

        await wait_until_async(in_progress, timeout=10, interval=0.02,
                               message="the job never started")
        assert await status(other) == (404, "not_found")
        await asyncio.wait_for(running, 20)
    finally:
        running.cancel()
        await worker.close()
    assert await status(mine) == (200, "complete")
    assert (await mine.get(job_url)).json()["result"] == {"value": 7}
    assert await status(other) == (404, "not_found")
