"""`pixsim7-backend check` and `serve` as an operator runs them."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest

from pixsim7.backend.main.cli import SERVE_STARTUP_FAILED
from pixsim7.backend.main.startup import API_PLAN, PROFILES, WORKER_PLAN
from testing.plugins import copy_bundled, write_plugin
from testing.processes import run_backend

pytestmark = pytest.mark.integration


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


def test_serve_with_no_environment_is_ready_on_embedded_servers(backend_env,
                                                                backend_processes) -> None:
    # backend_env carries no DATABASE_URL / REDIS_URL: the embedded default starts.
    # Outside pytest's tmp tree: the unprivileged PostgreSQL user must traverse it.
    data_dir = Path(tempfile.mkdtemp(prefix="pixsim7-cli-"))
    try:
        server = backend_processes("serve", {**backend_env, "PIXSIM7_DATA_DIR": str(data_dir),
                                             "SHUTDOWN_DRAIN_SECONDS": "0"})
        body = server.wait_ready(timeout=30)
        assert body["status"] == "ready"
        assert "this run's admin token is" in server.output()
        assert server.stop() == 0
        assert server.output().count("this run's admin token is") == 1
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.slow
def test_worker_without_redis_at_startup_fails_at_the_redis_step(backend_services_env,
                                                                  tmp_path) -> None:
    from pixsim7.backend.main.infrastructure.embedded import free_port

    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    run = run_backend(["worker"], {**backend_services_env, "REDIS_URL": url}, tmp_path)
    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output
    assert "startup failed at step 'redis': ConnectionError" in run.stderr
    assert "secret" not in run.output
