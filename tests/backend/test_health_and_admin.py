"""Liveness, readiness and its cache, public body hygiene, admin auth, presets and events."""

from __future__ import annotations

import re
import time
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pixsim7_testing.apps import started
from pixsim7_testing.polling import wait_until
from starlette.testclient import TestClient

from pixsim7.backend.main.api.health import ReadinessChecker, readiness
from pixsim7.backend.main.main import create_app
from pixsim7.backend.main.startup import API_PLAN, Policy, Step, run_plan

# None of these pins schema creation or seeding: their apps start on a template clone.
pytestmark = [pytest.mark.integration, pytest.mark.rollback_db]

ADMIN_PATHS = ("/api/v1/admin/plugins", "/api/v1/admin/startup")
ADMIN_HEADERS = {"Authorization": "Bearer kit-admin-token"}
PRESET = {"name": "test-preset-720p", "provider_id": "pixverse",
          "operation": "text_to_video", "params": {"duration": 5}}


def strings_in(body: Any) -> list[str]:
    """Every key and string value in a JSON body."""
    if isinstance(body, dict):
        return [*map(str, body), *(s for value in body.values() for s in strings_in(value))]
    if isinstance(body, list):
        return [s for value in body for s in strings_in(value)]
    return [body] if isinstance(body, str) else []


# --- liveness and readiness ----------------------------------------------------------------


@pytest.mark.template_db
async def test_liveness_answers_while_the_database_is_blackholed(
    app_factory, make_settings, fault_proxy
) -> None:
    proxy = fault_proxy("postgres")
    running = await started(app_factory, make_settings(
        database_proxy=proxy, ready_cache_ttl=0, ready_check_timeout=0.5,
        database_connect_timeout=1.0))
    proxy.blackhole()
    try:
        response = await running.get("/")
    finally:
        proxy.restore()
    assert response.status_code == 200
    assert response.json()["status"] == "running"


@pytest.mark.template_db
async def test_readiness_is_unavailable_within_the_check_timeout_when_database_is_blackholed(
    app_factory, make_settings, fault_proxy
) -> None:
    timeout = 0.5
    proxy = fault_proxy("postgres")
    running = await started(app_factory, make_settings(
        database_proxy=proxy, ready_cache_ttl=0, ready_check_timeout=timeout,
        database_connect_timeout=1.0))
    proxy.blackhole()
    try:
        began = time.monotonic()
        response = await running.get("/ready")
        elapsed = time.monotonic() - began
    finally:
        proxy.restore()
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert elapsed < timeout + 1.0


@pytest.mark.template_db
async def test_readiness_is_unavailable_after_shutdown(app_factory) -> None:
    running = await started(app_factory)
    app = running.app
    await running.stop()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/ready")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["lifecycle"] == "stopped"


@pytest.mark.template_db
async def test_readiness_is_unavailable_while_shutdown_runs(app_settings) -> None:
    seen: list[tuple[int, dict[str, Any]]] = []

    async def nothing(app: FastAPI) -> None:
        return None

    async def probe_during_teardown(app: FastAPI) -> None:
        seen.append(await readiness(app))

    app = FastAPI()  # built by hand: what create_app writes, written here
    app.state.settings = app_settings
    app.state.readiness = ReadinessChecker(app)
    async with run_plan(app, (Step("probe", nothing, Policy.REQUIRED, probe_during_teardown),),
                        "test"):
        pass
    [(status_code, body)] = seen
    assert (status_code, body["status"], body["lifecycle"]) == (503, "unavailable", "stopping")


@pytest.mark.template_db
async def test_readiness_result_is_reused_within_the_cache_ttl(
    app_factory, make_settings, fault_proxy
) -> None:
    proxy = fault_proxy("postgres")
    running = await started(app_factory, make_settings(
        database_proxy=proxy, ready_cache_ttl=30, ready_check_timeout=0.5))
    first = await running.get("/ready")
    proxy.cut()
    second = await running.get("/ready")
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json()["database"] == "connected"


@pytest.mark.template_db
async def test_readiness_shows_a_cut_database_at_once_with_zero_ttl(
    app_factory, make_settings, fault_proxy
) -> None:
    proxy = fault_proxy("postgres")
    running = await started(app_factory, make_settings(
        database_proxy=proxy, ready_cache_ttl=0, ready_check_timeout=0.5))
    first = await running.get("/ready")
    proxy.cut()
    second = await running.get("/ready")
    assert (first.status_code, second.status_code) == (200, 503)
    assert second.json()["database"].startswith("error:")


@pytest.mark.template_db
async def test_public_bodies_reveal_no_hosts_urls_or_error_messages(
    app_factory, make_settings, fault_proxy, kit_services
) -> None:
    db_proxy, redis_proxy = fault_proxy("postgres"), fault_proxy("redis")
    running = await started(app_factory, make_settings(
        database_proxy=db_proxy, redis_proxy=redis_proxy, ready_cache_ttl=0,
        ready_check_timeout=0.5, redis_connect_timeout=0.5))
    paths = ("/", "/ready", "/health")
    bodies = [(await running.get(path)).json() for path in paths]
    db_proxy.cut()
    redis_proxy.cut()
    bodies += [(await running.get(path)).json() for path in paths]
    forbidden = ["127.0.0.1", "localhost", "postgresql", "redis://", str(db_proxy.port),
                 str(redis_proxy.port), kit_services.postgres.host, str(kit_services.postgres.port)]
    if kit_services.postgres.password:
        forbidden.append(kit_services.postgres.password)
    leaks = [text for body in bodies for text in strings_in(body)
             if any(word in text for word in forbidden) or re.search(r":\d", text)
             or " " in text.removeprefix("error: ")]
    assert leaks == []
    assert re.fullmatch(r"error: [A-Za-z_][A-Za-z0-9_.]*", bodies[4]["database"])


# --- admin endpoints -----------------------------------------------------------------------


async def admin_statuses(running: Any, headers: dict[str, str]) -> list[int]:
    return [(await running.get(path, headers=headers)).status_code for path in ADMIN_PATHS]


async def test_admin_endpoints_refuse_a_request_without_token(app_factory) -> None:
    running = await started(app_factory)
    assert await admin_statuses(running, {}) == [401, 401]


async def test_admin_endpoints_refuse_a_wrong_token(app_factory) -> None:
    running = await started(app_factory)
    assert await admin_statuses(running, {"Authorization": "Bearer not-the-token"}) == [401, 401]


async def test_admin_endpoints_refuse_a_non_bearer_scheme(app_factory) -> None:
    running = await started(app_factory)
    headers = {"Authorization": "Basic kit-admin-token"}
    assert await admin_statuses(running, headers) == [401, 401]


async def test_admin_endpoints_accept_the_bearer_admin_token(app_factory) -> None:
    running = await started(app_factory)
    assert await admin_statuses(running, ADMIN_HEADERS) == [200, 200]


async def test_startup_timeline_lists_each_step_with_policy_status_and_duration(
    app_factory,
) -> None:
    running = await started(app_factory)
    response = await running.get("/api/v1/admin/startup", headers=ADMIN_HEADERS)
    steps = [s for s in response.json()["steps"] if s["phase"] == "startup"]
    assert [(s["step"], s["policy"]) for s in steps] == [
        *((step.name, step.policy.value) for step in API_PLAN), ("complete", "required")]
    assert all(s["status"] in ("ok", "degraded", "skipped") for s in steps)
    assert all(isinstance(s["duration_ms"], int | float) and s["duration_ms"] >= 0
               for s in steps)


# --- presets and the event stream ----------------------------------------------------------


@pytest.mark.template_db
async def test_creating_a_preset_stores_a_row(app_factory, test_database) -> None:
    running = await started(app_factory)
    response = await running.client.post("/api/v1/presets", json=PRESET)
    conn = await asyncpg.connect(test_database.url)
    try:
        row = await conn.fetchrow(
            "SELECT id, provider_id, operation FROM generation_presets WHERE name = $1",
            PRESET["name"])
    finally:
        await conn.close()
    assert response.status_code == 201
    assert row is not None
    assert (row["id"], row["provider_id"], row["operation"]) == (
        response.json()["id"], "pixverse", "text_to_video")


async def test_creating_a_preset_publishes_preset_created(app_factory) -> None:
    running = await started(app_factory)
    metrics = running.app.state.event_metrics
    before = metrics.counts.get("preset.created", 0)
    response = await running.client.post("/api/v1/presets", json=PRESET)
    assert response.status_code == 201
    assert metrics.counts.get("preset.created", 0) == before + 1


async def test_listing_presets_includes_a_created_preset(app_factory) -> None:
    running = await started(app_factory)
    await running.client.post("/api/v1/presets", json=PRESET)
    response = await running.get("/api/v1/presets")
    assert response.status_code == 200
    assert PRESET["name"] in [preset["name"] for preset in response.json()]


async def test_creating_a_duplicate_preset_is_a_conflict(app_factory) -> None:
    running = await started(app_factory)
    first = await running.client.post("/api/v1/presets", json=PRESET)
    second = await running.client.post("/api/v1/presets", json=PRESET)
    assert (first.status_code, second.status_code) == (201, 409)


@pytest.mark.template_db
def test_event_websocket_receives_preset_created(app_settings) -> None:
    app = create_app(app_settings)
    auth = {"Authorization": f"Bearer {app_settings.admin_token}"}
    with (
        TestClient(app) as client,
        client.websocket_connect("/api/v1/ws/events", headers=auth) as socket,
    ):
        hub = app.state.ws_hub
        wait_until(lambda: hub.connection_count, timeout=5.0, interval=0.01)
        assert hub.connection_count == 1
        response = client.post("/api/v1/presets", json=PRESET)
        assert response.status_code == 201
        # A failed delivery drops the socket from the hub; only then could receive() block.
        assert hub.connection_count == 1
        message = socket.receive_json()
    assert message["type"] == "preset.created"
    assert message["payload"]["name"] == PRESET["name"]
    assert message["payload"]["id"] == response.json()["id"]
