"""One set of servers per run under xdist, and cleanup of what a killed session left.

Each test runs inner pytest sessions with the kit's plugin, as a user's suite would.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from pixsim7_testing.host import ENV_SERVICES_DIR
from pixsim7_testing.ownership import OWNER_LABEL, SessionOwner
from pixsim7_testing.polling import wait_until
from pixsim7_testing.services import ENV_BACKEND, docker_available

from pixsim7.backend.main.infrastructure.adapters.embedded import free_port, private_folder
from tests.kit import inner as inner_session

REPO_ROOT = Path(__file__).resolve().parents[2]

RECORD_SERVICES = textwrap.dedent("""
    import json, os, time

    def record(kit_services, name):
        info = {"pid": os.getpid(), "postgres": kit_services.postgres.port,
                "redis": kit_services.redis.port, "backend": kit_services.backend}
        target = os.path.join(os.environ["KIT_RECORD_DIR"], name)
        with open(target + ".tmp", "w") as out:
            json.dump(info, out)
        os.rename(target + ".tmp", target)
""")


def port_is_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def services_dir() -> Iterator[Path]:
    # A cleanup scope of its own, so no concurrent session elsewhere removes what these inner
    # sessions leave. Not under tmp_path: the unprivileged servers' user must traverse it.
    path = private_folder(Path(tempfile.mkdtemp(prefix="pixsim7-kit-scope-")))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def inner(tmp_path: Path, services_dir: Path) -> Callable[..., subprocess.Popen]:
    """`inner(test_source, *args, backend=..., **env)`: a started inner pytest session."""
    (tmp_path / "records").mkdir()

    def start(source: str, *args: str, backend: str = "embedded",
              **extra_env: str) -> subprocess.Popen:
        folder = tmp_path / f"session{len(list(tmp_path.glob('session*')))}"
        folder.mkdir()
        (folder / "test_inner.py").write_text(RECORD_SERVICES + textwrap.dedent(source))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PIXSIM7_", "PYTEST_"))}
        env.update({ENV_BACKEND: backend, ENV_SERVICES_DIR: str(services_dir),
                    "KIT_RECORD_DIR": str(tmp_path / "records"), "PYTHONPATH": str(REPO_ROOT),
                    **inner_session.ENV, **extra_env})
        for name in ("DOCKER_HOST", "TESTCONTAINERS_RYUK_DISABLED",
                     "PIXSIM7_TEST_POSTGRES_IMAGE", "PIXSIM7_TEST_REDIS_IMAGE"):
            if name in os.environ:
                env[name] = os.environ[name]
        return subprocess.Popen(
            [sys.executable, "-m", "pytest", *inner_session.PLUGIN_ARGS, str(folder),
             "--rootdir", str(folder), "-c", os.devnull, *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=folder,
        )

    return start


def records(tmp_path: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text())
            for p in (tmp_path / "records").iterdir() if not p.name.endswith(".tmp")}


def test_xdist_workers_share_one_set_started_and_stopped_once(inner, tmp_path) -> None:
    session = inner("""
        def test_a(kit_services):
            record(kit_services, "a")

        def test_b(kit_services):
            record(kit_services, "b")
    """, "-n", "2")
    output, _ = session.communicate(timeout=180)
    assert session.returncode == 0, output
    seen = records(tmp_path)
    assert set(seen) == {"a", "b"}
    assert seen["a"]["pid"] != seen["b"]["pid"]  # two workers...
    assert seen["a"]["postgres"] == seen["b"]["postgres"]  # ...one PostgreSQL
    assert seen["a"]["redis"] == seen["b"]["redis"]  # ...and one Redis
    assert output.count("pixsim7 services: backend=embedded") == 1
    assert "stopped in" in output
    assert not port_is_open(seen["a"]["postgres"]) and not port_is_open(seen["a"]["redis"])


def test_xdist_run_with_a_broken_configuration_fails_once_before_the_workers_run(inner) -> None:
    port = free_port()  # nothing listens there
    session = inner("""
        def test_a(kit_services):
            pass

        def test_b(kit_services):
            pass
    """, "-n", "2", backend="external",
        PIXSIM7_TEST_DATABASE_URL=f"postgresql://postgres:hunter2@127.0.0.1:{port}/postgres",
        PIXSIM7_TEST_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    output, _ = session.communicate(timeout=180)
    assert session.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert "pixsim7 testing kit: external backend: cannot reach the servers" in output
    assert "ERROR at setup" not in output and not re.search(r"\b\d+ errors?\b", output), output
    assert "passed" not in output and "hunter2" not in output


def start_holding_session(inner, tmp_path: Path, backend: str = "embedded"
                          ) -> subprocess.Popen:
    """A session holding its servers, returned once they run (its record "held" written).
    If they never start, the session is killed and the wait's error raised."""
    session = inner("""
        import time

        def test_hold(kit_services):
            record(kit_services, "held")
            time.sleep(300)
    """, backend=backend)
    try:
        wait_until(lambda: (tmp_path / "records" / "held").exists(), timeout=120,
                   message="the inner session started its servers")
    except BaseException:
        session.send_signal(signal.SIGKILL)
        session.communicate(timeout=30)
        raise
    return session


def kill_holding_session(inner, tmp_path: Path, backend: str) -> dict:
    """Start a session that holds its servers, SIGKILL it once they run; what it recorded."""
    session = start_holding_session(inner, tmp_path, backend)
    session.send_signal(signal.SIGKILL)
    session.communicate(timeout=30)
    held = records(tmp_path)["held"]
    assert held["pid"] == session.pid
    assert port_is_open(held["postgres"]) and port_is_open(held["redis"])  # left behind
    return held


def next_session_output(inner) -> str:
    session = inner("""
        def test_nothing():
            pass
    """)
    output, _ = session.communicate(timeout=180)
    assert session.returncode == 0, output
    return output


def test_next_session_removes_what_a_killed_embedded_session_left(
    inner, tmp_path, services_dir
) -> None:
    held = kill_holding_session(inner, tmp_path, "embedded")
    (folder,) = services_dir.iterdir()
    assert SessionOwner.of_folder(folder).pid == held["pid"]
    servers = [p for p in psutil.process_iter(["cwd"])
               if (p.info["cwd"] or "").startswith(str(folder))]
    assert servers  # PostgreSQL (and its helpers) and Redis still run in that folder

    output = next_session_output(inner)

    assert f"removed what a killed session left: 1 server folder(s) ({folder})" in output
    assert not folder.exists()
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in servers)
    assert not port_is_open(held["postgres"]) and not port_is_open(held["redis"])


def test_a_live_session_keeps_its_servers(inner, tmp_path, services_dir) -> None:
    holder = start_holding_session(inner, tmp_path)
    try:
        output = next_session_output(inner)
        held = records(tmp_path)["held"]
        assert "removed what a killed session left" not in output
        assert len(list(services_dir.iterdir())) == 1
        assert port_is_open(held["postgres"]) and port_is_open(held["redis"])
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=30)
    next_session_output(inner)  # and now that it is dead, its servers go


def test_next_session_removes_containers_a_killed_session_left(inner, tmp_path) -> None:
    if not docker_available():
        pytest.skip("needs a Docker engine (the testcontainers run of .ci/run has one)")
    import docker

    held = kill_holding_session(inner, tmp_path, "testcontainers")
    client = docker.from_env()
    try:
        owned = [c for c in client.containers.list(all=True, filters={"label": OWNER_LABEL})
                 if c.labels[OWNER_LABEL].split("/")[1] == str(held["pid"])]
        assert len(owned) == 2  # PostgreSQL and Redis

        output = next_session_output(inner)

        assert "removed what a killed session left: 2 container(s)" in output
        assert all(c.short_id in output for c in owned)
        remaining = {c.id for c in client.containers.list(all=True)}
        assert not remaining & {c.id for c in owned}
    finally:
        client.close()


def test_the_next_run_drops_the_databases_a_killed_run_left_on_a_shared_server(
    inner, tmp_path, kit_services
) -> None:
    # The run's own servers, as a CI's service containers would be: external to the inner runs,
    # under a name prefix of their own (which also keeps the outer run's databases apart).
    prefix = f"kill{uuid.uuid4().hex[:8]}_"
    shared = {"PIXSIM7_TEST_DATABASE_URL": kit_services.postgres.url(),
              "PIXSIM7_TEST_REDIS_URL": kit_services.redis.url(),
              "PIXSIM7_TEST_DATABASE_PREFIX": prefix, "PIXSIM7_TEST_DATABASE_POOL": "2"}
    session = inner("""
        import time

        import pytest

        @pytest.mark.template_db
        def test_hold(test_database, kit_services):
            record(kit_services, "held")
            time.sleep(300)
    """, backend="external", **shared)
    try:
        wait_until(lambda: (tmp_path / "records" / "held").exists(), timeout=120,
                   message="the inner run made its databases")
    finally:
        session.send_signal(signal.SIGKILL)
        session.communicate(timeout=30)
    # A CREATE DATABASE the killed pool had sent still ends on the server, unstamped.
    asyncio.run(_until_no_create_database_runs(kit_services, prefix))
    left = asyncio.run(_databases_named(kit_services, prefix))
    # The template, the test's clone, and the clones the worker's pool had made ahead.
    kinds = [name.split("_")[1] for name in left]
    assert kinds.count("tpl") == 1 and 1 <= kinds.count("t") <= 1 + 2, left
    # Each stamped with its owner, but one the pool was making when the kill came (between
    # CREATE DATABASE and the stamp).
    unstamped = [name for name, note in left.items() if not note]
    assert len(unstamped) <= 1 and all(
        note.startswith(f"pixsim7-kit owner={socket.gethostname()}/{session.pid}/")
        for note in left.values() if note), left

    later = inner("""
        def test_uses_the_server(kit_services):
            pass
    """, backend="external", **shared)
    output, _ = later.communicate(timeout=180)
    assert later.returncode == 0, output
    assert f"dropped {len(left)} database(s) a killed session left" in output, output
    assert all(name in output for name in left)
    assert asyncio.run(_databases_named(kit_services, prefix)) == {}


async def _until_no_create_database_runs(services, prefix: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(services.postgres.url())
    try:
        for _ in range(600):
            if not await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND "
                    "state = 'active' AND "
                    "starts_with(query, $1)", f'CREATE DATABASE "{prefix}'):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("a CREATE DATABASE of the killed run still runs after 30 s")
    finally:
        await conn.close()


async def _databases_named(services, prefix: str) -> dict[str, str]:
    import asyncpg

    conn = await asyncpg.connect(services.postgres.url())
    try:
        rows = await conn.fetch(
            "SELECT datname, shobj_description(oid, 'pg_database') AS note FROM pg_database "
            "WHERE starts_with(datname, $1)", prefix)
    finally:
        await conn.close()
    return {row["datname"]: row["note"] or "" for row in rows}
