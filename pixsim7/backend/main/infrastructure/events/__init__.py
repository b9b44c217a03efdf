"""Backend event bus, its built-in handlers and the WebSocket stream of events."""

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
