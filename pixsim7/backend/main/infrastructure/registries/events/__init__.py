"""Backend event bus and its built-in handlers (the WebSocket endpoint is `api.events`)."""

from .bus import WILDCARD, Event, EventBus, EventHandler
from .handlers import MetricsHandler, WebSocketHub, register_core_handlers

__all__ = [
    "WILDCARD",
    "Event",
    "EventBus",
    "EventHandler",
    "MetricsHandler",
    "WebSocketHub",
    "register_core_handlers",
]
