"""The worker profile under arq: the worker plan as its startup, real jobs, nothing lost.

Workers are real `pixsim7-backend worker` (or `arq`) processes on the kit's PostgreSQL and
Redis; jobs go in through arq under the test's REDIS_KEY_PREFIX, so parallel tests stay apart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import asyncpg
import httpx
import pytest
from pixsim7_testing.apps import started
from pixsim7_testing.plugins import bundled_with_plugin
from pixsim7_testing.polling import wait_until, wait_until_async
from pixsim7_testing.processes import BackendProcess, run_backend

from pixsim7.backend.main.infrastructure.registries import jobs
from pixsim7.backend.main.presets import DEFAULT_PRESETS
from pixsim7.backend.main.startup import WORKER_PLAN

pytestmark = pytest.mark.integration

WORKER_STEPS = [each.name for each in WORKER_PLAN]


@pytest.fixture
def env(backend_services_env) -> dict[str, str]:
    return {**backend_services_env, "SHUTDOWN_DRAIN_SECONDS": "0"}


async def enqueue(redis_namespace, kind: str, payloads: list[dict[str, Any]]) -> list[str]:
    client = redis_namespace.client()
    try:
        return [await jobs.enqueue(client, redis_namespace.prefix, kind, payload)
                for payload in payloads]
    finally:
        await client.aclose()


async def wait_all_ended(redis_namespace, ids: list[str], workers: list[BackendProcess],
                         timeout: float = 60.0) -> dict[str, dict[str, Any]]:
    """Poll until every job is complete or failed; their states by id."""
    client = redis_namespace.client()

    async def states() -> dict[str, dict[str, Any]] | None:
        found = {i: await jobs.job_state(client, redis_namespace.prefix, i) for i in ids}
        ended = all(s["status"] in ("complete", "failed") for s in found.values())
        return found if ended else None

    try:
        return await wait_until_async(
            states, timeout=timeout, interval=0.2,
            message=lambda: "jobs did not end:\n" + "\n".join(w.describe(2000) for w in workers))
    finally:
        await client.aclose()


def milestone_steps(records: list[dict[str, Any]], phase: str) -> list[str]:
    return [r["step"] for r in records if r.get("phase") == phase and "step" in r]


# A database the API already initialised (schema and default presets): the worker seeds none.
@pytest.mark.template_db
async def test_worker_runs_its_plan_inside_arq_and_imports_presets(
    test_database, redis_namespace, backend_processes, env
) -> None:
    worker = backend_processes("worker", env)
    taken = DEFAULT_PRESETS[0]["name"]
    ids = await enqueue(redis_namespace, "presets.import", [
        {"presets": [{"name": "from-a-job", "provider_id": "pixverse",
                      "operation": "text_to_video", "params": {"n": 1}},
                     {"name": taken, "provider_id": "pixverse", "operation": "text_to_video"}]},
        {"presets": [{"name": "nowhere", "provider_id": "no-such-provider",
                      "operation": "text_to_video"}]},
    ])
    states = await wait_all_ended(redis_namespace, ids, [worker])
    assert states[ids[0]]["status"] == "complete", states
    assert states[ids[0]]["result"] == {"created": 1, "skipped": 1}
    assert states[ids[1]]["status"] == "failed" and states[ids[1]]["error"] == "UnknownProvider"
    conn = await asyncpg.connect(test_database.url, timeout=10)
    try:
        rows = await conn.fetch("SELECT name, params FROM generation_presets "
                                "WHERE name IN ('from-a-job', 'nowhere')")
    finally:
        await conn.close()
    assert [row["name"] for row in rows] == ["from-a-job"]

    assert worker.stop() == 0, worker.describe()
    records = worker.records()
    # arq starts first, then runs the worker plan as its on_startup, and tears it down last.
    messages = [r["message"] for r in records]
    arq_start = next(i for i, m in enumerate(messages) if m.startswith("Starting worker for"))
    first_step = next(i for i, r in enumerate(records) if r.get("phase") == "startup")
    assert arq_start < first_step
    assert milestone_steps(records, "startup") == [*WORKER_STEPS, "complete"]
    down = milestone_steps(records, "shutdown")
    assert down == [s for s in reversed(WORKER_STEPS) if s in down] and "database" in down
    # The one error logged is arq's line for the job that failed.
    errors = [(r["logger"], r["message"]) for r in records if r["level"] in ("ERROR", "CRITICAL")]
    assert len(errors) == 1 and errors[0][0] == "arq.worker", errors
    assert f"{ids[1]}:presets.import failed, UnknownProvider" in errors[0][1]
    assert "worker stopped after 2 jobs (1 complete, 1 failed)" in worker.output()


async def test_the_arq_command_line_runs_the_same_worker(
    redis_namespace, env, backend_processes
) -> None:
    process = backend_processes("arq", env)
    ids = await enqueue(redis_namespace, "noop", [{"value": 3}])
    # A kind declared in the mood plugin's manifest: arq's function list has it before
    # the worker plan enables the plugin, which registers the function it runs.
    ids += await enqueue(redis_namespace, "mood.evaluate", [
        {"mood": "happy", "affinity": {"ana": 0.5}, "target_id": "ana"}])
    states = await wait_all_ended(redis_namespace, ids, [process])
    assert states[ids[0]]["result"] == {"value": 3}
    assert states[ids[1]]["result"] == {"target_id": "ana", "friendly": True}, states
    assert process.stop(timeout=20) == 0, process.describe()
    records = process.records()
    assert milestone_steps(records, "startup") == [*WORKER_STEPS, "complete"]
    assert "database" in milestone_steps(records, "shutdown")
    # LOG_FORMAT=json holds for arq's own lines too: each once, as JSON.
    lines = [line for line in process.output().splitlines() if line.strip()]
    assert len(records) == len(lines), process.describe()
    assert sum(r["message"].startswith("Starting worker for") for r in records) == 1


async def test_unknown_kind_or_bad_payload_is_refused_and_nothing_is_queued(
    app_factory, make_settings, redis_namespace
) -> None:
    running = await started(app_factory, make_settings())
    refused = [
        await running.client.post("/api/v1/jobs", json={"kind": "render", "payload": {}}),
        await running.client.post("/api/v1/jobs", json={"kind": "noop",
                                                        "payload": {"value": "many"}}),
        await running.client.post("/api/v1/jobs", json={
            "kind": "presets.import", "payload": {"presets": []}}),
        # A plugin's kind is refused the same way, by its own payload model.
        await running.client.post("/api/v1/jobs", json={"kind": "mood.evaluate", "payload": {
            "mood": "calm", "affinity": {"ana": "very"}, "target_id": "ana"}}),
    ]
    assert [r.status_code for r in refused] == [422, 422, 422, 422]
    assert refused[3].json()["detail"][0]["loc"] == ["body", "payload", "affinity", "ana"]
    assert "unknown job kind 'render'" in refused[0].json()["detail"][0]["msg"]
    assert refused[0].json()["detail"][0]["loc"] == ["body", "kind"]
    assert refused[1].json()["detail"][0]["loc"] == ["body", "payload", "value"]
    assert refused[2].json()["detail"][0]["loc"] == ["body", "payload", "presets"]
    assert (await running.get("/api/v1/jobs/status")).json()["queued"] == 0
    assert await redis_namespace.keys() == []

    kinds = {k["kind"]: k for k in (await running.get("/api/v1/jobs/kinds")).json()}
    assert {name: k["owner"] for name, k in kinds.items()} == {
        "mood.evaluate": "mood", "noop": "core", "presets.import": "core"}
    assert kinds["noop"]["payload_schema"]["properties"]["value"]["type"] == "integer"
    assert kinds["mood.evaluate"]["payload_schema"]["required"] == ["mood", "target_id"]
    accepted = await running.client.post("/api/v1/jobs", json={"kind": "noop"})
    assert accepted.status_code == 202
    state = await running.get(f"/api/v1/jobs/{accepted.json()['id']}")
    assert state.json() == {"id": accepted.json()["id"], "status": "queued", "tries": None,
                            "result": None, "error": None}
    missing = await running.get("/api/v1/jobs/" + "0" * 32)
    assert (missing.status_code, missing.json()["status"]) == (404, "not_found")


@pytest.mark.slow(seconds=20)
async def test_jobs_of_a_killed_worker_run_again_after_their_timeout(
    test_database, redis_namespace, backend_processes, env
) -> None:
    timeout = 6.0  # arq runs a dead worker's job again JOB_TIMEOUT_SECONDS + 10 s later
    env = {**env, "JOB_TIMEOUT_SECONDS": str(timeout)}
    first = backend_processes("worker", env, name="worker-1")
    wait_until(lambda: first.has_logged("worker ready"), timeout=60, interval=0.1,
               message=first.describe)
    # Ten quick jobs, then ten slow ones: the worker (ten at a time) finishes the quick ones and
    # is killed while the slow ones run, far from the gap between two waves of jobs.
    quick, slow = ([{"value": n, "seconds": seconds} for n in values]
                   for seconds, values in ((0.05, range(10)), (4.0, range(10, 20))))
    ids = await enqueue(redis_namespace, "noop", [*quick, *slow])
    # Killed mid-job: the quick jobs are done, slow ones taken and running.
    client = redis_namespace.client()
    try:
        async def mid_way() -> bool:
            states = [await jobs.job_state(client, redis_namespace.prefix, i) for i in ids]
            return ({s["status"] for s in states[:10]} == {"complete"}
                    and "in_progress" in {s["status"] for s in states[10:]})

        await wait_until_async(mid_way, timeout=30, interval=0.05, message=first.describe)
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)
        killed_at = time.monotonic()
        states = [await jobs.job_state(client, redis_namespace.prefix, i) for i in ids]
    finally:
        await client.aclose()
    assert {"complete", "in_progress"} <= {s["status"] for s in states}, states
    second = backend_processes("worker", env, name="worker-2")
    ended = await wait_all_ended(redis_namespace, ids, [second], timeout=90)
    delay = time.monotonic() - killed_at
    assert {s["status"] for s in ended.values()} == {"complete"}, ended
    assert sorted(s["result"]["value"] for s in ended.values()) == list(range(20))
    # Only jobs the dead worker had taken ran a second time, and some did. arq counts a try when
    # the job starts running, after it marks the job taken: a worker killed between the two
    # leaves a taken job whose rerun is its first counted try.
    rerun = {s["id"] for s in states if s["status"] == "in_progress"}
    ran_twice = {i for i, s in ended.items() if s["tries"] == 2}
    assert ran_twice and ran_twice <= rerun, (ran_twice, rerun)
    assert all(s["tries"] == 1 for i, s in ended.items() if i not in rerun), ended
    assert delay >= timeout + 10 - 1, delay  # none ran again before its in-progress mark lapsed
    assert second.stop() == 0, second.describe()


@pytest.mark.slow(seconds=9)
async def test_a_database_outage_is_retried_with_backoff_then_the_job_completes_or_fails(
    test_database, redis_namespace, backend_processes, env, fault_proxy
) -> None:
    proxy = fault_proxy("postgres")
    worker = backend_processes("worker", {
        **env, "DATABASE_URL": proxy.rewrite_url(env["DATABASE_URL"]),
        "DATABASE_CONNECT_TIMEOUT": "1", "JOB_MAX_TRIES": "4",
        "JOB_RETRY_BACKOFF_SECONDS": "0.5"})
    wait_until(lambda: worker.has_logged("worker ready"), timeout=60, interval=0.1,
               message=worker.describe)
    proxy.cut()
    preset = {"provider_id": "pixverse", "operation": "text_to_video"}
    recovers, = await enqueue(redis_namespace, "presets.import",
                              [{"presets": [{"name": "after-outage", **preset}]}])
    # Two tries failed (backoff 0.5 s, then 1 s), then the database comes back.
    wait_until(lambda: worker.output().count("retrying in") >= 2, timeout=30, interval=0.1,
               message=worker.describe)
    proxy.restore()
    state = (await wait_all_ended(redis_namespace, [recovers], [worker]))[recovers]
    assert (state["status"], state["result"]) == ("complete", {"created": 1, "skipped": 0})
    assert state["tries"] >= 3, state

    proxy.cut()
    gives_up, = await enqueue(redis_namespace, "presets.import",
                              [{"presets": [{"name": "never", **preset}]}])
    began = time.monotonic()
    state = (await wait_all_ended(redis_namespace, [gives_up], [worker]))[gives_up]
    assert (state["status"], state["tries"]) == ("failed", 4), state
    assert state["error"] in ("OperationalError", "InterfaceError", "ConnectionRefusedError",
                              "OSError", "TimeoutError"), state
    assert time.monotonic() - began >= 0.5 + 1 + 2  # the backoff doubled between tries
    retries = [r["message"] for r in worker.records() if "retrying in" in r["message"]]
    assert any(f"{gives_up} (presets.import) try 3 failed" in m and "in 2.0 s" in m
               for m in retries), retries


def completed_by(worker: BackendProcess) -> set[str]:
    """Ids of the jobs this worker completed, from arq's '←' log lines."""
    return {r["message"].split()[2].split(":")[0] for r in worker.records()
            if r["logger"] == "arq.worker" and " ← " in r["message"]}


async def test_two_workers_split_the_queue_and_run_each_job_once(
    test_database, redis_namespace, backend_processes, env
) -> None:
    workers = [backend_processes("worker", env, name=f"worker-{n}") for n in range(2)]
    for worker in workers:
        wait_until(lambda w=worker: w.has_logged("worker ready"), timeout=60, interval=0.1,
                   message=worker.describe)
    ids = await enqueue(redis_namespace, "noop",
                        [{"value": n, "seconds": 0.2} for n in range(40)])
    ended = await wait_all_ended(redis_namespace, ids, workers)
    assert {(s["status"], s["tries"]) for s in ended.values()} == {("complete", 1)}
    for worker in workers:
        assert worker.stop() == 0, worker.describe()
    first, second = (completed_by(w) for w in workers)
    assert first and second, "one worker took every job"
    assert first | second == set(ids) and not first & second


async def test_sigterm_stops_taking_jobs_and_lets_running_ones_finish(
    test_database, redis_namespace, backend_processes, env
) -> None:
    worker = backend_processes("worker", {**env, "SHUTDOWN_DRAIN_SECONDS": "10"})
    wait_until(lambda: worker.has_logged("worker ready"), timeout=60, interval=0.1,
               message=worker.describe)
    running, = await enqueue(redis_namespace, "noop", [{"value": 1, "seconds": 2}])
    client = redis_namespace.client()
    try:
        async def started_job() -> bool:
            state = await jobs.job_state(client, redis_namespace.prefix, running)
            return state["status"] == "in_progress"

        await wait_until_async(started_job, timeout=30, interval=0.05, message=worker.describe)
        worker.send(signal.SIGTERM)
        # Enqueued once the worker has taken the signal (before, it may still pick the job).
        wait_until(lambda: worker.has_logged("allow_pick_jobs to `False`"), timeout=30,
                   interval=0.02, message=worker.describe)
        waiting, = await enqueue(redis_namespace, "noop", [{"value": 2}])
        assert worker.stop(timeout=30) == 0, worker.describe()
        finished = await jobs.job_state(client, redis_namespace.prefix, running)
        left = await jobs.job_state(client, redis_namespace.prefix, waiting)
    finally:
        await client.aclose()
    assert (finished["status"], finished["result"]) == ("complete", {"value": 1})
    assert left["status"] == "queued"  # the next worker takes it
    assert "database" in milestone_steps(worker.records(), "shutdown")


async def test_each_worker_records_when_it_was_alive_and_its_jobs(
    test_database, redis_namespace, backend_processes, env, app_factory, make_settings, tmp_path
) -> None:
    workers = [backend_processes("worker", {**env, "WORKER_HEALTH_INTERVAL_SECONDS": "0.5"},
                                 name=f"worker-{n}") for n in range(2)]
    ids = await enqueue(redis_namespace, "noop", [{"value": n} for n in range(6)])
    await wait_all_ended(redis_namespace, ids, workers)
    running = await started(app_factory, make_settings(admin_token="workers-admin"))
    headers = {"Authorization": "Bearer workers-admin"}

    async def both_counted() -> list[dict[str, Any]] | None:
        body = (await running.client.get("/api/v1/admin/workers", headers=headers)).json()
        found = body["workers"]
        return found if len(found) == 2 and sum(w["complete"] for w in found) == 6 else None

    found = await wait_until_async(both_counted, timeout=15, interval=0.2)
    assert sorted(w["worker"].rsplit("-", 1)[1] for w in found) == sorted(
        str(w.proc.pid) for w in workers)
    assert all(w["failed"] == 0 and w["last_alive"] for w in found), found
    assert (await running.client.get("/api/v1/admin/workers")).status_code == 401

    check = run_backend(["check", "--profile", "worker"], env, tmp_path)
    assert check.returncode == 0, check.output
    assert "workers alive: 2" in check.stdout
    # A worker that stops cleanly removes its record.
    assert workers[0].stop() == 0
    body = (await running.client.get("/api/v1/admin/workers", headers=headers)).json()
    assert [w["worker"] for w in body["workers"]] == [
        w["worker"] for w in found if w["worker"].endswith(f"-{workers[1].proc.pid}")]


@pytest.mark.slow
async def test_a_worker_waits_through_a_redis_outage_and_resumes(
    test_database, redis_namespace, backend_processes, env, fault_proxy
) -> None:
    proxy = fault_proxy("redis")
    worker = backend_processes("worker", {**env, "REDIS_URL": proxy.rewrite_url(env["REDIS_URL"])})
    wait_until(lambda: worker.has_logged("worker ready"), timeout=60, interval=0.1,
               message=worker.describe)
    before = await enqueue(redis_namespace, "noop", [{"value": 1}])
    await wait_all_ended(redis_namespace, before, [worker])
    proxy.cut()
    time.sleep(3)  # several polls of the queue fail meanwhile
    worker.assert_running()
    proxy.restore()
    after = await enqueue(redis_namespace, "noop", [{"value": 2}])
    state = (await wait_all_ended(redis_namespace, after, [worker], timeout=30))[after[0]]
    assert state["result"] == {"value": 2}
    assert worker.stop() == 0, worker.describe()


FAILING_PLUGIN = """
from pydantic import BaseModel

class Empty(BaseModel):
    pass

async def run(app, payload):
    return "ran"

def on_load(ctx):
    raise RuntimeError("flaky plugin: no licence server")
"""


async def test_a_kind_whose_plugin_failed_in_the_worker_fails_its_jobs_by_name(
    redis_namespace, backend_processes, env, tmp_path
) -> None:
    plugins = bundled_with_plugin(tmp_path / "plugins", "plugins", "flaky", FAILING_PLUGIN,
                                  manifest_text=(
                                      'id = "flaky"\nname = "Flaky"\nversion = "1.0.0"\n'
                                      'kind = "feature"\n\n[[jobs]]\nkind = "flaky.run"\n'
                                      'function = "run"\npayload = "Empty"\n'))
    worker = backend_processes("worker", {**env, "FEATURE_PLUGINS_DIR": str(plugins),
                                          "PLUGIN_FAIL_FAST": "false"})
    ids = await enqueue(redis_namespace, "flaky.run", [{}])
    ids += await enqueue(redis_namespace, "mood.evaluate", [
        {"mood": "grumpy", "affinity": {"ana": 0.5}, "target_id": "ana"}])
    states = await wait_all_ended(redis_namespace, ids, [worker])
    # The job ends failed at once, by name, rather than as arq's "function not found".
    assert (states[ids[0]]["status"], states[ids[0]]["error"]) == ("failed",
                                                                   "JobKindUnavailable")
    assert states[ids[0]]["tries"] == 1
    assert states[ids[1]]["result"] == {"target_id": "ana", "friendly": False}
    assert worker.stop() == 0, worker.describe()
    records = worker.records()
    plugins_step = next(r for r in records if r.get("phase") == "startup"
                        and r.get("step") == "plugins")
    assert (plugins_step["status"], plugins_step["failed"]) == ("degraded", ["flaky"])
    assert any("declared but not registered" in r["message"] and "flaky.run" in r["message"]
               for r in records if r["level"] == "WARNING"), worker.output()[-3000:]
    check = run_backend(["check", "--profile", "worker"], {
        **env, "FEATURE_PLUGINS_DIR": str(plugins), "PLUGIN_FAIL_FAST": "false"}, tmp_path)
    assert check.returncode == 0, check.output
    assert "flaky.run (declared, not registered: its plugin failed)" in check.stdout


@pytest.mark.parametrize(("command", "running_job", "job_seconds"), [
    ("worker", False, 0), ("worker", True, 30), ("worker", True, 2.5), ("arq", True, 2.5),
], ids=["idle", "job_running", "job_ended_in_outage", "arq_cli_job_ended_in_outage"])
@pytest.mark.slow
async def test_sigterm_while_redis_is_away_tears_down_without_waiting_for_redis(
    test_database, redis_namespace, backend_processes, env, fault_proxy,
    command, running_job, job_seconds
) -> None:
    proxy = fault_proxy("redis")
    worker_env = {**env, "REDIS_URL": proxy.rewrite_url(env["REDIS_URL"]),
                  "SHUTDOWN_DRAIN_SECONDS": "1"}
    worker = backend_processes(command, worker_env)
    wait_until(lambda: worker.has_logged("worker ready"), timeout=60, interval=0.1,
               message=worker.describe)
    if running_job:
        ids = await enqueue(redis_namespace, "noop", [{"seconds": job_seconds}])
        wait_until(lambda: worker.has_logged(f"{ids[0]}:noop"), timeout=30, interval=0.1,
                   message=worker.describe)
    proxy.cut()
    # The worker now waits for Redis; the 2.5 s job ends meanwhile and cannot record it.
    time.sleep(3.5)
    worker.assert_running()
    began = time.monotonic()
    code = worker.stop(timeout=30)
    took = time.monotonic() - began
    assert code == 0, worker.describe()
    # The drain (1 s) and the best-effort removal of the health record, not Redis's return.
    assert took < 10, f"took {took:.1f} s\n{worker.describe()}"
    records = worker.records()
    assert "database" in milestone_steps(records, "shutdown"), worker.describe()
    assert any("health record expires by itself" in r["message"] for r in records)
    assert not [r for r in records if r["level"] in ("ERROR", "CRITICAL")
                and r["logger"] != "arq.worker"], worker.describe()
    assert "Traceback" not in worker.output(), worker.describe()
    if running_job:
        assert any("a job's state was not written" in r["message"] for r in records), (
            worker.describe())
        # Not lost: the cancelled job is still queued once Redis is back, and runs again
        # when its in-progress mark expires, as after a killed worker.
        proxy.restore()
        client = redis_namespace.client()
        try:
            assert await client.zscore(jobs.queue_name(redis_namespace.prefix), ids[0])
            state = await jobs.job_state(client, redis_namespace.prefix, ids[0])
            assert state["status"] in ("queued", "in_progress"), state
        finally:
            await client.aclose()


async def test_a_plugin_job_goes_from_the_served_api_to_a_worker_and_back(
    backend_processes, env
) -> None:
    serve = backend_processes("serve", env)
    worker = backend_processes("worker", env)
    await asyncio.to_thread(serve.wait_ready, 60)
    async with httpx.AsyncClient(base_url=serve.base_url, timeout=10) as client:
        kinds = {k["kind"]: k["owner"] for k in (await client.get("/api/v1/jobs/kinds")).json()}
        assert kinds["mood.evaluate"] == "mood"
        accepted = await client.post("/api/v1/jobs", json={"kind": "mood.evaluate", "payload": {
            "mood": "content", "affinity": {"cy": 0.2}, "target_id": "cy"}})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]

        async def ended() -> dict[str, Any] | None:
            body = (await client.get(f"/api/v1/jobs/{job_id}")).json()
            return body if body["status"] in ("complete", "failed") else None

        state = await wait_until_async(ended, timeout=30, interval=0.1,
                                       message=lambda: worker.describe(3000))
    assert state == {"id": job_id, "status": "complete", "tries": 1, "error": None,
                     "result": {"target_id": "cy", "friendly": True}}
    assert worker.stop() == 0, worker.describe()
    assert serve.stop() == 0, serve.describe()


async def test_an_idle_worker_looks_at_the_queue_every_job_poll_delay_seconds(make_settings):
    from arq.worker import Worker

    from pixsim7.backend.main.worker import worker_settings

    assert make_settings().job_poll_delay_seconds == 0.05
    worker = Worker(**worker_settings(make_settings(job_poll_delay_seconds=0.2)))
    try:
        assert worker.poll_delay_s == 0.2
    finally:
        await worker.close()
