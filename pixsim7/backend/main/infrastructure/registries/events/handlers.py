"""Built-in event handlers: per-type counters and the WebSocket fan-out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import WebSocket

from .bus import WILDCARD, Event, EventBus

__all__ = ["MetricsHandler", "WebSocketHub", "register_core_handlers"]

logger = logging.getLogger(__name__)


class MetricsHandler:
    """Counts published events per type."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.total = 0
        self.last_event_at: float | None = None

    def __call__(self, event: Event) -> None:
        self.counts[event.type] = self.counts.get(event.type, 0) + 1
        self.total += 1
        self.last_event_at = event.timestamp

    def snapshot(self) -> dict[str, Any]:
        """Totals so far, as JSON-able data with event types sorted."""
        return {
            "total": self.total,
            "by_type": {key: self.counts[key] for key in sorted(self.counts)},
            "last_event_at": self.last_event_at,
        }

    def summary(self) -> dict[str, Any]:
        return self.snapshot()


class WebSocketHub:
    """The connected event WebSockets; broadcasts each event to all of them."""

    def __init__(self, *, send_timeout: float = 5.0) -> None:
        self.send_timeout = send_timeout
        self._sockets: dict[WebSocket, None] = {}
        self._places_taken = 0

    def take_place(self, limit: int) -> bool:
        """Take one of `limit` listener places, before the handshake is answered (False when
        all are taken); `give_back_place()` returns it."""
        if self._places_taken >= limit:
            return False
        self._places_taken += 1
        return True

    def give_back_place(self) -> None:
        self._places_taken -= 1

    @property
    def connection_count(self) -> int:
        """How many sockets are registered."""
        return len(self._sockets)

    def summary(self) -> dict[str, Any]:
        return {"connections": self.connection_count}

    def register(self, websocket: WebSocket) -> None:
        """Start sending events to an accepted `websocket`."""
        self._sockets[websocket] = None

    def unregister(self, websocket: WebSocket) -> None:
        """Stop sending events to `websocket`; unknown sockets are ignored."""
        self._sockets.pop(websocket, None)

    async def broadcast(self, event: Event) -> int:
        """Send `event` as JSON to every socket, dropping those that fail; return deliveries."""
        sockets = list(self._sockets)
        if not sockets:
            return 0
        # Serialised once; default=str keeps an odd payload value from failing every send.
        message = json.dumps(event.to_dict(), default=str)
        delivered = await asyncio.gather(*(self._send(ws, message) for ws in sockets))
        for websocket, ok in zip(sockets, delivered, strict=True):
            if not ok:
                self.unregister(websocket)
        return sum(delivered)

    async def _send(self, websocket: WebSocket, message: str) -> bool:
        # A client that stops reading would otherwise hold up every later publish.
        try:
            async with asyncio.timeout(self.send_timeout):
                await websocket.send_text(message)
        except Exception as exc:
            logger.info("dropping event websocket after a failed send (%s)", type(exc).__name__)
            return False
        return True

    async def close_all(self, code: int = 1001) -> None:
        """Close every socket (1001: going away) and forget them."""
        sockets = list(self._sockets)
        self._sockets.clear()
        for websocket in sockets:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.send_timeout):
                    await websocket.close(code=code)


def register_core_handlers(
    bus: EventBus, hub: WebSocketHub, *, metrics: MetricsHandler | None = None
) -> list[str]:
    """Subscribe the metrics counter and the WebSocket broadcast to all events; return names."""
    handlers = (
        ("metrics", metrics if metrics is not None else MetricsHandler()),
        ("websocket_broadcast", hub.broadcast),
    )
    for name, handler in handlers:
        bus.subscribe(WILDCARD, handler, name=name)
    return [name for name, _ in handlers]
