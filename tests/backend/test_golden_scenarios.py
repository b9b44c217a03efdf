"""The eleven golden startup scenarios: milestones, app.state inventory and health payloads.

Each scenario is one JSON snapshot under __snapshots__/ with its milestones, its probes and the
part of the inventory it is about; the full inventory, settings included, is pinned once, by
the full startup. A changed snapshot is a reviewed change in startup behaviour: refresh with
`pytest --snapshot-update` and say why in the commit.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from arq.worker import Worker, func
from pixsim7_testing.milestones import record_milestones
from pixsim7_testing.plugins import bundled_with_plugin
from pixsim7_testing.snapshots import subtrees

from pixsim7.backend.main.infrastructure.registries import jobs
from pixsim7.backend.main.main import create_app
from pixsim7.backend.main.shared.config import DISCOVERY_DIRS as DIRECTORIES
from pixsim7.backend.main.shared.config import PACKAGE_DIR
from pixsim7.backend.main.startup import StartupAborted
from pixsim7.backend.main.worker import worker_settings

pytestmark = pytest.mark.integration


def plugin_dir_with(tmp_path: Path, plugin_id: str, *, required: bool, body: str) -> Path:
    """A copy of the bundled feature plugins plus one extra plugin."""
    return bundled_with_plugin(tmp_path / "feature_plugins", "plugins", plugin_id, body,
                               name=plugin_id, version="0.1.0", required=required)


FAILING_ON_LOAD = """
    def on_load(ctx):
        raise RuntimeError("weather service unavailable")
"""


async def test_01_full_startup(app_factory, snapshot_json) -> None:
    running = await app_factory()
    assert running.started, running.startup_error
    data = await running.story()
    ready = data["probes"]["/ready"]
    assert (ready["status"], ready["body"]["status"]) == (200, "ready")
    assert data == snapshot_json


async def test_02_redis_unreachable_at_startup(app_factory, make_settings, fault_proxy,
                                               snapshot_json) -> None:
    redis_proxy = fault_proxy("redis")
    redis_proxy.cut()
    running = await app_factory(make_settings(redis_proxy=redis_proxy, redis_connect_timeout=0.5))
    assert running.started, running.startup_error
    data = await running.story()
    ready = data["probes"]["/ready"]
    assert ready["status"] == 200
    assert (ready["body"]["status"], ready["body"]["redis"]) == ("degraded", "disconnected")
    assert data["inventory"]["redis"]["summary"]["available"] is False
    assert data == snapshot_json(include=subtrees("probes", "milestones", "inventory.redis"))


async def test_03_database_unreachable_at_startup(app_factory, make_settings, fault_proxy,
                                                  snapshot_json) -> None:
    db_proxy = fault_proxy("postgres")
    db_proxy.cut()
    running = await app_factory(make_settings(database_proxy=db_proxy,
                                              database_connect_timeout=0.5))
    assert isinstance(running.startup_error, StartupAborted)
    assert running.startup_error.step == "database"
    data = await running.story()
    shutdown = [m["step"] for m in data["milestones"] if m["phase"] == "shutdown"]
    # What had started is torn down: nothing here (the embedded servers were skipped).
    assert shutdown == []
    assert data == snapshot_json


async def test_04_optional_plugin_fails_in_production(app_factory, make_settings, tmp_path,
                                                      snapshot_json) -> None:
    plugins = plugin_dir_with(tmp_path, "weather", required=False, body=FAILING_ON_LOAD)
    settings = make_settings(debug=False, secret_key="production-secret",
                             plugin_fail_fast=False, feature_plugins_dir=plugins)
    running = await app_factory(settings)
    assert running.started, running.startup_error
    data = await running.story()
    ready = data["probes"]["/ready"]
    assert ready["status"] == 200 and ready["body"]["status"] == "degraded"
    assert ready["body"]["plugins"]["failed"] == ["weather"]
    assert data == snapshot_json(include=subtrees("probes", "milestones",
                                                  "inventory.plugin_manager"))


async def test_05_required_plugin_fails(app_factory, make_settings, tmp_path,
                                        snapshot_json) -> None:
    plugins = plugin_dir_with(tmp_path, "weather", required=True, body=FAILING_ON_LOAD)
    running = await app_factory(make_settings(debug=False, secret_key="production-secret",
                                              plugin_fail_fast=False,
                                              feature_plugins_dir=plugins))
    assert isinstance(running.startup_error, StartupAborted)
    assert running.startup_error.step == "plugins"
    assert "weather" in str(running.startup_error)
    assert await running.story() == snapshot_json


async def test_06_optional_plugin_fails_with_fail_fast(app_factory, make_settings, tmp_path,
                                                       snapshot_json) -> None:
    plugins = plugin_dir_with(tmp_path, "weather", required=False, body=FAILING_ON_LOAD)
    running = await app_factory(make_settings(plugin_fail_fast=True,
                                              feature_plugins_dir=plugins))
    assert isinstance(running.startup_error, StartupAborted)
    assert running.startup_error.step == "plugins"
    assert await running.story() == snapshot_json


async def test_07_database_lost_after_startup_then_restored(app_factory, make_settings,
                                                            fault_proxy, snapshot_json) -> None:
    db_proxy = fault_proxy("postgres")
    running = await app_factory(make_settings(database_proxy=db_proxy, ready_cache_ttl=0))
    assert running.started, running.startup_error
    phases = {"before": await running.probe(["/ready"])}
    db_proxy.cut()
    phases["lost"] = await running.probe(["/", "/ready", "/health"])
    db_proxy.restore()
    phases["restored"] = await running.probe(["/ready"])
    assert phases["lost"]["/ready"]["status"] == 503
    assert phases["lost"]["/ready"]["body"]["status"] == "unavailable"
    assert phases["lost"]["/"]["status"] == 200
    assert phases["restored"]["/ready"]["status"] == 200
    data = await running.story(probe_paths=None)
    assert {"phases": phases, **data} == snapshot_json(include=subtrees(
        "phases", "milestones", "inventory.db"))


async def test_08_worker_profile(app_factory, app_settings, snapshot_json) -> None:
    running = await app_factory(app_settings,
                                factory=lambda settings: create_app(settings, profile="worker"))
    assert running.started, running.startup_error
    data = await running.story(probe_paths=None)
    steps = [m["step"] for m in data["milestones"] if m["phase"] == "startup"]
    # Feature plugins load (their job kinds run here); nothing that serves HTTP does.
    assert "plugins" in steps and "middleware_lifecycle" not in steps and "redis" in steps
    # Which keys the worker's app.state has, and their types; the summaries are the full
    # startup's business.
    assert data == snapshot_json(include=subtrees("milestones", "inventory.*.type",
                                                  "inventory.profile"))


async def test_09_directories_moved_by_environment(app_factory, make_settings, tmp_path,
                                                   monkeypatch, snapshot_json) -> None:
    moved = tmp_path / "deploy"
    for source, name in (("plugins", "FEATURE_PLUGINS_DIR"), ("routes", "ROUTE_PLUGINS_DIR"),
                         ("middleware", "MIDDLEWARE_DIR")):
        shutil.copytree(PACKAGE_DIR / source, moved / source)
        monkeypatch.setenv(name, str(moved / source))
    shutil.rmtree(moved / "plugins" / "game_stealth")  # this deployment leaves one out
    running = await app_factory(make_settings())
    assert running.started, running.startup_error
    data = await running.story()
    settings = data["inventory"]["settings"]["summary"]
    assert settings["feature_plugins_dir"] == "<tmp_path>/deploy/plugins"
    assert settings["middleware_dir"] == "<tmp_path>/deploy/middleware"
    assert data == snapshot_json(include=subtrees(
        "probes", "milestones", *(f"inventory.settings.summary.{name}" for name in DIRECTORIES),
        "inventory.plugin_manager", "inventory.routes_manager", "inventory.middleware_manager"))


async def test_10_shutdown_order(app_factory, snapshot_json) -> None:
    running = await app_factory()
    assert running.started, running.startup_error
    await running.stop()
    startup = [m["step"] for m in running.milestones if m["phase"] == "startup"]
    shutdown = [m["step"] for m in running.milestones if m["phase"] == "shutdown"]
    with_teardown = [s for s in startup if s in shutdown]
    assert shutdown == list(reversed(with_teardown))
    assert shutdown == snapshot_json



async def test_11_worker_plan_inside_arq(app_settings, redis_namespace, snapshot_json) -> None:
    options = worker_settings(app_settings)
    events: list[str] = []  # arq's hooks with the milestones logged inside each, in order

    def traced(name: str, hook: Callable[[dict], Awaitable[None]]) -> Callable:
        async def run(ctx: dict) -> None:
            events.append(f"arq {name} begins")
            before = len(recorder.records)
            await hook(ctx)
            events.extend(f"  {m['phase']} {m['step']} {m['status']}"
                          for m in recorder.records[before:])
            events.append(f"arq {name} done")
        return run

    async def job_context(ctx: dict) -> dict:
        # What a job sees: arq's keys, the worker's app and its state, started.
        return {"ctx": sorted(key for key in ctx if key != "score"),
                "state": sorted(vars(ctx["app"].state)["_state"]),
                "lifecycle": ctx["state"].lifecycle}

    worker = Worker(**{**options,
                       "functions": [*options["functions"], func(job_context, name="context")],
                       "on_startup": traced("on_startup", options["on_startup"]),
                       "on_shutdown": traced("on_shutdown", options["on_shutdown"])},
                    burst=True, handle_signals=False)
    # arq's job and result keys are not under the key prefix, and a result outlives the test
    # on a shared Redis: a fixed id would find the last run's result and never run.
    job_id = f"golden-context-{uuid.uuid4().hex}"
    client = redis_namespace.client()
    try:
        queue = jobs.arq_client(client, redis_namespace.prefix)
        await queue.enqueue_job("context", _job_id=job_id)
        # A kind a feature plugin declares (mood.evaluate): it runs in the same worker.
        plugin_job = await jobs.enqueue(client, redis_namespace.prefix, "mood.evaluate",
                                        {"mood": "calm", "affinity": {"bo": 1.0},
                                         "target_id": "bo", "threshold": 0.5})
        with record_milestones() as recorder:
            await worker.async_run()
            events.append(f"arq burst done: {worker.jobs_complete} jobs complete")
            await worker.close()
        ran = await jobs.job_state(client, redis_namespace.prefix, job_id)
        plugin_ran = await jobs.job_state(client, redis_namespace.prefix, plugin_job)
    finally:
        await client.aclose()
    assert ran.pop("id") == job_id and plugin_ran.pop("id") == plugin_job
    assert {"events": events, "job": ran, "plugin_job": plugin_ran} == snapshot_json()
