"""The presets route plugin against a real PostgreSQL database from the testing kit."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from pixsim7.backend.main.infrastructure.adapters.database import Database
from pixsim7.backend.main.infrastructure.discovery.domain_registry import init_domain_registry
from pixsim7.backend.main.infrastructure.discovery.plugins import (
    PluginManager,
    context_factory_from_app,
)
from pixsim7.backend.main.infrastructure.registries.events import EventBus
from pixsim7.backend.main.infrastructure.registries.providers import (
    ProviderRegistry,
    default_providers,
)
from pixsim7.backend.main.shared.config import PACKAGE_DIR

pytestmark = pytest.mark.integration


async def test_create_and_list_presets(test_database) -> None:
    app = FastAPI()
    db = Database(test_database.sqlalchemy_url)
    registry = init_domain_registry(PACKAGE_DIR / "domain_models")
    await db.create_schema(registry.tables)
    events: list = []
    bus = EventBus()
    bus.subscribe("preset.created", events.append)
    app.state.db, app.state.domain_registry, app.state.event_bus = db, registry, bus
    app.state.providers = ProviderRegistry(default_providers())
    routes = PluginManager("route", PACKAGE_DIR / "routes", fail_fast=True)
    await routes.load_all(context_factory_from_app(app))
    await routes.enable_all(app)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            body = {
                "name": "zoom",
                "provider_id": "pixverse",
                "operation": "text_to_video",
                "params": {"duration": 5},
            }
            created = await client.post("/api/v1/presets", json=body)
            again = await client.post("/api/v1/presets", json=body)
            second = await client.post(
                "/api/v1/presets",
                json={"name": "alpha", "provider_id": "sora", "operation": "text_to_video"},
            )
            listed = await client.get("/api/v1/presets")
    finally:
        await routes.disable_all()
        await db.dispose()

    assert created.status_code == 201, created.text
    preset = created.json()
    assert isinstance(preset["id"], int)
    assert preset["params"] == {"duration": 5}
    assert preset["created_at"] is not None
    assert again.status_code == 409
    assert "'zoom'" in again.json()["detail"]
    assert second.status_code == 201
    assert [p["name"] for p in listed.json()] == ["alpha", "zoom"]
    assert [(e.type, e.payload["name"]) for e in events] == [
        ("preset.created", "zoom"),
        ("preset.created", "alpha"),
    ]
    assert events[0].payload["id"] == preset["id"]
