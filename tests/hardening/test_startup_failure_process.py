"""A backend process whose startup fails exits non-zero, says why, and leaves nothing behind.

Runs the real `pixsim7-backend` command as a subprocess: a database that is not there (URL
with a password that must never be printed), and a startup that fails after the embedded
PostgreSQL and Redis servers were started (they must be stopped on the way out).
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import psutil
import pytest
from pixsim7_testing.plugins import bundled_with_plugin
from pixsim7_testing.processes import run_backend

from pixsim7.backend.main.infrastructure.adapters.embedded import free_port

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-pw"
EXIT_BOUND_S = 30.0
SERVE_STARTUP_FAILURE = 3  # what `serve` returns when the app never started


@pytest.fixture
def env(backend_env, tmp_path: Path) -> dict[str, str]:
    """`backend_env` with a private TMPDIR and an admin token."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    return {**backend_env, "TMPDIR": str(tmp), "ADMIN_TOKEN": "process-test-token"}


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, int]:
    """Run the CLI to its end (bounded); (exit code, combined output, pid)."""
    run = run_backend(args, env, cwd, timeout=EXIT_BOUND_S)
    return run.returncode, run.output, run.pid


def _cwd(proc: psutil.Process) -> str:
    try:
        return proc.cwd()
    except (psutil.Error, OSError):
        return ""


def processes_using(folder: Path, parent_pid: int | None = None) -> list[psutil.Process]:
    """Live processes whose command line or working directory is inside `folder`, or whose
    parent is `parent_pid`."""
    marker = str(folder)
    found = []
    for proc in psutil.process_iter(["pid", "ppid", "cmdline", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline = " ".join(info["cmdline"] or [])
        if marker in cmdline or _cwd(proc).startswith(marker) or (
                parent_pid is not None and info["ppid"] == parent_pid):
            found.append(proc)
    return found


def kill_all(processes: list[psutil.Process]) -> None:
    for proc in processes:
        try:
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(processes, timeout=10)


def port_is_closed(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


# --- database unreachable -------------------------------------------------------------------


@pytest.mark.parametrize(("command", "database"), [
    pytest.param(["serve", "--port", "{port}"], "refused", id="serve-nothing-listens"),
    pytest.param(["check"], "refused", id="check-nothing-listens"),
    pytest.param(["serve", "--port", "{port}"], "blackholed", id="serve-never-answers"),
])
def test_unreachable_database_exits_nonzero_naming_it_without_the_password(
    command: list[str], database: str, tmp_path: Path, redis_namespace, fault_proxy, env
) -> None:
    if database == "refused":
        dead_port = free_port()
    else:  # accepts the connection, never answers: only DATABASE_CONNECT_TIMEOUT ends it
        proxy = fault_proxy("postgres")
        proxy.blackhole()
        dead_port = proxy.port
    env = {
        **env,
        "DATABASE_URL": f"postgresql://postgres:{PASSWORD}@127.0.0.1:{dead_port}/pixsim7",
        "REDIS_URL": redis_namespace.url,
        "REDIS_KEY_PREFIX": redis_namespace.prefix,
        "DATABASE_CONNECT_TIMEOUT": "1",
    }
    port = free_port()
    args = [part.format(port=port) for part in command]
    pid = None
    try:
        began = time.monotonic()
        code, output, pid = run_cli(args, env, tmp_path)
        took = time.monotonic() - began
        assert code != 0, output
        assert took < 10.0, f"took {took:.1f}s to give up on the database"
        if command[0] == "serve":
            assert code == SERVE_STARTUP_FAILURE, output
            assert port_is_closed(port)
        assert re.search(r"\bdatabase\b", output), output
        assert re.search(r"database: failed|step 'database'", output), output
        assert PASSWORD not in output
        assert processes_using(tmp_path, parent_pid=pid) == []
        assert list((tmp_path / "tmp").iterdir()) == []
    finally:
        kill_all(processes_using(tmp_path, parent_pid=pid))


def startup_report(run) -> tuple[list[list[str]], str]:
    """The step table (without its timings) and the last line on stderr."""
    rows = [re.split(r"\s{2,}", line.strip()) for line in run.stdout.splitlines()
            if re.match(r"(phase|build|startup|shutdown)\s", line)]
    return [row[:4] + row[5:] for row in rows], run.stderr.strip().splitlines()[-1]


def test_serve_reports_a_failed_startup_exactly_like_check(
    tmp_path: Path, redis_namespace, env
) -> None:
    env = {**env, "DATABASE_URL": f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/x",
           "REDIS_URL": redis_namespace.url, "DATABASE_CONNECT_TIMEOUT": "1"}
    check = run_backend(["check"], env, tmp_path, timeout=EXIT_BOUND_S)
    serve = run_backend(["serve", "--port", str(free_port())], env, tmp_path,
                        timeout=EXIT_BOUND_S)
    assert (check.returncode, serve.returncode) == (1, SERVE_STARTUP_FAILURE), serve.output
    assert "Traceback" not in serve.output and "Exception in" not in serve.output, serve.output
    table, sentence = startup_report(serve)
    assert (table, sentence) == startup_report(check)
    assert table[-1][:4] == ["startup", "database", "required", "failed"], table
    assert sentence.startswith("startup failed at step 'database'"), sentence
    assert PASSWORD not in serve.output


# --- failure after the embedded servers started ---------------------------------------------


FAILING_PLUGIN = """\
def on_load(ctx):
    raise RuntimeError("boom-plugin refuses to load")
"""


def test_failure_after_embedded_servers_started_stops_them(tmp_path: Path, env,
                                                           servers_data_dir: Path) -> None:
    plugins = bundled_with_plugin(tmp_path / "plugins", "plugins", "zz_boom", FAILING_PLUGIN,
                                  name="Boom", required=True)
    data_dir = servers_data_dir
    env = {**env, "DEBUG": "true", "PIXSIM7_DATA_DIR": str(data_dir),
           "FEATURE_PLUGINS_DIR": str(plugins)}
    port = free_port()
    pid = None
    try:
        code, output, pid = run_cli(["serve", "--port", str(port)], env, tmp_path)
        assert code == SERVE_STARTUP_FAILURE, output
        # Both embedded servers really ran: they logged where they listened.
        started = dict(re.findall(r"embedded (PostgreSQL|Redis) \S+ on 127\.0\.0\.1:(\d+)",
                                  output))
        assert set(started) == {"PostgreSQL", "Redis"}, output
        assert "zz_boom" in output
        assert re.search(r"plugins: failed", output), output
        # ... and were stopped on the way out: nothing listens, no process is left.
        for name, server_port in started.items():
            assert port_is_closed(int(server_port)), f"embedded {name} still listens"
        assert processes_using(data_dir, parent_pid=pid) == []
        assert not (data_dir / "postgres" / "pgdata" / "postmaster.pid").exists()
        assert re.search(r"shutdown embedded_services: ok", output), output
        assert port_is_closed(port)
        assert list((tmp_path / "tmp").iterdir()) == []
    finally:
        kill_all([*processes_using(tmp_path, parent_pid=pid), *processes_using(data_dir)])
