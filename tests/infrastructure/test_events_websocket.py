"""The /api/v1/ws/events endpoint streams published events to connected clients."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from pixsim7_testing.polling import wait_until
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from pixsim7.backend.main.api.events import router
from pixsim7.backend.main.infrastructure.registries.events import (
    EventBus,
    MetricsHandler,
    WebSocketHub,
    register_core_handlers,
)
from pixsim7.backend.main.shared.config import Settings

TOKEN = "listener-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def build_app() -> tuple[FastAPI, EventBus, WebSocketHub, MetricsHandler]:
    app = FastAPI()
    bus, hub, metrics = EventBus(), WebSocketHub(), MetricsHandler()
    register_core_handlers(bus, hub, metrics=metrics)
    app.state.settings = Settings(_env_file=None, events_token=TOKEN)
    app.state.event_bus = bus
    app.state.ws_hub = hub
    app.include_router(router)
    return app, bus, hub, metrics


def test_published_event_reaches_a_connected_client() -> None:
    app, bus, hub, metrics = build_app()
    with (
        TestClient(app) as client,
        client.websocket_connect("/api/v1/ws/events", headers=AUTH) as ws,
    ):
        wait_until(lambda: hub.connection_count == 1, interval=0.01)
        ws.portal.call(bus.publish, "generation.completed", {"job_id": 42})

        message = ws.receive_json()
        assert message["type"] == "generation.completed"
        assert message["payload"] == {"job_id": 42}
        assert isinstance(message["timestamp"], float)

        ws.send_text("client chatter is ignored")
        ws.portal.call(bus.publish, "generation.started", None)
        assert ws.receive_json()["type"] == "generation.started"
    wait_until(lambda: hub.connection_count == 0, interval=0.01)
    assert metrics.snapshot()["total"] == 2


def test_two_clients_each_get_the_event() -> None:
    app, bus, hub, _ = build_app()
    with (
        TestClient(app) as client,
        client.websocket_connect("/api/v1/ws/events", headers=AUTH) as first,
        client.websocket_connect("/api/v1/ws/events", headers=AUTH) as second,
    ):
        wait_until(lambda: hub.connection_count == 2, interval=0.01)
        first.portal.call(bus.publish, "world.saved", {"id": 1})
        assert first.receive_json()["payload"] == {"id": 1}
        assert second.receive_json()["payload"] == {"id": 1}


def test_endpoint_refuses_when_no_hub_is_running() -> None:
    app = FastAPI()
    app.include_router(router)
    with (
        TestClient(app) as client,
        pytest.raises(WebSocketDisconnect) as info,
        client.websocket_connect("/api/v1/ws/events"),
    ):
        pass
    assert info.value.code == 1011
