"""The plugin folders shipped in the package load and enable against a real FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from pixsim7.backend.main.core_jobs import job_registry
from pixsim7.backend.main.infrastructure.discovery.plugins import (
    BehaviorRegistry,
    PluginManager,
    context_factory_from_app,
    get_plugin_context,
)
from pixsim7.backend.main.infrastructure.registries.ecs import ComponentRegistry
from pixsim7.backend.main.infrastructure.registries.providers import (
    ProviderRegistry,
    default_providers,
)
from pixsim7.backend.main.shared.config import Settings


@pytest.fixture
async def started() -> AsyncIterator[tuple[FastAPI, PluginManager, PluginManager]]:
    settings = Settings(_env_file=None)
    app = FastAPI()
    app.state.settings = settings
    app.state.behavior_registry = BehaviorRegistry()
    app.state.ecs_registry = ComponentRegistry()
    app.state.providers = ProviderRegistry(default_providers())
    app.state.job_registry = job_registry()
    features = PluginManager("feature", settings.feature_plugins_dir, fail_fast=True)
    routes = PluginManager("route", settings.route_plugins_dir, fail_fast=True)
    app.state.plugin_manager, app.state.routes_manager = features, routes  # as the plugins step
    contexts = context_factory_from_app(app)
    for manager in (routes, features):
        await manager.load_all(contexts)
    app.state.behavior_registry.lock()
    for manager in (routes, features):
        await manager.enable_all(app, app.state.job_registry)
    yield app, features, routes
    await features.disable_all()
    await routes.disable_all()


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_all_bundled_plugins_enable(started) -> None:
    app, features, routes = started
    assert features.failed_ids() == [] and routes.failed_ids() == []
    assert features.enabled_ids() == ["game_stealth", "relationships", "mood"]
    assert routes.enabled_ids() == ["jobs", "presets", "providers"]
    assert all(state.required for state in routes.plugins.values())
    assert not any(state.required for state in features.plugins.values())
    assert routes.get("presets").routes == ["GET /api/v1/presets", "POST /api/v1/presets"]
    # mood's manifest declares one job kind; enabling the plugin registered it beside the core's.
    assert features.get("mood").jobs == ["mood.evaluate"]
    assert app.state.job_registry.summary()["kinds"] == {
        "mood.evaluate": "mood", "noop": "core", "presets.import": "core"}

    behaviors = app.state.behavior_registry.summary()
    assert behaviors["conditions"]["ids"] == ["friendly_mood", "relationship_above"]
    assert behaviors["effects"]["ids"] == ["hide"]
    assert behaviors["simulation_configs"]["ids"] == ["stealth_defaults"]
    assert app.state.ecs_registry.get("affinity").owner == "relationships"


async def test_bundled_behaviors_work(started) -> None:
    app, _, _ = started
    registry = app.state.behavior_registry
    assert registry.condition("relationship_above")({"npc_1": 0.6}, "npc_1", 0.5) is True
    assert registry.condition("friendly_mood")("happy", {"npc_1": 0.2}, "npc_1") is True
    assert registry.condition("friendly_mood")("angry", {"npc_1": 0.9}, "npc_1") is False
    entity: dict = {}
    registry.effect("hide")(entity)
    assert entity == {"hidden": True, "hidden_ticks_left": 30}
    assert registry.simulation_config("stealth_defaults")["detection_radius"] == 6.0


async def test_bundled_routes_answer(started) -> None:
    app, _, _ = started
    async with client_for(app) as client:
        providers = await client.get("/api/v1/providers")
        relationships = await client.get("/api/v1/plugins/relationships/")
        presets = await client.get("/api/v1/presets")
        unknown = await client.post(
            "/api/v1/presets",
            json={"name": "x", "provider_id": "nope", "operation": "text_to_video"},
        )
    assert providers.status_code == 200
    assert [p["id"] for p in providers.json()] == ["pixverse", "runway", "sora"]
    assert providers.json()[2] == {"id": "sora", "name": "Sora", "operations": ["text_to_video"]}
    assert relationships.json() == {
        "plugin": "relationships",
        "conditions": ["relationship_above"],
        "components": ["affinity"],
    }
    # No database on this app: the presets API says which service is missing, and when to
    # try again, before it looks at the body (an unknown provider on a real database is 422:
    # tests/hardening/test_admin_surface.py).
    for answer in (presets, unknown):
        assert answer.status_code == 503
        assert "the app has no db" in answer.json()["detail"]
        assert answer.headers["retry-after"] == "1"


async def test_plugin_context_lookup(started) -> None:
    app, _, _ = started
    request = type("FakeRequest", (), {"app": app})()
    assert get_plugin_context(request, "mood").plugin_id == "mood"
    assert get_plugin_context(request, "presets").plugin_id == "presets"
    with pytest.raises(LookupError, match="'ghost'"):
        get_plugin_context(request, "ghost")


@pytest.mark.filterwarnings("ignore:the module-level .* is deprecated:DeprecationWarning")
async def test_legacy_names_forward_to_the_running_app(started) -> None:
    from pixsim7.backend.main.infrastructure.discovery.plugins.dependencies import (
        plugin_manager,
        routes_manager,
    )
    from pixsim7.backend.main.infrastructure.registries.behavior_registry import behavior_registry
    from pixsim7.backend.main.shared.app_context import activate, deactivate

    app, features, routes = started
    activate(app)
    try:
        assert plugin_manager.summary() == features.summary()
        assert routes_manager.enabled_ids() == routes.enabled_ids()
        assert behavior_registry.locked is True
    finally:
        deactivate(app)
