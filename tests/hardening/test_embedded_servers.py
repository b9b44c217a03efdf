"""The embedded servers as a real machine treats them: other local users, restarts.

Real embedded PostgreSQL and Redis, started by `pixsim7-backend serve` on a data folder of the
test's own (or by the server classes where a test pins one server).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis
from pixsim7_testing.polling import wait_until_async

from pixsim7.backend.main.infrastructure.adapters.embedded import (
    FAST_SCRAM_ITERATIONS,
    PASSWORD_FILE,
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServerError,
    find_postgres_binaries,
    private_folder,
    server_user,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def env(backend_env, servers_data_dir) -> dict[str, str]:
    """`serve` on embedded servers in the test's own data folder."""
    return {**backend_env, "PIXSIM7_DATA_DIR": str(servers_data_dir),
            "SHUTDOWN_DRAIN_SECONDS": "0"}


def servers(folder: Path) -> dict:
    """What `servers.json` says runs on the data folder `folder`, and for whom."""
    return json.loads((folder / "servers.json").read_text())


async def ready_serve(backend_processes, env: dict[str, str]):
    """A `serve` on `env`, returned once /ready answers."""
    serve = backend_processes("serve", env)
    await asyncio.to_thread(serve.wait_ready, 60)
    return serve


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid for {pid}")


async def test_a_job_acknowledged_before_serve_restarts_is_still_queued_after_it(
    env, backend_processes, servers_data_dir
) -> None:
    serve = await ready_serve(backend_processes, env)
    async with httpx.AsyncClient(base_url=serve.base_url, timeout=10) as client:
        accepted = await client.post("/api/v1/jobs", json={"kind": "noop",
                                                           "payload": {"value": 3}})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    assert serve.stop() == 0, serve.describe()  # its Redis stops with it: nobody else used it
    assert not servers(servers_data_dir)

    again = await ready_serve(backend_processes, env)
    async with httpx.AsyncClient(base_url=again.base_url, timeout=10) as client:
        state = (await client.get(f"/api/v1/jobs/{job_id}")).json()
    assert state["status"] == "queued", state
    assert again.stop() == 0, again.describe()


async def test_the_embedded_servers_want_their_passwords_and_keep_their_files_private(
    env, backend_processes, servers_data_dir
) -> None:
    serve = await ready_serve(backend_processes, env)
    state = servers(servers_data_dir)
    pg_url, redis_url = state["postgres"]["url"], state["redis"]["url"]
    pg_port, redis_port = (int(url.rsplit(":", 1)[1].split("/")[0]) for url in (pg_url, redis_url))
    try:
        # Without the password: refused by both. With it (from the 0600 file): in.
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(f"postgresql://postgres:guess@127.0.0.1:{pg_port}/postgres")
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/postgres")
        with redis.Redis("127.0.0.1", redis_port) as client, pytest.raises(
                redis.AuthenticationError):
            client.config_set("dir", "/tmp")
        pg_password = (servers_data_dir / "postgres" / PASSWORD_FILE).read_text().strip()
        conn = await asyncpg.connect(
            f"postgresql://postgres:{pg_password}@127.0.0.1:{pg_port}/postgres")
        try:
            assert await conn.fetchval("SHOW password_encryption") == "scram-sha-256"
            methods = {row["auth_method"] for row in await conn.fetch(
                "SELECT auth_method FROM pg_hba_file_rules")}
            hashed = await conn.fetchval(
                "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'")
        finally:
            await conn.close()
        assert methods == {"scram-sha-256"}
        # A server that is kept hashes its password as PostgreSQL does by default.
        assert hashed.startswith("SCRAM-SHA-256$4096:")
        redis_password = (servers_data_dir / "redis" / PASSWORD_FILE).read_text().strip()
        with redis.Redis("127.0.0.1", redis_port, password=redis_password,
                         decode_responses=True) as client:
            assert client.config_get("appendonly") == {"appendonly": "yes"}
        # Other local users can read a command line: no password in either server's.
        for pid in (state["postgres"]["pid"], state["redis"]["pid"]):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            assert pg_password not in cmdline and redis_password not in cmdline
            if os.geteuid() == 0:  # started by root, run as the unprivileged user
                assert _uid(pid) == server_user().pw_uid != 0
        assert pg_password not in serve.output() and redis_password not in serve.output()
    finally:
        assert serve.stop() == 0, serve.describe()
    # The whole folder is private: folders 0700, files 0600 (PostgreSQL's own included).
    loose = [f"{path} {oct(_mode(path))}" for path in [servers_data_dir,
                                                       *servers_data_dir.rglob("*")]
             if not path.is_symlink() and _mode(path) & 0o077]
    assert loose == []


def test_a_cluster_an_earlier_version_made_with_trust_wants_a_password_after_its_next_start(
    servers_data_dir,
) -> None:
    folder = private_folder(servers_data_dir / "postgres")
    user = server_user()
    as_user = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid}
    # What earlier versions ran: trust for everyone.
    subprocess.run([find_postgres_binaries().tool("initdb"), "-D", str(folder / "pgdata"),
                    "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8",
                    "--no-locale"], check=True, capture_output=True, **as_user)
    server = EmbeddedPostgres(folder, fast=True).start()
    try:
        async def connect(url: str) -> str:
            conn = await asyncpg.connect(url, timeout=5)
            try:
                return str(await conn.fetchval("SELECT current_user"))
            finally:
                await conn.close()

        with pytest.raises(asyncpg.InvalidPasswordError):
            asyncio.run(connect(f"postgresql://postgres@127.0.0.1:{server.port}/postgres"))
        assert asyncio.run(connect(server.url())) == "postgres"
    finally:
        server.stop()
    # The same folder starts again, with the same password.
    password = server.password
    again = EmbeddedPostgres(folder, fast=True).start()
    try:
        assert again.password == password
    finally:
        again.stop()


def test_a_throwaway_server_hashes_its_random_password_cheaply_and_still_wants_it(
    servers_data_dir,
) -> None:
    server = EmbeddedPostgres(private_folder(servers_data_dir / "postgres"), fast=True).start()

    async def hashed_and_refusal() -> tuple[str, type[BaseException] | None]:
        conn = await asyncpg.connect(server.url(), timeout=5)
        try:
            hashed = await conn.fetchval(
                "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'")
        finally:
            await conn.close()
        try:
            await asyncpg.connect(server.url().replace(server.password, "guess"), timeout=5)
        except asyncpg.InvalidPasswordError as exc:
            return hashed, type(exc)
        return hashed, None

    try:
        if (server.major_version or 0) < 16:
            pytest.fail(f"PostgreSQL {server.version} has no scram_iterations; the embedded "
                        "wheel's is 16 or later")
        hashed, refused = asyncio.run(hashed_and_refusal())
    finally:
        server.stop()
    assert hashed.startswith(f"SCRAM-SHA-256${FAST_SCRAM_ITERATIONS}:")
    assert refused is asyncpg.InvalidPasswordError
    assert len(server.password) >= 32  # 24 random bytes, URL-safe: beyond guessing


def test_a_redis_that_would_keep_nothing_is_refused(servers_data_dir) -> None:
    # The read-back, on a real server: one started without persistence does not pass as one
    # that keeps what it acknowledged.
    server = EmbeddedRedis(servers_data_dir / "redis").start()
    try:
        server.persist = True
        with pytest.raises(EmbeddedServerError, match="keeps nothing on disk"):
            server._check_config()
    finally:
        server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root starts servers as another user")
def test_under_root_a_folder_the_servers_user_cannot_reach_is_one_sentence(tmp_path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    with pytest.raises(EmbeddedServerError, match=r"cannot reach the data folder .*closed"):
        EmbeddedPostgres(closed / "inner" / "postgres").start()
    assert _mode(closed) == 0o700  # not loosened


def _ready_with(serve, pid_of_postgres: int, data_dir: Path) -> bool:
    body = httpx.get(f"{serve.base_url}/ready", timeout=5).json()
    state = servers(data_dir)
    return body["database"] == "connected" and state["postgres"]["pid"] != pid_of_postgres


async def test_a_killed_embedded_postgres_is_started_again_by_the_serve_that_owns_it(
    env, backend_processes, servers_data_dir
) -> None:
    serve = await ready_serve(backend_processes, env)
    killed = servers(servers_data_dir)["postgres"]["pid"]
    os.kill(killed, signal.SIGKILL)  # its parent, serve, has not reaped it: a zombie for now
    await wait_until_async(
        lambda: asyncio.to_thread(_ready_with, serve, killed, servers_data_dir), timeout=30,
        interval=0.2, message=lambda: serve.describe(3000))
    async with httpx.AsyncClient(base_url=serve.base_url, timeout=10) as client:
        created = await client.post("/api/v1/presets", json={
            "name": "after-a-kill", "provider_id": "pixverse", "operation": "text_to_video"})
    assert created.status_code == 201, created.text
    assert any("stopped unexpectedly" in r["message"] for r in serve.records())
    assert serve.stop() == 0, serve.describe()


async def test_the_next_command_on_the_folder_takes_over_from_a_killed_one(
    env, backend_processes, servers_data_dir
) -> None:
    first = await ready_serve(backend_processes, env)
    state = servers(servers_data_dir)
    # The owner is killed, then its PostgreSQL: nobody is left to start it again.
    first.proc.kill()
    first.proc.wait(10)
    os.kill(state["postgres"]["pid"], signal.SIGKILL)
    second = backend_processes("serve", env)
    body = await asyncio.to_thread(second.wait_ready, 60)
    assert body["database"] == "connected" and body["redis"] == "connected", body
    assert second.stop() == 0, second.describe()
    # It took over the Redis the killed one left, and stopped it as the last user.
    assert not servers(servers_data_dir)
