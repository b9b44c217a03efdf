"""A PostgreSQL that shuts down, starts up, or is killed under load, as operators restart one.

The server is the test's own (its data folder, its port), never the machine's shared one:
stopped fast (what `pg_ctl stop -m fast` sends), started again, then killed with SIGKILL and
started again, while clients write through `pixsim7-backend serve` and a worker imports.
What the database says while it stops or starts is an outage: the API answers 503 with
Retry-After, never a bare 500, and a job retries; nothing acknowledged is lost.
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
from pixsim7_testing.polling import wait_until, wait_until_async

from pixsim7.backend.main.infrastructure.adapters.embedded import EmbeddedPostgres, process_running

pytestmark = pytest.mark.integration

PRESET = {"provider_id": "pixverse", "operation": "text_to_video"}


class Load:
    """Writers through the served API: presets created directly and by jobs."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, timeout=10)
        self.presets: list[str] = []  # acknowledged with 201
        self.jobs: dict[str, str] = {}  # acknowledged with 202: job id -> preset name
        self.answers: dict[int, int] = {}
        self.bad: list[str] = []
        self.running = True

    def _seen(self, response: httpx.Response) -> None:
        self.answers[response.status_code] = self.answers.get(response.status_code, 0) + 1
        if response.status_code not in (201, 202, 503) or (
                response.status_code == 503 and "Retry-After" not in response.headers):
            self.bad.append(f"{response.status_code} {response.text[:200]}")

    async def writer(self, name: str) -> None:
        n = 0
        while self.running:
            n += 1
            preset = f"{name}-{n}"
            response = await self.client.post("/api/v1/presets", json={"name": preset,
                                                                        **PRESET})
            self._seen(response)
            if response.status_code == 201:
                self.presets.append(preset)
            elif response.status_code == 503:
                await asyncio.sleep(0.02)

    async def importer(self) -> None:
        n = 0
        while self.running:
            n += 1
            preset = f"job-{n}"
            response = await self.client.post("/api/v1/jobs", json={
                "kind": "presets.import", "payload": {"presets": [{"name": preset, **PRESET}]}})
            self._seen(response)
            if response.status_code == 202:
                self.jobs[response.json()["id"]] = preset
            await asyncio.sleep(0.01)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()  # noqa: SIM115 - read at once
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


@pytest.mark.slow(seconds=15)
async def test_restarts_under_load_answer_503_and_lose_nothing_acknowledged(
    backend_env, redis_namespace, backend_processes, servers_data_dir
) -> None:
    server = EmbeddedPostgres(servers_data_dir / "own-postgres").start()
    url = server.url("restarts")
    try:
        admin = await asyncpg.connect(server.url())
        await admin.execute("CREATE DATABASE restarts")
        await admin.close()
        env = {**backend_env, "DATABASE_URL": url, "REDIS_URL": redis_namespace.url,
               "REDIS_KEY_PREFIX": redis_namespace.prefix, "SHUTDOWN_DRAIN_SECONDS": "0",
               "JOB_RETRY_BACKOFF_SECONDS": "0.2", "JOB_MAX_TRIES": "20",
               "DATABASE_CONNECT_TIMEOUT": "1"}
        serve = backend_processes("serve", env)
        await asyncio.to_thread(serve.wait_ready, 60)
        worker = backend_processes("worker", env)
        await wait_until_async(lambda: worker.has_logged("worker ready"), timeout=60)

        load = Load(serve.base_url)
        tasks = [asyncio.create_task(load.writer(f"w{i}")) for i in range(3)]
        tasks.append(asyncio.create_task(load.importer()))
        try:
            await asyncio.sleep(0.5)
            # A fast shutdown (SIGINT, as `pg_ctl stop -m fast`), then a start on the same port.
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(server.start)
            await asyncio.sleep(1.0)
            # Killed: its backends go with it, then it starts again (crash recovery).
            postmaster = server.pid
            backends = _children(postmaster)
            os.kill(postmaster, signal.SIGKILL)
            await asyncio.to_thread(wait_until, lambda: not any(
                process_running(pid) for pid in [postmaster, *backends]), timeout=20)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(server.start)
            await asyncio.sleep(1.5)
        finally:
            load.running = False
            await asyncio.gather(*tasks)

        assert load.bad == [], (load.bad[:5], load.answers)
        assert load.answers.get(503, 0) > 0, load.answers  # the restarts were seen
        assert load.presets and load.jobs, load.answers

        async def every_job_ended() -> dict[str, Any] | None:
            states = {job_id: (await load.client.get(f"/api/v1/jobs/{job_id}")).json()
                      for job_id in load.jobs}
            ended = all(s["status"] in ("complete", "failed") for s in states.values())
            return states if ended else None

        states = await wait_until_async(every_job_ended, timeout=60, interval=0.3,
                                        message=lambda: worker.describe(3000))
        failed = {i: s for i, s in states.items() if s["status"] != "complete"}
        assert failed == {}, failed
        conn = await asyncpg.connect(url)
        try:
            stored = {row["name"] for row in await conn.fetch(
                "SELECT name FROM generation_presets")}
        finally:
            await conn.close()
        lost = [name for name in [*load.presets, *load.jobs.values()] if name not in stored]
        assert lost == [], lost
        await load.client.aclose()
        errors = [r for r in serve.records() if r["level"] == "ERROR"]
        assert errors == [], errors[:3]
        assert serve.stop() == 0 and worker.stop() == 0
    finally:
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 20
