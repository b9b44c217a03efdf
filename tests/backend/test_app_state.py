"""One declaration of per-app state (`state.RESOURCES`): what a started app holds, who writes
each key, the typed dependencies and the plugin context made from it."""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

import pytest
from fastapi import Depends, FastAPI
from pixsim7_testing.apps import started
from redis.asyncio import Redis

import pixsim7.backend.main as package
from pixsim7.backend.main.api.deps import resource
from pixsim7.backend.main.infrastructure.adapters.redis import RedisStatus
from pixsim7.backend.main.infrastructure.discovery.plugins.context import PluginContext
from pixsim7.backend.main.main import create_app
from pixsim7.backend.main.startup import PROFILES
from pixsim7.backend.main.state import RESOURCES, AppState, state_of

PACKAGE = Path(package.__file__).parent


@pytest.mark.template_db
@pytest.mark.parametrize("profile", ["api", "worker"])
async def test_a_started_app_holds_only_declared_keys(app_factory, app_settings, profile) -> None:
    running = await app_factory(app_settings,
                                factory=lambda settings: create_app(settings, profile=profile))
    assert running.started, running.startup_error
    held = set(vars(running.app.state)["_state"])
    assert held <= set(RESOURCES) - {"app"}, sorted(held - set(RESOURCES))
    # And every declared key but the HTTP-only middleware manager is there once started.
    http_only = {"middleware_manager", "routes_manager"}  # the worker serves no HTTP
    expected = set(RESOURCES) - {"app"} - (http_only if profile == "worker" else set())
    assert held == expected, sorted(expected ^ held)


def _writes() -> dict[str, set[str]]:
    """Each `app.state` key the package's source assigns, and the modules that do."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = path.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".")
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Attribute)
                        and target.value.attr == "state"):
                    found.setdefault(target.attr, set()).add(module)
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr"
                    and isinstance(node.args[0], ast.Attribute) and node.args[0].attr == "state"):
                key = node.args[1]
                name = key.value if isinstance(key, ast.Constant) else "<step results>"
                found.setdefault(name, set()).add(module)
    return found


def test_each_key_has_the_one_writer_the_table_names() -> None:
    writes = _writes()
    # The runner publishes every step's results under their names (one generic setattr).
    assert writes.pop("<step results>") == {"startup.runner"}
    for key, modules in writes.items():
        assert key in RESOURCES, f"{sorted(modules)} write app.state.{key}, which is not declared"
        writer = RESOURCES[key].writer
        assert len(modules) == 1, f"app.state.{key} has writers {sorted(modules)}"
        module = next(iter(modules))
        assert writer.startswith(module) or writer.startswith(f"{module}."), (key, writer, module)
    steps = {provided: step.name for profile in PROFILES.values()
             for step in profile.plan.steps for provided in step.provides}
    for key, declared in RESOURCES.items():
        if declared.writer.startswith("step:"):
            assert steps.get(key) == declared.writer.removeprefix("step:"), key


def test_routes_api_and_plugins_read_app_state_through_the_table() -> None:
    direct = []
    for room in ("routes", "api", "plugins"):
        for path in (PACKAGE / room).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr == "state" and (
                        isinstance(node.value, ast.Attribute) and node.value.attr == "app"
                        or isinstance(node.value, ast.Name) and node.value.id == "app"):
                    direct.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert len(direct) <= 5, direct
    assert [place.split(":")[0] for place in direct] == ["api/deps.py"], direct  # deps' one read


def test_the_plugin_context_has_the_types_the_table_declares() -> None:
    hints = typing.get_type_hints(PluginContext)
    for field in dataclasses.fields(PluginContext):
        if field.name not in RESOURCES:
            continue
        declared = RESOURCES[field.name].type
        if field.name == "redis":  # the client of the declared RedisStatus
            declared = typing.get_type_hints(RedisStatus)["client"]
            assert declared == Redis | None
        if field.name == "app":
            declared = FastAPI
        assert hints[field.name] in (declared | None, declared), field.name


def test_the_typed_view_declares_what_the_table_does() -> None:
    # AppState is the table's twin for editors: the same keys, each with the table's type
    # (or None while unset).
    hints = typing.get_type_hints(AppState)
    assert set(hints) == set(RESOURCES) - {"app"}
    for key, hint in hints.items():
        declared = RESOURCES[key].type
        assert hint in (declared, declared | None), (key, hint, declared)


@pytest.mark.template_db
async def test_a_route_whose_resource_is_absent_answers_503_with_retry_after(app_factory) -> None:
    running = await started(app_factory)
    del vars(running.app.state)["_state"]["providers"]  # as if its step had not run
    response = await running.get("/api/v1/providers")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "the app has no providers" in response.json()["detail"]


def test_a_dependency_on_an_undeclared_key_fails_when_declared() -> None:
    with pytest.raises(KeyError, match="'dbb' is not a key of app.state"):
        resource("dbb")


def test_the_state_view_reads_declared_keys_and_refuses_the_rest() -> None:
    app = FastAPI()
    app.state.profile = "api"
    view = state_of(app)
    assert view.profile == "api" and view.db is None
    with pytest.raises(AttributeError, match="no declared key 'dbb'"):
        view.dbb  # noqa: B018
    with pytest.raises(AttributeError, match="one writer"):
        view.db = None


FORMER_PATHS = {  # each former path under infrastructure, and where it lives now
    "database": "adapters.database",
    "database.base": "adapters.database.base",
    "redis": "adapters.redis",
    "embedded": "adapters.embedded",
    "shared_servers": "adapters.shared_servers",
    "arq_adapter": "adapters.arq_adapter",
    "job_codec": "adapters.job_codec",
    "events": "registries.events",
    "events.bus": "registries.events.bus",
    "events.handlers": "registries.events.handlers",
    "ecs": "registries.ecs",
    "providers": "registries.providers",
    "jobs": "registries.jobs",
    "plugins.behavior_registry": "registries.behavior_registry",
    "manifests": "discovery.manifests",
    "folder_manager": "discovery.folder_manager",
    "package_loader": "discovery.package_loader",
    "domain_registry": "discovery.domain_registry",
    "plugins": "discovery.plugins",
    "plugins.contents": "discovery.plugins.contents",
    "plugins.context": "discovery.plugins.context",
    "plugins.dependencies": "discovery.plugins.dependencies",
    "plugins.manager": "discovery.plugins.manager",
    "plugins.manifest": "discovery.plugins.manifest",
    "middleware": "discovery.middleware",
    "middleware.manager": "discovery.middleware.manager",
}


@pytest.mark.parametrize(("old", "now"), FORMER_PATHS.items())
def test_a_former_infrastructure_path_imports_the_module_that_moved(old: str, now: str) -> None:
    import importlib

    base = "pixsim7.backend.main.infrastructure"
    assert importlib.import_module(f"{base}.{old}") is importlib.import_module(f"{base}.{now}")


LiveRedis = typing.Annotated[RedisStatus, Depends(resource(
    "redis", up=lambda status: status.available, detail="Redis is down"))]


async def test_a_resource_that_is_down_answers_503_with_retry_after() -> None:
    import httpx

    app = FastAPI()
    app.state.redis = RedisStatus(client=None, available=False)

    @app.get("/needs-redis")
    async def needs_redis(redis: LiveRedis) -> dict:
        return {"available": redis.available}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        down = await client.get("/needs-redis")
        app.state.redis = RedisStatus(client=None, available=True)
        up = await client.get("/needs-redis")
    assert (down.status_code, down.headers["retry-after"], down.json()["detail"]) == (
        503, "1", "Redis is down")
    assert (up.status_code, up.json()) == (200, {"available": True})
