"""A database whose disk is full: 503 with a sentence, never a bare 500, and readiness says so.

The PostgreSQL is the test's own, on a small tmpfs the test mounts and fills, so only its disk
is full; `pixsim7-backend serve` writes to it over a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from pixsim7.backend.main.infrastructure.adapters.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    private_folder,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small disk of its own needs root"),
]

PRESET = {"provider_id": "pixverse", "operation": "text_to_video"}


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `folder` (the servers' user's, like its parent), unmounted
    after the block; only this test's disk fills."""
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                    str(folder)], check=True)
    try:
        yield private_folder(folder)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", str(folder)], check=True)


def _fill(path: str) -> None:
    chunk = b"\0" * (1 << 20)
    with open(path, "wb") as filler:
        try:
            while True:
                filler.write(chunk)
                filler.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


@pytest.mark.slow(seconds=6)
async def test_a_full_disk_answers_503_with_a_sentence_and_readiness_reports_it(
    backend_env, redis_namespace, backend_processes, servers_data_dir
) -> None:
    with small_disk(servers_data_dir / "disk", "160m") as disk:
        await _database_on_a_full_disk(disk, backend_env, redis_namespace, backend_processes)


async def _database_on_a_full_disk(disk, backend_env, redis_namespace, backend_processes):
    server = None
    try:
        server = EmbeddedPostgres(disk / "pg").start()
        admin = await asyncpg.connect(server.url())
        await admin.execute("CREATE DATABASE full_disk")
        await admin.close()
        serve = backend_processes("serve", {
            **backend_env, "DATABASE_URL": server.url("full_disk"),
            "REDIS_URL": redis_namespace.url, "REDIS_KEY_PREFIX": redis_namespace.prefix,
            "SHUTDOWN_DRAIN_SECONDS": "0"})
        await asyncio.to_thread(serve.wait_ready, 60)
        await asyncio.to_thread(_fill, str(disk / "filler"))

        answers: list[httpx.Response] = []
        async with httpx.AsyncClient(base_url=serve.base_url, timeout=10) as client:
            big = {"blob": "x" * 200_000}  # each row takes pages of its own (TOAST)
            for n in range(400):
                response = await client.post("/api/v1/presets", json={
                    "name": f"p{n}", **PRESET, "params": big})
                answers.append(response)
                if response.status_code == 503:
                    break
            refused = answers[-1]
            ready = await client.get("/ready")
            os.unlink(disk / "filler")
            after = await client.post("/api/v1/presets", json={"name": "after", **PRESET})

        assert refused.status_code == 503, [r.status_code for r in answers]
        assert {r.status_code for r in answers[:-1]} <= {201}
        assert refused.headers["Retry-After"]
        assert refused.json() == {
            "detail": "the database cannot write right now (disk full), try again later"}
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "degraded"
        assert ready.json()["database_writes"] == "failing: disk full"
        assert after.status_code == 201, after.text
        assert "Traceback" not in serve.output()
        assert serve.stop() == 0, serve.describe()
    finally:
        if server is not None:
            server.stop()


@pytest.mark.template_db
@pytest.mark.slow(seconds=4)
async def test_a_redis_whose_disk_is_full_refuses_jobs_with_503_not_202(
    backend_services_env, backend_processes, servers_data_dir
) -> None:
    with small_disk(servers_data_dir / "redis-disk", "16m") as disk:
        await _jobs_on_a_full_disk(disk, backend_services_env, backend_processes)


async def _jobs_on_a_full_disk(disk, backend_services_env, backend_processes):
    server = None
    try:
        server = EmbeddedRedis(disk / "redis", persist=True).start()  # as `serve` starts it
        serve = backend_processes("serve", {**backend_services_env, "REDIS_URL": server.url(),
                                            "SHUTDOWN_DRAIN_SECONDS": "0"})
        await asyncio.to_thread(serve.wait_ready, 60)
        await asyncio.to_thread(_fill, str(disk / "filler"))
        answers = []
        async with httpx.AsyncClient(base_url=serve.base_url, timeout=10) as client:
            for n in range(200):
                response = await client.post("/api/v1/jobs", json={
                    "kind": "noop", "payload": {"value": n}})
                answers.append(response)
                if response.status_code != 202:
                    break
        refused = answers[-1]
        assert refused.status_code == 503, [r.status_code for r in answers]
        assert refused.json()["detail"] == "Redis cannot write right now (disk), try again later"
        assert refused.headers["Retry-After"]
        assert "Traceback" not in serve.output()
        assert serve.stop() == 0, serve.describe()
    finally:
        if server is not None:
            server.stop()
