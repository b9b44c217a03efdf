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
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
from pixsim7_testing.plugins import bundled_with_plugin, write_plugin
from pixsim7_testing.polling import wait_until_async
from pixsim7_testing.processes import BackendProcess

from pixsim7.backend.main.startup import API_PLAN

# None of these pins schema creation or seeding: their apps start on a template clone.
pytestmark = [pytest.mark.integration, pytest.mark.template_db]

ADMIN_TOKEN = "shutdown-admin-token"
DRAIN = 1.5
# The teardowns the API plan runs against the kit's servers, in the order they must run: the
# reverse of startup. The embedded servers are not needed there, so that step starts nothing.
API_TEARDOWNS = [step.name for step in reversed(API_PLAN)
                 if step.teardown is not None and step.name != "embedded_services"]

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


async def _wait_for_line(serve: BackendProcess, needle: str, deadline: float) -> None:
    await wait_until_async(lambda: serve.has_logged(needle), timeout=deadline, interval=0.02,
                           message=lambda: f"no {needle!r}:\n{serve.describe()}")


def _steps(serve: BackendProcess, phase: str) -> list[tuple[str, str]]:
    """(step, status) of each milestone of `phase` the process logged."""
    return [(step, status) for _phase, step, status in serve.milestones(phase)]


def _route_plugins_with_slow(tmp_path: Path) -> Path:
    return bundled_with_plugin(tmp_path / "routes", "routes", "slow", SLOW_PLUGIN, name="Slow",
                               kind="route", prefix="/slow")


async def test_sigterm_turns_ready_503_at_once_lets_requests_finish_and_tears_down_in_reverse(
    backend_services_env, backend_processes, tmp_path: Path
) -> None:
    env = {
        **backend_services_env,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "SHUTDOWN_DRAIN_SECONDS": str(DRAIN),
        "ROUTE_PLUGINS_DIR": str(_route_plugins_with_slow(tmp_path)),
    }
    serve = backend_processes("serve", env)
    async with httpx.AsyncClient(base_url=serve.base_url, timeout=10) as client:
        body = await asyncio.to_thread(serve.wait_ready, 60)
        assert body["status"] == "ready"
        assert "slow" not in body["plugins"]["failed"]
        # One request that ends inside the drain window, one that outlasts it.
        short = asyncio.ensure_future(client.get("/api/v1/slow/1000"))
        long = asyncio.ensure_future(client.get("/api/v1/slow/2200"))
        await _wait_for_line(serve, "slow request 1000 started", 10)
        await _wait_for_line(serve, "slow request 2200 started", 10)

        signalled = time.monotonic()
        serve.send(signal.SIGTERM)
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
    code = await asyncio.to_thread(serve.proc.wait, DRAIN + 10)
    total = time.monotonic() - signalled
    output = serve.output()
    assert code == 0, serve.describe()
    assert total < DRAIN + 10
    # Not sooner than the drain: the load balancer gets its window.
    assert total >= DRAIN - 0.1, f"exited after {total:.2f}s, drain is {DRAIN}s"

    records = serve.log_lines
    startup = [step for step, _status in _steps(serve, "startup") if step != "complete"]
    shutdown = _steps(serve, "shutdown")
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


async def test_sigterm_with_embedded_services_stops_postgres_and_redis(
    backend_env, backend_processes, servers_data_dir
) -> None:
    data_dir = str(servers_data_dir)
    env = {**backend_env, "ADMIN_TOKEN": ADMIN_TOKEN, "DEBUG": "true",
           "PIXSIM7_DATA_DIR": data_dir, "SHUTDOWN_DRAIN_SECONDS": "0.2"}
    serve = None
    servers: dict[int, tuple[str, int, int]] = {}
    try:
        serve = backend_processes("serve", env, name="serve-embedded")
        body = await asyncio.to_thread(serve.wait_ready, 120)
        assert body["database"] == "connected" and body["redis"] == "connected", body
        ports = {
            m["kind"]: int(m["port"])
            for _lvl, name, msg in serve.log_lines
            if name == "pixsim7.embedded" and (m := EMBEDDED_PORT.match(msg))
        }
        assert set(ports) == {"PostgreSQL", "Redis"}, serve.describe()
        servers = _server_processes(data_dir, ports["Redis"])
        commands = " ".join(_cmdline(pid) for pid in servers)
        assert data_dir in commands and "redis-server" in commands, servers
        assert all(_port_open(p) for p in ports.values())

        serve.send(signal.SIGTERM)
        code = await asyncio.to_thread(serve.proc.wait, 30)
        assert code == 0, serve.describe()
        # Ports are polled too: other tests on this machine bind free ports all the time, and a
        # single connect may land on a listener that took a freed port for a moment.
        await wait_until_async(
            lambda: not _alive(servers) and not _processes_mentioning(data_dir)
            and not any(_port_open(p) for p in ports.values()), timeout=10, interval=0.1,
            message=lambda: f"left running after exit: {_alive(servers)}; "
                            f"open: {[p for p in ports.values() if _port_open(p)]}")
        shutdown = _steps(serve, "shutdown")
        assert shutdown[-1] == ("embedded_services", "ok"), shutdown
    finally:
        if serve is not None:
            serve.stop()
        # Anything the run left behind is stopped by its pid before the folder goes.
        for pid in [*_alive(servers), *_processes_mentioning(data_dir)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_a_plugin_teardown_that_raises_is_logged_and_the_other_teardowns_still_run(
    app_factory, make_settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugins = tmp_path / "feature_plugins"
    marker = tmp_path / "calm-disabled"
    for folder, hook in (
        ("calm", f"    open({str(marker)!r}, 'w').write('disabled')\n"),
        ("grumpy", "    raise RuntimeError('grumpy refuses to stop')\n"),
    ):
        write_plugin(plugins, folder, f"def on_disable(ctx):\n{hook}")

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
    # The plugins teardown itself reports the failure, naming the plugin, once all hooks ran.
    assert dict(steps)["plugins"] == "failed"
    plugins_down = [m for m in running.milestones
                    if m["phase"] == "shutdown" and m["step"] == "plugins"]
    assert plugins_down[0]["error"] == "PluginTeardownError"
    timeline = running.app.state.startup.records
    assert "grumpy" in next(r.error for r in timeline if r.phase == "shutdown"
                            and r.step == "plugins")
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
