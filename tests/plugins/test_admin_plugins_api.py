"""require_admin and GET /api/v1/admin/plugins."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pixsim7_testing.plugins import write_plugin

from pixsim7.backend.main.api.v1.admin_plugins import router
from pixsim7.backend.main.infrastructure.discovery.middleware import MiddlewareManager
from pixsim7.backend.main.infrastructure.discovery.plugins import (
    BehaviorRegistry,
    PluginManager,
    context_factory_from_app,
)

TOKEN = "s3cret-admin-token"


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def admin_app(tmp_path: Path, token: str | None = TOKEN) -> FastAPI:
    write_plugin(tmp_path / "features", "good")
    write_plugin(tmp_path / "features", "bad", "raise ImportError('missing wheel')\n")
    write_plugin(tmp_path / "routes", "api", kind="route", required=True)
    (tmp_path / "middleware").mkdir()
    app = FastAPI()
    app.include_router(router)
    app.state.admin_token = token
    app.state.behavior_registry = BehaviorRegistry()
    features = PluginManager("feature", tmp_path / "features", fail_fast=False)
    routes = PluginManager("route", tmp_path / "routes", fail_fast=False)
    for manager in (features, routes):
        await manager.load_all(context_factory_from_app(app))
        await manager.enable_all(app)
    app.state.plugin_manager, app.state.routes_manager = features, routes  # as the plugins step
    middleware = MiddlewareManager(tmp_path / "middleware")
    middleware.install(app, settings=None)
    app.state.middleware_manager = middleware
    return app


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
        {"Authorization": TOKEN},
    ],
)
async def test_requests_without_the_token_get_401(tmp_path: Path, headers: dict) -> None:
    app = await admin_app(tmp_path)
    async with client_for(app) as client:
        response = await client.get("/api/v1/admin/plugins", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": "admin authentication required"}


async def test_admin_api_is_off_without_a_configured_token(tmp_path: Path) -> None:
    app = await admin_app(tmp_path, token=None)
    async with client_for(app) as client:
        response = await client.get(
            "/api/v1/admin/plugins", headers={"Authorization": "Bearer None"}
        )
    assert response.status_code == 503
    assert "set ADMIN_TOKEN" in response.json()["detail"]


async def test_plugins_status_with_the_token(tmp_path: Path) -> None:
    app = await admin_app(tmp_path)
    async with client_for(app) as client:
        response = await client.get(
            "/api/v1/admin/plugins", headers={"Authorization": f"bearer {TOKEN}"}
        )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"feature", "route", "behavior_registry", "middleware"}
    feature = {p["id"]: p for p in body["feature"]["plugins"]}
    assert feature["good"]["status"] == "enabled"
    assert feature["bad"]["status"] == "failed"
    assert feature["bad"]["error"] == "ImportError: missing wheel"
    assert body["route"]["plugins"][0]["required"] is True
    assert body["behavior_registry"]["locked"] is False
    assert body["middleware"] == {"order": [], "middleware": []}
