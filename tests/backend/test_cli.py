"""`pixsim7-backend check` and `serve` as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
from pathlib import Path

import httpx
import pytest
from pixsim7_testing.plugins import copy_bundled, write_plugin
from pixsim7_testing.polling import wait_until_async
from pixsim7_testing.processes import run_backend

from pixsim7.backend.main.cli import SERVE_STARTUP_FAILED
from pixsim7.backend.main.startup import API_PLAN, PROFILES, WORKER_PLAN

pytestmark = pytest.mark.integration


@pytest.fixture
def data_dir(servers_data_dir: Path) -> Path:
    return servers_data_dir


@pytest.mark.parametrize(("profile", "plan"), [("api", API_PLAN), ("worker", WORKER_PLAN)])
def test_check_prints_every_step_and_exits_zero(profile, plan, backend_services_env,
                                                tmp_path) -> None:
    run = run_backend(["check", "--profile", profile], backend_services_env, tmp_path)
    assert run.returncode == 0, run.output
    rows = [line.split() for line in run.stdout.splitlines()[1:] if line.strip()]
    status = {row[1]: row[3] for row in rows if row[0] == "startup"}
    shutdown = [row[1] for row in rows if row[0] == "shutdown"]
    assert list(status) == [step.name for step in plan] + ["complete"]
    # Steps that started something are torn down; the embedded servers were not needed here.
    assert status["embedded_services"] == "skipped"
    assert shutdown == [step.name for step in reversed(plan)
                        if step.teardown is not None and status[step.name] != "skipped"]
    assert run.stdout.splitlines()[0].split() == ["phase", "step", "policy", "status", "ms",
                                                 "detail"]
    # The job kinds this profile's app registered: the core's and the enabled plugins'.
    assert "\njob kinds: mood.evaluate (mood), noop (core), presets.import (core)\n" in run.stdout


@pytest.mark.parametrize("profile", ["api", "worker"])
def test_check_graph_prints_the_checked_plan_and_starts_nothing(profile, backend_env,
                                                                tmp_path) -> None:
    # Servers nobody listens on: a plan that started would fail at the database step.
    env = {**backend_env, "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
           "REDIS_URL": "redis://127.0.0.1:9/0"}
    run = run_backend(["check", "--graph", "--profile", profile], env, tmp_path)
    assert run.returncode == 0, run.output
    header, columns, *lines = run.stdout.splitlines()
    plan = PROFILES[profile].plan
    assert header == f"profile {profile}: given {', '.join(plan.given)}"
    assert columns.split() == ["step", "policy", "needs", "provides"]
    rows = {row[0]: row[1:] for row in (re.split(r"\s{2,}", line.strip()) for line in lines)}
    assert list(rows) == [each.name for each in plan]
    assert rows["database"] == ["required", "settings, domain_registry", "db"]
    assert rows["embedded_services"] == ["required", "settings", "embedded, settings (updated)"]
    assert "pixsim7.startup" not in run.stderr and "startup database" not in run.output


def test_check_exits_nonzero_naming_the_failed_step(backend_services_env, tmp_path) -> None:
    env = {**backend_services_env, "ROUTE_PLUGINS_DIR": str(tmp_path / "missing")}
    run = run_backend(["check"], env, tmp_path)
    assert run.returncode == 1
    assert "startup failed at step 'settings'" in run.stderr
    assert "ROUTE_PLUGINS_DIR" in run.stderr


BROKEN_MIDDLEWARE = {
    "missing_folder": None,
    "manifest_missing_priority": 'id = "broken"\nname = "Broken"\nversion = "1.0.0"\n',
}


@pytest.mark.parametrize("command", [["check"], ["serve", "--port", "0"]])
@pytest.mark.parametrize("breakage", list(BROKEN_MIDDLEWARE))
def test_a_failure_while_the_app_is_built_is_reported_like_a_step_failure(
    command, breakage, backend_services_env, tmp_path
) -> None:
    middleware = tmp_path / "middleware"
    manifest = BROKEN_MIDDLEWARE[breakage]
    if manifest is not None:
        copy_bundled("middleware", middleware)
        write_plugin(middleware, "broken", "def build(settings):\n    return None\n",
                     manifest_text=manifest)
    run = run_backend(command, {**backend_services_env, "MIDDLEWARE_DIR": str(middleware)},
                      tmp_path)
    assert run.returncode == (1 if command[0] == "check" else SERVE_STARTUP_FAILED), run.output
    assert "Traceback" not in run.output
    assert "startup failed at step 'middleware'" in run.stderr
    table = [line.split() for line in run.stdout.splitlines()]
    assert table[0][:4] == ["phase", "step", "policy", "status"]
    assert table[1][:4] == ["build", "middleware", "required", "failed"]
    assert (str(middleware) if manifest is None else "priority") in run.stderr


def test_worker_reports_a_failed_step_with_the_step_table(backend_services_env,
                                                          tmp_path) -> None:
    env = {**backend_services_env, "DOMAIN_MODELS_DIR": str(tmp_path / "missing")}
    run = run_backend(["worker"], env, tmp_path)
    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output
    assert "startup failed at step 'settings'" in run.stderr
    assert ["startup", "settings", "required", "failed"] in [
        line.split()[:4] for line in run.stdout.splitlines()]


def test_serve_with_no_environment_is_ready_on_embedded_servers(backend_env, backend_processes,
                                                                data_dir) -> None:
    # backend_env carries no DATABASE_URL / REDIS_URL: the embedded default starts.
    server = backend_processes("serve", {**backend_env, "PIXSIM7_DATA_DIR": str(data_dir),
                                         "SHUTDOWN_DRAIN_SECONDS": "0"})
    body = server.wait_ready(timeout=30)
    assert body["status"] == "ready"
    assert "this run's admin token is" in server.output()
    assert server.stop() == 0
    assert server.output().count("this run's admin token is") == 1


@pytest.mark.slow
def test_worker_without_redis_at_startup_fails_at_the_redis_step(backend_services_env,
                                                                  tmp_path) -> None:
    from pixsim7.backend.main.infrastructure.adapters.embedded import free_port

    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    run = run_backend(["worker"], {**backend_services_env, "REDIS_URL": url}, tmp_path)
    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output
    assert "startup failed at step 'redis': ConnectionError" in run.stderr
    assert "secret" not in run.output


# --- the command line a newcomer meets ------------------------------------------------------


def test_help_describes_the_program_and_each_command_with_defaults_and_settings(
    backend_env, tmp_path
) -> None:
    top = run_backend(["--help"], backend_env, tmp_path)
    assert top.returncode == 0 and top.stdout.startswith("usage: pixsim7-backend")
    assert "serve the HTTP API, run a background worker, or check a startup" in top.stdout
    assert "`" not in top.stdout.split("\n\n")[1].split(".")[0]  # no stray docstring markup
    for command in ("serve", "worker", "check"):
        assert f"\n    {command} " in top.stdout  # each listed with a summary
    serve = run_backend(["serve", "--help"], backend_env, tmp_path).stdout
    assert "(default: 127.0.0.1)" in serve and "(default: 8000)" in serve
    assert "DATABASE_URL" in serve and "SECRET_KEY" in serve
    worker = run_backend(["worker", "--help"], backend_env, tmp_path).stdout
    assert "REDIS_URL" in worker and "required when DEBUG=false" in worker
    check = run_backend(["check", "--help"], backend_env, tmp_path).stdout
    assert "(default: api)" in check and "same sentence" in check


def test_global_options_work_after_the_command_too(backend_services_env, tmp_path) -> None:
    before = run_backend(["--log-level", "warning", "check"], backend_services_env, tmp_path)
    after = run_backend(["check", "--log-level", "warning"], backend_services_env, tmp_path)
    assert before.returncode == after.returncode == 0, after.output
    # At WARNING, no INFO line; both runs print the same step table.
    for run in (before, after):
        assert " INFO " not in run.stderr, run.stderr
    assert [line.split()[:4] for line in before.stdout.splitlines()] == [
        line.split()[:4] for line in after.stdout.splitlines()]


PRODUCTION = {"DEBUG": "false", "SECRET_KEY": "not-the-default-key",
              "ADMIN_TOKEN": "an-admin-token-for-tests"}


def test_check_refuses_the_worker_profile_exactly_where_worker_does(backend_services_env,
                                                                     tmp_path) -> None:
    env = {key: value for key, value in backend_services_env.items() if key != "REDIS_URL"}
    env.update(PRODUCTION)
    check = run_backend(["check", "--profile", "worker"], env, tmp_path)
    worker = run_backend(["worker"], env, tmp_path)
    assert (check.returncode, worker.returncode) == (1, 1), worker.output
    sentence = check.stderr.strip().splitlines()[-1]
    assert sentence == worker.stderr.strip().splitlines()[-1]
    assert sentence == ("startup failed at step 'settings': SettingsError: REDIS_URL is not set; "
                        "the worker takes its jobs from the Redis the API enqueues to: set "
                        "REDIS_URL, or DEBUG=true to use an embedded server")
    # The api profile needs no Redis: the same settings pass there.
    assert run_backend(["check"], env, tmp_path).returncode == 0


def test_a_failure_reads_as_one_sentence(backend_services_env, tmp_path) -> None:
    env = {**backend_services_env, "ROUTE_PLUGINS_DIR": str(tmp_path / "missing")}
    run = run_backend(["check"], env, tmp_path)
    # Beside the log records: the closing sentence, once, saying "failed" once.
    failures = [line for line in run.stderr.splitlines() if line.startswith("startup ")]
    assert len(failures) == 1 and failures[0].count("failed") == 1, run.stderr
    assert failures[0].startswith("startup failed at step 'settings': SettingsError: "
                                  "ROUTE_PLUGINS_DIR=")


@pytest.mark.slow(seconds=8)
async def test_serve_and_worker_share_the_embedded_servers_of_one_data_folder(
    backend_env, backend_processes, data_dir
) -> None:
    # Two terminals, nothing copied: the same PIXSIM7_DATA_DIR, no DATABASE_URL or REDIS_URL.
    env = {**backend_env, "PIXSIM7_DATA_DIR": str(data_dir), "SHUTDOWN_DRAIN_SECONDS": "0"}
    serve = backend_processes("serve", env)
    await asyncio.to_thread(serve.wait_ready, 60)
    worker = backend_processes("worker", env)
    await wait_until_async(lambda: worker.has_logged("worker ready"), timeout=60)
    state = json.loads((data_dir / "servers.json").read_text())
    assert set(state) == {"postgres", "redis"}
    assert sorted(state["redis"]["users"]) == sorted([serve.proc.pid, worker.proc.pid])
    # One PostgreSQL and one Redis: the worker started none of its own.
    assert "embedded Redis" not in worker.output() and "already runs" in worker.output()
    async with httpx.AsyncClient(base_url=serve.base_url) as client:
        queued = await client.post("/api/v1/jobs", json={"kind": "noop",
                                                         "payload": {"value": 7}})
        assert queued.status_code == 202, queued.text
        url = f"/api/v1/jobs/{queued.json()['id']}"

        async def finished() -> dict | None:
            body = (await client.get(url)).json()
            return body if body["status"] == "complete" else None

        assert (await wait_until_async(finished, timeout=20))["result"] == {"value": 7}
    # The API stops first: the servers stay up for the worker, which still answers.
    assert serve.stop() == 0
    assert shared_servers_listen(state)
    assert worker.proc.poll() is None
    # The last user stops them.
    assert worker.stop() == 0, worker.describe()
    assert not shared_servers_listen(state)
    assert json.loads((data_dir / "servers.json").read_text()) == {}


@pytest.mark.slow(seconds=6)
async def test_two_commands_started_at_once_on_one_data_folder_start_each_server_once(
    backend_env, backend_processes, data_dir
) -> None:
    env = {**backend_env, "PIXSIM7_DATA_DIR": str(data_dir), "SHUTDOWN_DRAIN_SECONDS": "0"}
    first, second = backend_processes("serve", env), backend_processes("serve", env)
    for serve in (first, second):
        assert (await asyncio.to_thread(serve.wait_ready, 60))["status"] == "ready"
    state = json.loads((data_dir / "servers.json").read_text())
    assert sorted(state["postgres"]["users"]) == sorted([first.proc.pid, second.proc.pid])
    # One of them started each server; the other found it running.
    outputs = first.output() + second.output()
    assert outputs.count("embedded PostgreSQL ") == 1, outputs
    assert outputs.count("embedded Redis ") == 1, outputs
    assert first.stop() == 0 and second.stop() == 0
    assert not shared_servers_listen(state)


def shared_servers_listen(state: dict) -> bool:
    from pixsim7.backend.main.infrastructure.adapters.shared_servers import _listening

    listening = [_listening(record["url"]) for record in state.values()]
    assert len(set(listening)) == 1, state  # both up or both down
    return listening[0]


@pytest.mark.template_db
def test_a_port_in_use_is_one_sentence_before_anything_starts(backend_services_env,
                                                              tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = run_backend(["serve", "--port", str(port)], backend_services_env, tmp_path)
    assert run.returncode == 3, run.output
    assert run.stderr.strip().splitlines()[-1] == (
        f"startup failed at step 'listen': PortUnavailable: cannot listen on 127.0.0.1:{port}: "
        "address already in use")
    assert "startup settings" not in run.output  # found before any step ran
    assert "Traceback" not in run.output


@pytest.mark.template_db
@pytest.mark.parametrize(("command", "code"), [("check", 1), ("serve", 3)])
def test_a_bad_setting_is_the_startup_failure_sentence_quoting_the_value_given(
    backend_services_env, tmp_path, command: str, code: int
) -> None:
    run = run_backend([command], {**backend_services_env, "LOG_LEVEL": "verbose"}, tmp_path)
    assert run.returncode == code, run.output
    assert run.stderr.strip() == (
        "startup failed at step 'settings': InvalidSettings: LOG_LEVEL: Input should be 'DEBUG',"
        " 'INFO', 'WARNING', 'ERROR' or 'CRITICAL' (got 'verbose')")


@pytest.mark.template_db
async def test_ctrl_c_stops_serve_quietly_with_exit_zero(backend_services_env,
                                                         backend_processes) -> None:
    serve = backend_processes("serve", {**backend_services_env, "SHUTDOWN_DRAIN_SECONDS": "0"})
    await asyncio.to_thread(serve.wait_ready, 60)
    assert serve.stop(signal.SIGINT) == 0, serve.describe()
    output = serve.output()
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-2000:]
    assert "shutdown database: ok" in " ".join(r["message"] for r in serve.records())


async def test_the_worker_makes_no_admin_token_and_says_which_servers_it_started_and_stopped(
    backend_env, backend_processes, data_dir
) -> None:
    env = {**backend_env, "PIXSIM7_DATA_DIR": str(data_dir), "SHUTDOWN_DRAIN_SECONDS": "0"}
    worker = backend_processes("worker", env)
    await wait_until_async(lambda: worker.has_logged("worker ready"), timeout=60)
    assert worker.stop() == 0, worker.describe()
    assert "admin token" not in worker.output().lower()
    embedded = [(r["phase"], r.get("started"), r.get("stopped")) for r in worker.records()
                if r.get("step") == "embedded_services" and r.get("status") == "ok"]
    assert embedded == [("startup", ["postgres", "redis"], None),
                        ("shutdown", None, ["redis", "postgres"])], worker.describe()
