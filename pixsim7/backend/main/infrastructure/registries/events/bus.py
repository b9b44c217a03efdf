"""In-process publish/subscribe bus for backend events."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WILDCARD", "Event", "EventBus", "EventHandler"]

logger = logging.getLogger(__name__)

WILDCARD = "*"

EventHandler = Callable[["Event"], Awaitable[Any] | Any]


@dataclass(frozen=True)
class Event:
    """Something that happened: a dotted type such as "job.completed", its data and when."""

    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """The event as the JSON object sent to clients."""
        return {"type": self.type, "payload": self.payload, "timestamp": self.timestamp}


@dataclass(frozen=True, eq=False)
class _Subscription:
    event_type: str
    handler: EventHandler
    name: str


def _handler_name(handler: EventHandler) -> str:
    target = getattr(handler, "func", handler)  # functools.partial
    name = getattr(target, "__qualname__", None)
    return name if isinstance(name, str) else type(target).__qualname__


class EventBus:
    """Calls the handlers subscribed to an event type, plus the "*" handlers, on publish."""

    def __init__(self) -> None:
        self._subscriptions: list[_Subscription] = []

    def __len__(self) -> int:
        return len(self._subscriptions)

    def subscribe(
        self, event_type: str, handler: EventHandler, *, name: str | None = None
    ) -> Callable[[], None]:
        """Call `handler(event)` for `event_type` ("*" for all); returns an unsubscribe function."""
        if not isinstance(event_type, str) or not event_type:
            raise ValueError(f"event type must be a non-empty string, got {event_type!r}")
        if not callable(handler):
            raise TypeError(f"event handler {name or handler!r} for {event_type!r} is not callable")
        subscription = _Subscription(event_type, handler, name or _handler_name(handler))
        self._subscriptions.append(subscription)

        def unsubscribe() -> None:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

        return unsubscribe

    async def publish(self, event_type: str, payload: dict[str, Any] | None = None) -> Event:
        """Deliver a new event to its handlers in subscription order and return it."""
        if not isinstance(event_type, str) or not event_type or event_type == WILDCARD:
            raise ValueError(
                f"cannot publish event type {event_type!r}: use a non-empty name other than "
                f"{WILDCARD!r}"
            )
        event = Event(event_type, dict(payload or {}), time.time())
        # A snapshot, so handlers may subscribe or unsubscribe while the event is delivered.
        targets = [s for s in self._subscriptions if s.event_type in (event_type, WILDCARD)]
        for subscription in targets:
            try:
                result = subscription.handler(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                # One broken handler must not keep the event from the others.
                logger.exception(
                    "event handler %r failed on a %r event", subscription.name, event_type
                )
        return event

    def handler_names(self) -> list[str]:
        """Names of the subscribed handlers, in subscription order."""
        return [s.name for s in self._subscriptions]

    def subscriptions(self) -> list[tuple[str, str]]:
        """(event type, handler name) pairs, in subscription order."""
        return [(s.event_type, s.name) for s in self._subscriptions]

    def saved(self) -> tuple[Any, ...]:
        """The current subscriptions, for `restore()`."""
        return tuple(self._subscriptions)

    def restore(self, saved: tuple[Any, ...]) -> None:
        """Back to the subscriptions `saved()` returned: later ones are dropped."""
        self._subscriptions[:] = saved

    def summary(self) -> dict[str, Any]:
        return {"subscriptions": [f"{kind} -> {name}" for kind, name in self.subscriptions()]}

    async def close(self) -> None:
        """Drop every subscriber; later publishes reach nobody."""
        self._subscriptions.clear()
