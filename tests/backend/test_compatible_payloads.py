"""The fields `/`, `/health` and `/ready` have always returned keep their names and values.

Dashboards and monitors read these fields; this pins them apart from the golden snapshots.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime

import pytest
from pixsim7_testing.apps import started

pytestmark = [pytest.mark.integration, pytest.mark.rollback_db]

PROVIDER_IDS = ["pixverse", "runway", "sora"]
DATABASE_ERROR = r"error: [A-Za-z_][A-Za-z0-9_]*"


async def test_liveness_keeps_name_version_and_running(app_factory, app_settings) -> None:
    running = await started(app_factory)
    response = await running.get("/")
    assert response.status_code == 200
    assert response.json() == {"name": "PixSim7", "version": app_settings.app_version,
                               "status": "running"}


async def test_health_is_healthy_with_connected_database_redis_and_provider_ids(
    app_factory,
) -> None:
    running = await started(app_factory)
    response = await running.get("/health")
    body = response.json()
    assert response.status_code == 200
    assert {key: body[key] for key in ("status", "database", "redis", "providers")} == {
        "status": "healthy", "database": "connected", "redis": "connected",
        "providers": PROVIDER_IDS}


@pytest.mark.template_db
async def test_health_stays_200_and_degraded_with_the_error_class_when_the_database_is_cut(
    app_factory, make_settings, fault_proxy
) -> None:
    proxy = fault_proxy("postgres")
    running = await started(app_factory, make_settings(
        database_proxy=proxy, ready_cache_ttl=0, ready_check_timeout=0.5))
    proxy.cut()
    response = await running.get("/health")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "degraded"
    assert re.fullmatch(DATABASE_ERROR, body["database"]), body["database"]
    assert body["providers"] == PROVIDER_IDS


@pytest.mark.template_db
async def test_health_is_healthy_with_redis_disconnected_when_only_redis_is_cut(
    app_factory, make_settings, fault_proxy
) -> None:
    proxy = fault_proxy("redis")
    running = await started(app_factory, make_settings(
        redis_proxy=proxy, ready_cache_ttl=0, ready_check_timeout=0.5,
        redis_connect_timeout=0.5))
    proxy.cut()
    body = (await running.get("/health")).json()
    assert (body["status"], body["database"], body["redis"]) == (
        "healthy", "connected", "disconnected")


@pytest.mark.template_db
async def test_ready_keeps_status_database_redis_and_plugins_loaded(
    app_factory, make_settings, fault_proxy
) -> None:
    proxy = fault_proxy("postgres")
    running = await started(app_factory, make_settings(
        database_proxy=proxy, ready_cache_ttl=0, ready_check_timeout=0.5))
    up = await running.get("/ready")
    proxy.cut()
    down = await running.get("/ready")
    assert up.status_code == 200
    assert {key: up.json()[key] for key in ("status", "database", "redis", "plugins_loaded")} \
        == {"status": "ready", "database": "connected", "redis": "connected",
            "plugins_loaded": True}
    assert down.status_code == 503
    assert down.json()["status"] == "unavailable"
    assert re.fullmatch(DATABASE_ERROR, down.json()["database"]), down.json()["database"]


async def test_openapi_documents_each_probe_body_for_every_status(app_factory) -> None:
    running = await started(app_factory)
    spec = (await running.get("/openapi.json")).json()

    def schema(path: str, status: str) -> str:
        content = spec["paths"][path]["get"]["responses"][status]["content"]
        return content["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]

    assert [schema("/", "200"), schema("/ready", "200"), schema("/ready", "503"),
            schema("/health", "200")] == ["Liveness", "Readiness", "Readiness", "Health"]
    health = spec["components"]["schemas"]["Health"]
    assert health["properties"]["status"]["enum"] == ["healthy", "degraded"]
    assert {"status", "database", "redis", "providers"} <= set(health["required"])


# --- checks with detail and readiness changes --------------------------------------------


@pytest.mark.template_db
async def test_verbose_ready_shows_each_check_with_status_duration_and_since(
    app_factory, make_settings, fault_proxy
) -> None:
    proxy = fault_proxy("postgres")
    running = await started(app_factory, make_settings(
        database_proxy=proxy, ready_cache_ttl=0, ready_check_timeout=0.5))
    assert "checks" not in (await running.get("/ready")).json()
    up = (await running.get("/ready?verbose")).json()["checks"]
    again = (await running.get("/ready", params={"verbose": "1"})).json()["checks"]
    proxy.cut()
    down = (await running.get("/ready?verbose")).json()["checks"]
    assert set(up) == {"database", "redis"}
    assert (up["database"]["status"], up["redis"]["status"]) == ("connected", "connected")
    assert all(check["duration_ms"] >= 0 for check in (*up.values(), *down.values()))
    assert again["database"]["since"] == up["database"]["since"]  # still connected
    assert re.fullmatch(DATABASE_ERROR, down["database"]["status"])
    assert datetime.fromisoformat(down["database"]["since"]) > datetime.fromisoformat(
        up["database"]["since"])
    assert down["redis"]["since"] == up["redis"]["since"]


@pytest.mark.template_db
async def test_a_readiness_change_logs_one_line_and_publishes_one_event(
    app_factory, make_settings, fault_proxy, caplog
) -> None:
    proxy = fault_proxy("postgres")
    running = await started(app_factory, make_settings(
        database_proxy=proxy, ready_cache_ttl=0, ready_check_timeout=0.5))
    events: list[dict] = []
    running.app.state.event_bus.subscribe("readiness.changed",
                                          lambda event: events.append(event.payload))
    caplog.set_level(logging.INFO, logger="pixsim7.health")
    statuses = [(await running.get("/ready")).status_code]
    proxy.cut()
    statuses += [(await running.get("/ready")).status_code for _ in range(3)]
    proxy.restore()
    statuses += [await wait_for_ready(running)]
    statuses += [(await running.get("/ready")).status_code]
    assert statuses == [200, 503, 503, 503, 200, 200]
    assert [(e["previous"], e["status"]) for e in events] == [
        ("ready", "unavailable"), ("unavailable", "ready")]
    lines = [r for r in caplog.records if r.name == "pixsim7.health"]
    assert [(r.levelname, r.getMessage()) for r in lines] == [
        ("WARNING", "readiness changed from ready to unavailable"),
        ("INFO", "readiness changed from unavailable to ready")]


async def wait_for_ready(running) -> int:
    """Poll /ready until the restored database answers again; its status code."""
    for _ in range(50):
        response = await running.get("/ready")
        if response.status_code == 200:
            return 200
        await asyncio.sleep(0.1)
    return response.status_code
