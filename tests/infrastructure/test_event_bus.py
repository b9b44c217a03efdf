"""Event bus delivery rules and the built-in handlers."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any

import pytest

from pixsim7.backend.main.infrastructure.registries.events import (
    Event,
    EventBus,
    MetricsHandler,
    WebSocketHub,
    register_core_handlers,
)


async def test_sync_async_and_wildcard_handlers_all_receive() -> None:
    bus = EventBus()
    seen: list[tuple[str, str]] = []

    def sync_handler(event: Event) -> None:
        seen.append(("sync", event.type))

    async def async_handler(event: Event) -> None:
        await asyncio.sleep(0)
        seen.append(("async", event.type))

    bus.subscribe("job.done", sync_handler)
    bus.subscribe("job.done", async_handler)
    bus.subscribe("*", lambda e: seen.append(("all", e.type)), name="everything")
    bus.subscribe("job.failed", sync_handler, name="failures")

    event = await bus.publish("job.done", {"id": 7})

    assert seen == [("sync", "job.done"), ("async", "job.done"), ("all", "job.done")]
    assert event.type == "job.done" and event.payload == {"id": 7}
    assert event.timestamp > 0
    assert bus.handler_names() == [
        "test_sync_async_and_wildcard_handlers_all_receive.<locals>.sync_handler",
        "test_sync_async_and_wildcard_handlers_all_receive.<locals>.async_handler",
        "everything",
        "failures",
    ]


async def test_raising_handler_is_logged_by_name_and_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    received: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("handler bug")

    async def broken_async(event: Event) -> None:
        raise ValueError("async handler bug")

    bus.subscribe("x", broken, name="broken-sync")
    bus.subscribe("x", broken_async, name="broken-async")
    bus.subscribe("x", lambda e: received.append(e.type), name="survivor")

    with caplog.at_level(logging.ERROR):
        await bus.publish("x")

    assert received == ["x"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("'broken-sync'" in m and "'x'" in m for m in messages)
    assert any("'broken-async'" in m for m in messages)


async def test_unsubscribe_and_close() -> None:
    bus = EventBus()
    calls: list[int] = []
    stop = bus.subscribe("tick", lambda e: calls.append(1), name="ticker")
    await bus.publish("tick")
    stop()
    stop()
    await bus.publish("tick")
    assert calls == [1]
    assert bus.handler_names() == []

    bus.subscribe("tick", lambda e: calls.append(2))
    await bus.close()
    await bus.publish("tick")
    assert calls == [1]
    assert len(bus) == 0


async def test_partial_of_coroutine_function_is_awaited() -> None:
    bus = EventBus()
    got: list[Any] = []

    async def record(tag: str, event: Event) -> None:
        got.append((tag, event.payload))

    bus.subscribe("a", functools.partial(record, "p"))
    await bus.publish("a", {"k": 1})
    assert got == [("p", {"k": 1})]
    assert bus.handler_names() == ["test_partial_of_coroutine_function_is_awaited.<locals>.record"]


async def test_handler_may_unsubscribe_during_delivery() -> None:
    bus = EventBus()
    calls: list[str] = []
    stop = None

    def once(event: Event) -> None:
        calls.append("once")
        assert stop is not None
        stop()

    stop = bus.subscribe("e", once)
    bus.subscribe("e", lambda e: calls.append("always"))
    await bus.publish("e")
    await bus.publish("e")
    assert calls == ["once", "always", "always"]


async def test_invalid_subscriptions_and_publishes() -> None:
    bus = EventBus()
    with pytest.raises(ValueError, match="non-empty"):
        bus.subscribe("", lambda e: None)
    with pytest.raises(TypeError, match="not callable"):
        bus.subscribe("x", "not a function")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'\\*'"):
        await bus.publish("*")


async def test_payload_is_copied() -> None:
    bus = EventBus()
    payload = {"a": 1}
    event = await bus.publish("e", payload)
    payload["a"] = 2
    assert event.payload == {"a": 1}


async def test_metrics_handler_counts_per_type() -> None:
    bus = EventBus()
    metrics = MetricsHandler()
    names = register_core_handlers(bus, WebSocketHub(), metrics=metrics)
    assert names == ["metrics", "websocket_broadcast"]
    assert bus.handler_names() == names

    for event_type in ("b", "a", "b"):
        await bus.publish(event_type)

    snapshot = metrics.snapshot()
    assert snapshot["total"] == 3 == metrics.total
    assert snapshot["by_type"] == {"a": 1, "b": 2}
    assert list(snapshot["by_type"]) == ["a", "b"]
    assert snapshot["last_event_at"] is not None
    json.dumps(snapshot)


class FakeSocket:
    def __init__(self, *, fail: bool = False, stall: bool = False) -> None:
        self.fail = fail
        self.stall = stall
        self.sent: list[dict[str, Any]] = []
        self.closed_with: int | None = None

    async def send_text(self, text: str) -> None:
        if self.fail:
            raise RuntimeError("socket is gone")
        if self.stall:
            await asyncio.sleep(60)
        self.sent.append(json.loads(text))

    async def close(self, code: int = 1000) -> None:
        self.closed_with = code


async def test_hub_broadcasts_and_drops_dead_or_stalled_sockets() -> None:
    hub = WebSocketHub(send_timeout=0.2)
    good, dead, stalled = FakeSocket(), FakeSocket(fail=True), FakeSocket(stall=True)
    for socket in (good, dead, stalled):
        hub.register(socket)  # type: ignore[arg-type]
    assert hub.connection_count == 3

    event = Event("job.done", {"when": object()}, 123.0)
    delivered = await hub.broadcast(event)

    assert delivered == 1
    assert hub.connection_count == 1
    assert good.sent[0]["type"] == "job.done"
    assert good.sent[0]["timestamp"] == 123.0
    assert isinstance(good.sent[0]["payload"]["when"], str)

    await hub.close_all()
    assert good.closed_with == 1001
    assert hub.connection_count == 0
    assert await hub.broadcast(event) == 0
