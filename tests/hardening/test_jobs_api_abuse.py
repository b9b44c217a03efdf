"""The jobs API and its jobs under abuse: concurrent imports, other deployments' job ids, who
may enqueue, and the queue's bounds."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from arq.connections import RedisSettings
from arq.worker import Worker, func
from pixsim7_testing.apps import started
from pixsim7_testing.polling import wait_until_async

from pixsim7.backend.main.infrastructure.adapters import job_codec
from pixsim7.backend.main.infrastructure.registries import jobs
from pixsim7.backend.main.presets import PresetImport, import_presets

from .conftest import ADMIN_TOKEN, PRODUCTION, client_input_failures

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
    listed = (await running.get("/api/v1/presets", params={"limit": 500})).json()
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
                    **job_codec.ARQ_CODEC,
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


# --- who may queue, and how much (the real `serve`, production mode, no worker running) -------

IMPORT = {"kind": "presets.import", "payload": {"presets": [{"name": "one", **PRESET}]}}


def test_in_production_only_the_jobs_token_may_queue_and_noop_is_not_offered(
    served_api
) -> None:
    token = "jobs-writer-token-1234"
    serve = served_api(**PRODUCTION, JOBS_TOKEN=token)
    url = f"{serve.base_url}/api/v1/jobs"
    refused = [httpx.post(url, json=IMPORT, headers=headers).status_code for headers in (
        {}, {"Authorization": "Bearer wrong-token-000000"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}"},  # JOBS_TOKEN is set: it alone is taken
        {"Authorization": f"Basic {token}"}, {"Authorization": token})]
    assert refused == [401] * 5
    # The credential comes before the body: a stranger learns nothing of the schema, and the
    # 401 names the token it needs.
    for body in ({"content": b"{not json"}, {"json": {"kind": "??", "payload": 1}}):
        stranger = httpx.post(url, **body)
        assert (stranger.status_code, stranger.json()) == (401, {
            "detail": "jobs authentication required: Authorization: Bearer <JOBS_TOKEN>"})
    writer = {"Authorization": f"Bearer {token}"}
    assert httpx.post(url, json={"kind": "??"}, headers=writer).status_code == 422
    accepted = httpx.post(url, json=IMPORT, headers=writer)
    assert accepted.status_code == 202, accepted.text
    assert httpx.get(f"{url}/{accepted.json()['id']}").json()["status"] == "queued"
    noop = httpx.post(url, json={"kind": "noop", "payload": {"seconds": 60}}, headers=writer)
    assert noop.status_code == 422, noop.text
    assert "noop" not in [kind["kind"] for kind in httpx.get(f"{url}/kinds").json()]
    assert client_input_failures(serve) == [], serve.describe()


async def test_the_queue_and_each_payload_are_bounded_before_redis_fills(
    served_api, redis_namespace
) -> None:
    serve = served_api(**PRODUCTION, JOBS_MAX_QUEUED="5", JOB_MAX_PAYLOAD_BYTES="2048")
    url = f"{serve.base_url}/api/v1/jobs"
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}  # JOBS_TOKEN unset: the admin token
    big = {"kind": "presets.import", "payload": {"presets": [
        {"name": "big", **PRESET, "params": {"blob": "x" * 4096}}]}}
    too_big = httpx.post(url, json=big, headers=admin)
    assert too_big.status_code == 413, too_big.text
    assert "JOB_MAX_PAYLOAD_BYTES" in too_big.json()["detail"]
    # Twenty at once against a bound of five: the count is checked and the job queued in one
    # atomic step, so requests in flight together cannot all pass a count read before.
    async with httpx.AsyncClient(headers=admin) as client:
        answers = await asyncio.gather(*(
            client.post(url, json={**IMPORT, "payload": {"presets": [
                {"name": f"n{i}", **PRESET}]}}) for i in range(20)))
    assert sorted(a.status_code for a in answers) == [202] * 5 + [503] * 15
    full = next(a for a in answers if a.status_code == 503)
    assert full.headers["Retry-After"] == "30"
    assert "JOBS_MAX_QUEUED" in full.json()["detail"]
    redis = redis_namespace.client()
    try:
        assert await redis.zcard(jobs.queue_name(redis_namespace.prefix)) == 5
    finally:
        await redis.aclose()
    assert client_input_failures(serve) == [], serve.describe()
