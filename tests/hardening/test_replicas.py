"""Several replicas of the real CLI started at once against one empty database.

Schema creation and preset seeding must happen exactly once whatever the interleaving, every
replica must become ready, and none may log an error on the way.
"""

from __future__ import annotations

import signal
import socket
import time

import asyncpg
import httpx
import pytest
from pixsim7_testing.polling import wait_until
from pixsim7_testing.processes import BackendProcess, parse_log

from pixsim7.backend.main.infrastructure.adapters.arq_adapter import kept_index
from pixsim7.backend.main.infrastructure.discovery.domain_registry import init_domain_registry
from pixsim7.backend.main.infrastructure.registries import jobs
from pixsim7.backend.main.presets import DEFAULT_PRESETS
from pixsim7.backend.main.shared.config import PACKAGE_DIR

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "replicas-admin-token"
STARTUP_DEADLINE = 60.0


@pytest.fixture
def env(backend_services_env) -> dict[str, str]:
    # PIXSIM7_DATA_DIR (from backend_env) is never used: both URLs are set.
    return {**backend_services_env, "ADMIN_TOKEN": ADMIN_TOKEN, "SHUTDOWN_DRAIN_SECONDS": "0"}


def replicas(backend_processes, kinds: list[str], env: dict[str, str]) -> list[BackendProcess]:
    """Start one CLI process per entry of `kinds` ("serve" / "worker"), all at once."""
    return [backend_processes(kind, env, name=f"{kind}-{index}")
            for index, kind in enumerate(kinds)]


def _describe(replica: BackendProcess) -> str:
    return replica.describe(3000)


def wait_all_ready(serves: list[BackendProcess],
                   deadline: float = STARTUP_DEADLINE) -> dict[str, dict]:
    """Poll each replica's /ready until it says 200 "ready"; the bodies by replica name."""
    end = time.monotonic() + deadline

    def ready(replica: BackendProcess) -> dict:
        def body() -> dict | None:
            found = replica.ready_body()
            return found if found is not None and found["status"] == "ready" else None

        return wait_until(body, timeout=end - time.monotonic(), interval=0.1,
                          message=lambda: _describe(replica))

    return {replica.name: ready(replica) for replica in serves}


def wait_for_log(replica: BackendProcess, needle: str, deadline: float = STARTUP_DEADLINE) -> None:
    wait_until(lambda: replica.has_logged(needle), timeout=deadline, interval=0.1,
               message=lambda: f"no {needle!r}:\n{_describe(replica)}")


def error_lines(text: str) -> list[str]:
    """Lines logged at ERROR or CRITICAL, and any traceback."""
    bad = [f"{r['level']} {r['logger']}: {r['message']}" for r in parse_log(text)
           if r["level"] in ("ERROR", "CRITICAL")]
    return bad + [line for line in text.splitlines() if "Traceback" in line]


def stop_all(started: list[BackendProcess], timeout: float = 15.0) -> dict[str, int]:
    for replica in started:
        replica.send(signal.SIGTERM)
    return {replica.name: replica.stop(timeout=timeout) for replica in started}


def expected_tables() -> list[str]:
    return sorted(init_domain_registry(PACKAGE_DIR / "domain_models").table_names())


async def assert_schema_and_presets_exactly_once(database_url: str) -> None:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT c.relname, count(*) AS n FROM pg_class c "
            "JOIN pg_namespace ns ON ns.oid = c.relnamespace "
            "WHERE ns.nspname = 'public' AND c.relkind IN ('r', 'p') GROUP BY c.relname"
        )
        info_schema = await conn.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
        presets = await conn.fetch("SELECT name FROM generation_presets")
    finally:
        await conn.close()
    counts = {row["relname"]: row["n"] for row in rows}
    wanted = expected_tables()
    assert wanted, "the bundled domain models define no tables"
    assert sorted(counts) == wanted
    assert set(counts.values()) == {1}
    assert sorted(row["table_name"] for row in info_schema) == wanted
    names = [row["name"] for row in presets]
    assert len(names) == len(DEFAULT_PRESETS)
    assert sorted(names) == sorted(p["name"] for p in DEFAULT_PRESETS)


def assert_clean_logs(started: list[BackendProcess]) -> None:
    for replica in started:
        bad = error_lines(replica.output())
        assert not bad, f"{replica.name} logged errors:\n" + "\n".join(bad)


async def test_four_serve_replicas_on_one_empty_database_create_and_seed_once(
    test_database, backend_processes, env
) -> None:
    started = replicas(backend_processes, ["serve"] * 4, env)
    bodies = wait_all_ready(started)
    assert sorted(bodies) == sorted(r.name for r in started)
    for body in bodies.values():
        assert body["database"] == "connected"
        assert body["redis"] == "connected"
        assert body["plugins"]["failed"] == []
    await assert_schema_and_presets_exactly_once(test_database.url)
    codes = stop_all(started)
    assert codes == {r.name: 0 for r in started}, "\n".join(_describe(r) for r in started)
    assert_clean_logs(started)
    # Every replica did run the schema step against the shared database.
    for replica in started:
        assert "startup database: ok" in replica.output()


async def test_serve_replicas_and_a_worker_start_together_and_the_worker_takes_jobs(
    test_database, redis_namespace, backend_processes, env
) -> None:
    started = replicas(backend_processes, ["serve", "worker", "serve", "serve"], env)
    worker = next(r for r in started if r.name.startswith("worker"))
    serves = [r for r in started if r.name.startswith("serve")]
    wait_all_ready(serves)
    wait_for_log(worker, "worker ready")
    await assert_schema_and_presets_exactly_once(test_database.url)

    with httpx.Client(timeout=5.0) as client:
        response = client.post(serves[1].base_url + "/api/v1/jobs",
                               json={"kind": "noop", "payload": {"value": 7}})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        status = client.get(serves[2].base_url + "/api/v1/jobs/status").json()
        assert status["background_jobs"] == "enabled"

        def done() -> dict | None:
            worker.assert_running()
            body = client.get(f"{serves[0].base_url}/api/v1/jobs/{job_id}").json()
            return body if body["status"] == "complete" else None

        body = wait_until(done, timeout=15.0, interval=0.1,
                          message=lambda: "job not run:\n" + _describe(worker))
    assert body["result"] == {"value": 7} and body["tries"] == 1
    # The queue is empty again; what is left under the prefix is the worker's health record
    # and the index of the jobs whose results are kept (the one ended job).
    health = jobs.health_key(redis_namespace.prefix, f"{socket.gethostname()}-{worker.proc.pid}")
    kept = kept_index(jobs.queue_name(redis_namespace.prefix))
    assert sorted(await redis_namespace.keys()) == sorted([health.encode(), kept.encode()])
    index = redis_namespace.client()
    try:
        assert await index.zrange(kept, 0, -1) == [job_id.encode()]
    finally:
        await index.aclose()
    codes = stop_all(started)
    assert codes == {r.name: 0 for r in started}, "\n".join(_describe(r) for r in started)
    assert_clean_logs(started)
    assert "worker stopped after 1 jobs" in worker.output()
