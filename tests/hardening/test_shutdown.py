"""Graceful shutdown: SIGTERM drains, in-flight requests finish, teardowns run in reverse.

Process-level tests run the real `pixsim7-backend serve` CLI; the last test runs the app
in-process through the kit to see a failing plugin teardown leave the others running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from pixsim7.backend.main.infrastructure.embedded import free_port
from pixsim7.backend.main.shared.config import PACKAGE_DIR
from pixsim7.backend.main.startup import API_PLAN

pytestmark = pytest.mark.integration

CLI = Path(sys.executable).with_name("pixsim7-backend")
ADMIN_TOKEN = "shutdown-admin-token"
DRAIN = 1.5
# The CLI's log format: "%(asctime)s %(levelname)-7s %(name)s: %(message)s".
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+)\s+(?P<name>\S+): (?P<msg>.*)$"
)
MILESTONE = re.compile(r"^(?P<phase>startup|shutdown) (?P<step>\w+): (?P<status>\w+)")
OVERRIDDEN = (
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
    "ADMIN_TOKEN",
    "DEBUG",
    "SECRET_KEY",
    "DOMAIN_MODELS_DIR",
    "FEATURE_PLUGINS_DIR",
    "ROUTE_PLUGINS_DIR",
    "MIDDLEWARE_DIR",
    "PLUGIN_FAIL_FAST",
    "PIXSIM7_DATA_DIR",
    "SHUTDOWN_DRAIN_SECONDS",
)
# The teardowns the API plan has, in the order they must run: the reverse of startup.
API_TEARDOWNS = [step.name for step in reversed(API_PLAN) if step.teardown is not None]

SLOW_PLUGIN = """
import asyncio
import logging

from fastapi import APIRouter

router = APIRouter()
log = logging.getLogger("pixsim7.slow")


@router.get("/{millis}")
async def slow(millis: int) -> dict:
    log.info("slow request %d started", millis)
    await asyncio.sleep(millis / 1000)
    log.info("slow request %d finished", millis)
    return {"slept_ms": millis}
"""


def _base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDDEN}
    env.update(
        {
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "PYTHONUNBUFFERED": "1",
            "PIXSIM7_DATA_DIR": str(tmp_path / "data"),
        }
    )
    return env


def _start(env: dict[str, str], log: Path, cwd: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(CLI), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, port


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
            return
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait(10)


def _tail(log: Path, proc: subprocess.Popen) -> str:
    return f"(exit {proc.poll()})\n" + log.read_text(errors="replace")[-4000:]


async def _wait_ready(
    client: httpx.AsyncClient, proc: subprocess.Popen, log: Path, deadline: float
) -> dict:
    end = time.monotonic() + deadline
    while True:
        assert proc.poll() is None, "serve died while starting:\n" + _tail(log, proc)
        with contextlib.suppress(httpx.TransportError):
            response = await client.get("/ready")
            if response.status_code == 200:
                return response.json()
        assert time.monotonic() < end, "serve not ready in time:\n" + _tail(log, proc)
        await asyncio.sleep(0.1)


async def _wait_for_line(log: Path, needle: str, proc: subprocess.Popen, deadline: float) -> None:
    end = time.monotonic() + deadline
    while needle not in log.read_text(errors="replace"):
        assert proc.poll() is None, _tail(log, proc)
        assert time.monotonic() < end, f"no {needle!r} in time:\n" + _tail(log, proc)
        await asyncio.sleep(0.02)


def _log_records(text: str) -> list[tuple[str, str, str]]:
    """(level, logger, message) of each log line."""
    return [(m["level"], m["name"], m["msg"]) for m in map(LOG_LINE.match, text.splitlines()) if m]


def _milestones(records: list[tuple[str, str, str]], phase: str) -> list[tuple[str, str]]:
    found = []
    for _level, name, message in records:
        match = MILESTONE.match(message) if name == "pixsim7.startup" else None
        if match and match["phase"] == phase:
            found.append((match["step"], match["status"]))
    return found


def _route_plugins_with_slow(tmp_path: Path) -> Path:
    routes = tmp_path / "routes"
    shutil.copytree(PACKAGE_DIR / "routes", routes, ignore=shutil.ignore_patterns("__pycache__"))
    slow = routes / "slow"
    slow.mkdir()
    (slow / "manifest.toml").write_text(
        'id = "slow"\nname = "Slow"\nversion = "1.0.0"\nkind = "route"\nprefix = "/slow"\n'
    )
    (slow / "__init__.py").write_text(textwrap.dedent(SLOW_PLUGIN))
    return routes


async def test_sigterm_turns_ready_503_at_once_lets_requests_finish_and_tears_down_in_reverse(
    test_database, redis_namespace, tmp_path: Path
) -> None:
    env = _base_env(tmp_path)
    env.update(
        {
            "DATABASE_URL": test_database.url,
            "REDIS_URL": redis_namespace.url,
            "REDIS_KEY_PREFIX": redis_namespace.prefix,
            "SHUTDOWN_DRAIN_SECONDS": str(DRAIN),
            "ROUTE_PLUGINS_DIR": str(_route_plugins_with_slow(tmp_path)),
        }
    )
    log = tmp_path / "serve.log"
    proc, port = _start(env, log, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            body = await _wait_ready(client, proc, log, deadline=60)
            assert body["status"] == "ready"
            assert "slow" not in body["plugins"]["failed"]
            # One request that ends inside the drain window, one that outlasts it.
            short = asyncio.ensure_future(client.get("/api/v1/slow/1000"))
            long = asyncio.ensure_future(client.get("/api/v1/slow/2200"))
            await _wait_for_line(log, "slow request 1000 started", proc, 10)
            await _wait_for_line(log, "slow request 2200 started", proc, 10)

            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            first = await client.get("/ready")
            answered = time.monotonic() - signalled
            assert first.status_code == 503, first.text
            assert first.json()["lifecycle"] == "stopping"
            assert first.json()["status"] == "unavailable"
            assert answered < 0.3, f"/ready took {answered:.3f}s to turn 503"
            # While draining the process still answers: liveness stays 200.
            assert (await client.get("/")).status_code == 200
            assert (await client.get("/ready")).status_code == 503

            short_response, long_response = await asyncio.wait_for(
                asyncio.gather(short, long), timeout=DRAIN + 10
            )
            assert short_response.status_code == 200, short_response.text
            assert short_response.json() == {"slept_ms": 1000}
            assert long_response.status_code == 200, long_response.text
            assert long_response.json() == {"slept_ms": 2200}
        code = await asyncio.to_thread(proc.wait, DRAIN + 10)
        total = time.monotonic() - signalled
    finally:
        _stop(proc)
    output = log.read_text(errors="replace")
    assert code == 0, _tail(log, proc)
    assert total < DRAIN + 10
    # Not sooner than the drain: the load balancer gets its window.
    assert total >= DRAIN - 0.1, f"exited after {total:.2f}s, drain is {DRAIN}s"

    records = _log_records(output)
    startup = [step for step, _status in _milestones(records, "startup") if step != "complete"]
    shutdown = _milestones(records, "shutdown")
    assert [step for step, _ in shutdown] == API_TEARDOWNS, output
    assert all(status == "ok" for _, status in shutdown), shutdown
    # Reverse of the order the same process logged on the way up.
    assert [s for s in reversed(startup) if s in API_TEARDOWNS] == API_TEARDOWNS
    # The teardowns ran only after the in-flight requests had finished.
    messages = [message for _level, _name, message in records]
    first_teardown = next(i for i, m in enumerate(messages) if m.startswith("shutdown "))
    finished = [i for i, m in enumerate(messages) if m.startswith("slow request 2200 finished")]
    assert finished and finished[0] < first_teardown, output
    bad = [r for r in records if r[0] in ("ERROR", "CRITICAL")]
    assert not bad and "Traceback" not in output, output


EMBEDDED_PORT = re.compile(
    r"^embedded (?P<kind>PostgreSQL|Redis) \S+ on 127\.0\.0\.1:(?P<port>\d+)$"
)


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _processes_mentioning(marker: str) -> dict[int, str]:
    """pid -> command line of every process whose command line contains `marker`."""
    return {pid: cmd for pid in _pids() if marker in (cmd := _cmdline(pid))}


def _server_processes(data_dir: str, redis_port: int) -> dict[int, tuple[str, int, int]]:
    """The embedded servers and their children (PostgreSQL's backends and workers).

    The postmaster's command line names the data dir; redis-server rewrites its title to
    `redis-server 127.0.0.1:<port>`.
    """
    leaders = set(_processes_mentioning(data_dir))
    leaders |= {
        pid
        for pid in _pids()
        if "redis-server" in (cmd := _cmdline(pid)) and f":{redis_port}" in cmd
    }
    found = {}
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None and (pid in leaders or stat[1] in leaders):
            found[pid] = stat
    return found


def _alive(processes: dict[int, tuple[str, int, int]]) -> dict[int, str]:
    """Those of `processes` still running (the same process: same start time, not a zombie)."""
    left = {}
    for pid, (_state, _ppid, started) in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[2] == started and stat[0] != "Z":
            left[pid] = _cmdline(pid)
    return left


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_sigterm_with_embedded_services_stops_postgres_and_redis(tmp_path: Path) -> None:
    # Outside pytest's tmp tree: the embedded PostgreSQL runs as an unprivileged user that must
    # reach its folder, and pytest keeps its tmp root private.
    data_dir = tempfile.mkdtemp(prefix="pixsim7-shutdown-")
    env = _base_env(tmp_path)
    env.update({"DEBUG": "true", "PIXSIM7_DATA_DIR": data_dir, "SHUTDOWN_DRAIN_SECONDS": "0.2"})
    log = tmp_path / "serve-embedded.log"
    proc = None
    servers: dict[int, tuple[str, int, int]] = {}
    try:
        proc, port = _start(env, log, tmp_path)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            body = await _wait_ready(client, proc, log, deadline=120)
        assert body["database"] == "connected" and body["redis"] == "connected", body
        ports = {
            m["kind"]: int(m["port"])
            for _lvl, name, msg in _log_records(log.read_text(errors="replace"))
            if name == "pixsim7.embedded" and (m := EMBEDDED_PORT.match(msg))
        }
        assert set(ports) == {"PostgreSQL", "Redis"}, _tail(log, proc)
        servers = _server_processes(data_dir, ports["Redis"])
        commands = " ".join(_cmdline(pid) for pid in servers)
        assert data_dir in commands and "redis-server" in commands, servers
        assert all(_port_open(p) for p in ports.values())

        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
        assert code == 0, _tail(log, proc)
        end = time.monotonic() + 10
        while (left := _alive(servers)) or _processes_mentioning(data_dir):
            assert time.monotonic() < end, f"left running after exit: {left}"
            await asyncio.sleep(0.1)
        assert not any(_port_open(p) for p in ports.values()), ports
        shutdown = _milestones(_log_records(log.read_text(errors="replace")), "shutdown")
        assert shutdown[-1] == ("embedded_services", "ok"), shutdown
    finally:
        if proc is not None:
            _stop(proc)
        # Anything the run left behind is stopped by its pid before the folder goes.
        for pid in [*_alive(servers), *_processes_mentioning(data_dir)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_a_plugin_teardown_that_raises_is_logged_and_the_other_teardowns_still_run(
    app_factory, make_settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugins = tmp_path / "feature_plugins"
    marker = tmp_path / "calm-disabled"
    for folder, hook in (
        ("calm", f"    open({str(marker)!r}, 'w').write('disabled')\n"),
        ("grumpy", "    raise RuntimeError('grumpy refuses to stop')\n"),
    ):
        (plugins / folder).mkdir(parents=True)
        (plugins / folder / "manifest.toml").write_text(
            f'id = "{folder}"\nname = "{folder.title()}"\nversion = "1.0.0"\nkind = "feature"\n'
        )
        (plugins / folder / "__init__.py").write_text(f"def on_disable(ctx):\n{hook}")

    running = await app_factory(make_settings(feature_plugins_dir=plugins))
    assert running.started, running.startup_error
    manager = running.app.state.plugin_manager
    assert manager.enabled_ids() == ["calm", "grumpy"]
    assert (await running.get("/ready")).status_code == 200

    with caplog.at_level(logging.INFO):
        await running.stop()

    steps = running.recorder.steps("shutdown")
    assert [step for step, _ in steps] == API_TEARDOWNS
    after_plugins = steps[API_TEARDOWNS.index("plugins") + 1 :]
    assert [step for step, _ in after_plugins] == API_TEARDOWNS[
        API_TEARDOWNS.index("plugins") + 1 :
    ]
    assert after_plugins and all(status == "ok" for _, status in after_plugins), steps
    # The plugin disabled after the failing one (reverse load order) still ran its hook.
    assert marker.read_text() == "disabled"
    assert manager.get("grumpy").error.startswith("RuntimeError")
    errors = [
        r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "pixsim7.plugins"
    ]
    assert len(errors) == 1, [r.getMessage() for r in caplog.records]
    assert "grumpy" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert "grumpy refuses to stop" in str(errors[0].exc_info[1])
    assert running.app.state.lifecycle == "stopped"
