"""PluginManager: discovery, dependency order, failure policy, routers and module isolation."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pixsim7_testing.plugins import write_plugin

from pixsim7.backend.main.infrastructure.discovery.manifests import ManifestFolderError
from pixsim7.backend.main.infrastructure.discovery.plugins import (
    BehaviorRegistry,
    PluginContext,
    PluginManager,
    PluginStartupError,
    plugin_logger,
)

RECORDING_HOOKS = """
def on_load(ctx):
    ctx.settings.log.append(("load", ctx.plugin_id))

def on_enable(ctx):
    ctx.settings.log.append(("enable", ctx.plugin_id))

def on_disable(ctx):
    ctx.settings.log.append(("disable", ctx.plugin_id))
"""

ROUTER = """
from fastapi import APIRouter

router = APIRouter()

@router.get("/ping")
def ping():
    return {"pong": True}
"""


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def factory(log: list[Any], app: FastAPI | None = None) -> Any:
    settings = SimpleNamespace(log=log)

    def build(plugin_id: str) -> PluginContext:
        return PluginContext(
            app=app,
            settings=settings,
            plugin_id=plugin_id,
            logger=plugin_logger(plugin_id),
            behavior_registry=BehaviorRegistry(),
        )

    return build


async def start(
    directory: Path, *, kind: str = "feature", fail_fast: bool = False, log: list | None = None
) -> tuple[PluginManager, FastAPI, list]:
    log = [] if log is None else log
    app = FastAPI()
    manager = PluginManager(kind, directory, fail_fast=fail_fast)
    manager.discover()
    await manager.load_all(factory(log, app))
    await manager.enable_all(app)
    return manager, app, log


async def test_dependency_order_is_topological_and_stable(tmp_path: Path) -> None:
    write_plugin(tmp_path, "a_mood", RECORDING_HOOKS, dependencies=["b_rel"])
    write_plugin(tmp_path, "b_rel", RECORDING_HOOKS)
    write_plugin(tmp_path, "c_extra", RECORDING_HOOKS)
    write_plugin(tmp_path, "d_top", RECORDING_HOOKS, dependencies=["a_mood", "c_extra"])
    manager, _, log = await start(tmp_path)
    order = ["b_rel", "a_mood", "c_extra", "d_top"]
    assert [pid for step, pid in log if step == "load"] == order
    assert [pid for step, pid in log if step == "enable"] == order
    assert list(manager.plugins) == order
    assert manager.enabled_ids() == order
    assert manager.failed_ids() == []

    await manager.disable_all()
    assert [pid for step, pid in log if step == "disable"] == list(reversed(order))
    assert all(s.status == "disabled" for s in manager.plugins.values())


async def test_cycle_fails_the_cycle_and_its_dependents(tmp_path: Path) -> None:
    write_plugin(tmp_path, "a", RECORDING_HOOKS, dependencies=["b"])
    write_plugin(tmp_path, "b", RECORDING_HOOKS, dependencies=["a"])
    write_plugin(tmp_path, "c", RECORDING_HOOKS, dependencies=["a"])
    write_plugin(tmp_path, "d", RECORDING_HOOKS)
    manager, _, log = await start(tmp_path)
    assert manager.enabled_ids() == ["d"]
    assert sorted(manager.failed_ids()) == ["a", "b", "c"]
    error = manager.get("a").error
    assert error.startswith("PluginDependencyError: dependency cycle")
    assert "a, b" in error
    assert manager.get("c").error == "PluginDependencyError: dependency 'a' failed"
    assert ("load", "a") not in log


async def test_required_plugin_in_cycle_stops_startup(tmp_path: Path) -> None:
    write_plugin(tmp_path, "a", dependencies=["a"], required=True)
    with pytest.raises(PluginStartupError) as info:
        await start(tmp_path)
    assert info.value.plugin_id == "a"
    assert "dependency cycle" in str(info.value)


async def test_missing_dependency_is_named(tmp_path: Path) -> None:
    write_plugin(tmp_path, "mood", RECORDING_HOOKS, dependencies=["relationships"])
    manager, _, log = await start(tmp_path)
    state = manager.get("mood")
    assert state.status == "failed"
    assert "'relationships', which is not installed" in state.error
    assert log == []


async def test_duplicate_id_names_both_folders(tmp_path: Path) -> None:
    write_plugin(tmp_path, "first", id="same")
    write_plugin(tmp_path, "second", id="same")
    manager, _, _ = await start(tmp_path)
    state = manager.get("same")
    assert state.status == "failed"
    assert state.error.startswith("PluginManifestError:")
    assert str(tmp_path / "first") in state.error
    assert str(tmp_path / "second") in state.error


async def test_broken_manifest_is_an_optional_failure_named_by_folder(tmp_path: Path) -> None:
    write_plugin(tmp_path, "broken", manifest_text="id = \n")
    write_plugin(tmp_path, "fine", RECORDING_HOOKS)
    manager, _, _ = await start(tmp_path)
    broken = manager.get("broken")
    assert broken.status == "failed" and broken.required is False
    assert str(tmp_path / "broken" / "manifest.toml") in broken.error
    assert manager.enabled_ids() == ["fine"]

    with pytest.raises(PluginStartupError) as info:
        PluginManager("feature", tmp_path, fail_fast=True).discover()
    assert info.value.plugin_id == "broken"
    assert str(tmp_path / "broken" / "manifest.toml") in str(info.value)


async def test_disabled_dependency_fails_dependents(tmp_path: Path) -> None:
    write_plugin(tmp_path, "base", RECORDING_HOOKS, enabled=False)
    write_plugin(tmp_path, "user", RECORDING_HOOKS, dependencies=["base"])
    manager, _, log = await start(tmp_path)
    assert manager.get("base").status == "disabled"
    assert manager.get("base").enabled_in_manifest is False
    assert "dependency 'base' is disabled" in manager.get("user").error
    assert log == []


@pytest.mark.parametrize(
    ("required", "fail_fast", "raises"),
    [(False, False, False), (False, True, True), (True, False, True), (True, True, True)],
)
async def test_import_error_policy(
    tmp_path: Path, required: bool, fail_fast: bool, raises: bool
) -> None:
    write_plugin(tmp_path, "a_broken", "import not_a_real_module_xyz\n", required=required)
    write_plugin(tmp_path, "b_fine", RECORDING_HOOKS)
    manager = PluginManager("feature", tmp_path, fail_fast=fail_fast)
    log: list = []
    if raises:
        with pytest.raises(PluginStartupError) as info:
            await manager.load_all(factory(log))
        message = str(info.value)
        assert "'a_broken'" in message
        assert str(tmp_path / "a_broken" / "manifest.toml") in message
        assert "ModuleNotFoundError" in message
        assert ("required" if required else "PLUGIN_FAIL_FAST") in message
    else:
        await manager.load_all(factory(log))
        assert log == [("load", "b_fine")]
    state = manager.get("a_broken")
    assert state.status == "failed"
    assert state.error.startswith("ModuleNotFoundError: No module named 'not_a_real_module_xyz'")
    assert manager.required_failed_ids() == (["a_broken"] if required else [])


@pytest.mark.parametrize(
    ("required", "fail_fast", "raises"),
    [(False, False, False), (False, True, True), (True, False, True)],
)
async def test_on_enable_error_policy_and_route_rollback(
    tmp_path: Path, required: bool, fail_fast: bool, raises: bool
) -> None:
    code = ROUTER + "\ndef on_enable(ctx):\n    raise ValueError('no backend for ' + ctx.plugin_id)"
    write_plugin(tmp_path, "a_bad", code, required=required)
    write_plugin(tmp_path, "b_good", ROUTER)
    app = FastAPI()
    manager = PluginManager("feature", tmp_path, fail_fast=fail_fast)
    await manager.load_all(factory([], app))
    if raises:
        with pytest.raises(PluginStartupError, match="ValueError: no backend for a_bad"):
            await manager.enable_all(app)
    else:
        await manager.enable_all(app)
        assert manager.enabled_ids() == ["b_good"]
    state = manager.get("a_bad")
    assert state.status == "failed"
    assert state.error == "ValueError: no backend for a_bad"
    assert state.routes == []
    async with client_for(app) as client:
        assert (await client.get("/api/v1/plugins/a_bad/ping")).status_code == 404
        expected = 404 if raises else 200
        assert (await client.get("/api/v1/plugins/b_good/ping")).status_code == expected


async def test_dependents_of_a_plugin_failing_at_enable_fail_too(tmp_path: Path) -> None:
    write_plugin(tmp_path, "base", "def on_enable(ctx):\n    raise RuntimeError('down')\n")
    write_plugin(tmp_path, "user", RECORDING_HOOKS, dependencies=["base"])
    manager, _, log = await start(tmp_path)
    assert manager.get("user").error == "PluginDependencyError: dependency 'base' failed"
    assert ("enable", "user") not in log


async def test_failing_on_disable_does_not_stop_the_others(tmp_path: Path) -> None:
    write_plugin(tmp_path, "a", RECORDING_HOOKS)
    write_plugin(tmp_path, "b", "def on_disable(ctx):\n    raise RuntimeError('stuck')\n")
    write_plugin(tmp_path, "c", RECORDING_HOOKS)
    manager, _, log = await start(tmp_path)
    await manager.disable_all()
    assert [pid for step, pid in log if step == "disable"] == ["c", "a"]
    assert manager.get("b").status == "disabled"
    assert manager.get("b").error == "RuntimeError: stuck"


async def test_async_hooks_and_relative_imports(tmp_path: Path) -> None:
    folder = write_plugin(
        tmp_path,
        "asyncy",
        """
        from .helpers import label

        async def on_load(ctx):
            ctx.settings.log.append(("load", label(ctx.plugin_id)))

        async def on_enable(ctx):
            ctx.settings.log.append(("enable", label(ctx.plugin_id)))
        """,
    )
    (folder / "helpers.py").write_text("def label(x):\n    return x.upper()\n")
    _, _, log = await start(tmp_path)
    assert log == [("load", "ASYNCY"), ("enable", "ASYNCY")]


async def test_router_prefixes(tmp_path: Path) -> None:
    feature_dir, route_dir = tmp_path / "features", tmp_path / "routes"
    write_plugin(feature_dir, "plain", ROUTER)
    write_plugin(feature_dir, "custom", ROUTER, prefix="/custom-place")
    write_plugin(route_dir, "things", ROUTER, kind="route", prefix="/things")
    write_plugin(route_dir, "bare", ROUTER, kind="route")
    app = FastAPI()
    features = PluginManager("feature", feature_dir, fail_fast=True)
    routes = PluginManager("route", route_dir, fail_fast=True)
    for manager in (features, routes):
        await manager.load_all(factory([], app))
        await manager.enable_all(app)
    async with client_for(app) as client:
        for path in (
            "/api/v1/plugins/plain/ping",
            "/api/v1/custom-place/ping",
            "/api/v1/things/ping",
            "/api/v1/ping",
        ):
            assert (await client.get(path)).json() == {"pong": True}, path
    assert features.get("plain").routes == ["GET /api/v1/plugins/plain/ping"]
    assert routes.get("things").routes == ["GET /api/v1/things/ping"]


async def test_router_must_be_an_api_router(tmp_path: Path) -> None:
    write_plugin(tmp_path, "odd", "router = 'not a router'\n")
    manager, _, _ = await start(tmp_path)
    assert "module attribute 'router' is a str" in manager.get("odd").error


async def test_wrong_kind_folder_is_reported(tmp_path: Path) -> None:
    write_plugin(tmp_path, "feat", kind="feature")
    manager, _, _ = await start(tmp_path, kind="route")
    assert "field 'kind'" in manager.get("feat").error


async def test_two_managers_do_not_share_module_state(tmp_path: Path) -> None:
    write_plugin(
        tmp_path,
        "counter",
        """
        calls = 0

        def on_load(ctx):
            global calls
            calls += 1
            ctx.settings.log.append(calls)
        """,
    )
    first, _, first_log = await start(tmp_path)
    second, _, second_log = await start(tmp_path)
    assert first_log == [1]
    assert second_log == [1]
    assert first.module("counter") is not second.module("counter")
    assert first.module("counter").__name__ != second.module("counter").__name__


async def test_summary_is_json_and_deterministic(tmp_path: Path) -> None:
    write_plugin(tmp_path, "good", RECORDING_HOOKS, version="2.0.0")
    write_plugin(tmp_path, "bad", "raise RuntimeError('boom')\n")
    first, _, _ = await start(tmp_path)
    second, _, _ = await start(tmp_path)
    assert json.dumps(first.summary(), sort_keys=True) == json.dumps(
        second.summary(), sort_keys=True
    )
    summary = first.summary()
    assert summary["kind"] == "feature"
    entries = {p["id"]: p for p in summary["plugins"]}
    assert entries["good"]["status"] == "enabled"
    assert entries["good"]["version"] == "2.0.0"
    assert entries["bad"]["status"] == "failed"
    assert entries["bad"]["error"] == "RuntimeError: boom"
    assert entries["bad"]["required"] is False


async def test_missing_directory_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ManifestFolderError, match="ROUTE_PLUGINS_DIR"):
        PluginManager("route", tmp_path / "absent", fail_fast=False).discover()


async def test_context_lookup(tmp_path: Path) -> None:
    write_plugin(tmp_path, "one", RECORDING_HOOKS)
    manager, _, _ = await start(tmp_path)
    ctx = manager.context("one")
    assert ctx.plugin_id == "one"
    assert ctx.logger.name == "pixsim7.plugins.one"
    with pytest.raises(LookupError, match="'nope'"):
        manager.context("nope")
