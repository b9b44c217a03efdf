"""The startup and shutdown as Chrome Trace Event JSON, from `check --trace`, from `serve`, from
the admin API and from the kit: each read back and checked as a trace viewer reads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pixsim7_testing.apps import started
from pixsim7_testing.processes import run_backend

from pixsim7.backend.main.startup import API_PLAN
from tests.kit.test_isolation import run_inner

pytestmark = pytest.mark.integration

API_STEPS = [step.name for step in API_PLAN]
# Torn down in reverse: the steps with a teardown, but the embedded servers (skipped: the
# test's servers are given).
TEARDOWNS = [step.name for step in reversed(API_PLAN)
             if step.teardown is not None and step.name != "embedded_services"]


def checked_trace(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The complete events by phase (track), after checking what a trace viewer needs."""
    events = data["traceEvents"]
    assert data["displayTimeUnit"] == "ms"
    names = {e["tid"]: e["args"]["name"] for e in events
             if e["ph"] == "M" and e["name"] == "thread_name"}
    complete = [e for e in events if e["ph"] == "X"]
    instants = [e for e in events if e["ph"] == "i"]
    assert len(instants) == len(complete)  # one milestone per step record
    for event in complete:
        assert {"name", "cat", "pid", "tid", "ts", "dur", "args"} <= set(event)
        assert event["ts"] >= 0 and event["dur"] >= 0
        assert {"policy", "status"} <= set(event["args"])
        assert names[event["tid"]] == event["cat"]
    by_phase: dict[str, list[dict[str, Any]]] = {}
    for event in complete:  # in the order they were recorded
        by_phase.setdefault(event["cat"], []).append(event)
    return by_phase


def test_check_writes_one_complete_event_per_step_and_milestone_instants(
    backend_services_env, tmp_path: Path
) -> None:
    trace = tmp_path / "traces" / "check.json"
    run = run_backend(["check", "--trace", str(trace)], backend_services_env, tmp_path)
    assert run.returncode == 0, run.output
    phases = checked_trace(json.loads(trace.read_text()))
    assert [e["name"] for e in phases["build"]] == ["middleware"]
    assert [e["name"] for e in phases["startup"] if e["name"] != "complete"] == API_STEPS
    assert [e["name"] for e in phases["shutdown"]] == TEARDOWNS
    plugins = next(e for e in phases["startup"] if e["name"] == "plugins")
    assert plugins["args"]["policy"] == "per_plugin" and plugins["args"]["enabled"] >= 1
    complete = next(e for e in phases["startup"] if e["name"] == "complete")
    assert all(e["ts"] >= complete["ts"] for e in phases["startup"])  # it spans the steps


def test_serve_writes_its_trace_when_it_stops(backend_processes, backend_services_env,
                                              tmp_path: Path) -> None:
    trace = tmp_path / "serve-trace.json"
    serve = backend_processes("serve", {**backend_services_env,
                                        "STARTUP_TRACE_FILE": str(trace)})
    serve.wait_ready()
    assert serve.stop() == 0, serve.describe()
    phases = checked_trace(json.loads(trace.read_text()))
    assert [e["name"] for e in phases["shutdown"]] == TEARDOWNS
    assert {e["args"]["status"] for e in phases["startup"]} == {"ok", "skipped"}


@pytest.mark.template_db
def test_serve_replaces_a_link_planted_at_its_trace_path_instead_of_following_it(
    backend_processes, backend_services_env, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("not yours")
    victim.chmod(0o600)
    trace = tmp_path / "shared" / "trace.json"
    trace.parent.mkdir()
    trace.symlink_to(victim)  # planted in a folder others can write to
    serve = backend_processes("serve", {**backend_services_env,
                                        "STARTUP_TRACE_FILE": str(trace)})
    serve.wait_ready()
    assert serve.stop() == 0, serve.describe()
    assert victim.read_text() == "not yours"
    assert not trace.is_symlink() and (trace.stat().st_mode & 0o077) == 0
    assert checked_trace(json.loads(trace.read_text()))["shutdown"]


@pytest.mark.template_db
@pytest.mark.parametrize("where", ["folder", "under_a_file", "proc"])
def test_a_trace_path_that_cannot_be_written_stops_serve_at_startup_in_one_sentence(
    backend_env, backend_services_env, tmp_path: Path, where: str
) -> None:
    (tmp_path / "a-file").write_text("")
    path = {"folder": tmp_path, "under_a_file": tmp_path / "a-file" / "trace.json",
            "proc": Path("/proc/self/trace.json")}[where]
    run = run_backend(["serve", "--port", "0"], {**backend_services_env,
                                                 "STARTUP_TRACE_FILE": str(path)}, tmp_path)
    assert run.returncode == 3, run.output
    assert "Traceback" not in run.output
    assert "startup failed at step 'settings': SettingsError: STARTUP_TRACE_FILE: " in (
        run.stderr), run.output
    assert str(path) in run.stderr
    # check --trace says the same of the same path, before starting anything.
    check = run_backend(["check", "--trace", str(path)], backend_env, tmp_path)
    assert check.returncode == 2, check.output
    assert check.stderr.startswith("check --trace: ") and "Traceback" not in check.output
    assert check.stdout == ""


@pytest.mark.rollback_db
async def test_the_admin_startup_endpoint_gives_the_trace(app_factory) -> None:
    running = await started(app_factory)
    answer = await running.get("/api/v1/admin/startup", params={"format": "trace"},
                               headers={"Authorization": "Bearer kit-admin-token"})
    assert answer.status_code == 200, answer.text
    phases = checked_trace(answer.json())
    assert [(e["name"], e["args"]["status"]) for e in phases["startup"]] == \
        running.recorder.steps("startup")


KIT_TESTS = '''
async def test_passes(app_factory):
    assert (await app_factory()).started

async def test_fails(app_factory):
    assert (await app_factory()).started
    assert False, "on purpose"
'''


def test_the_kit_writes_each_test_s_traces_and_a_failed_test_s_by_itself(
    tmp_path: Path, kit_services
) -> None:
    asked = tmp_path / "asked"
    for folder in ("with-option", "without"):
        (tmp_path / folder).mkdir()
    result = run_inner(tmp_path / "with-option", kit_services, KIT_TESTS,
                       "--startup-trace", str(asked))
    assert result.returncode == 1 and "1 failed, 1 passed" in result.stdout, result.stdout
    written = sorted(path.name for path in asked.iterdir())
    assert written == ["test_inner.py__test_fails.html", "test_inner.py__test_fails.trace.json",
                       "test_inner.py__test_passes.html",
                       "test_inner.py__test_passes.trace.json"], written
    for path in asked.glob("*.trace.json"):
        assert "startup" in checked_trace(json.loads(path.read_text()))
    for path in asked.glob("*.html"):  # the page beside each trace
        assert 'data-step="plugins" data-status="ok"' in path.read_text()

    result = run_inner(tmp_path / "without", kit_services, KIT_TESTS)
    assert result.returncode == 1, result.stdout
    section = result.stdout.split("pixsim7 startup trace", 1)[1].strip().splitlines()[1]
    path = Path(section.split(" (open it in", 1)[0].strip())
    assert path.name == "test_inner.py__test_fails.trace.json" and path.is_file(), section
    assert "shutdown" not in checked_trace(json.loads(path.read_text()))  # as it failed
    lines = result.stdout.split("pixsim7 startup trace", 1)[1].strip().splitlines()
    page = Path(lines[2].split(" (open it in", 1)[0].strip())
    assert page.name == "test_inner.py__test_fails.html" and "offline" in lines[2]
    assert 'data-phase="startup"' in page.read_text()
