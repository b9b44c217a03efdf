"""What a plugin's hooks receive: the app and the shared services, gathered in one object."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from redis.asyncio import Redis

from pixsim7.backend.main.infrastructure.adapters.database import Database
from pixsim7.backend.main.infrastructure.registries.behavior_registry import BehaviorRegistry
from pixsim7.backend.main.infrastructure.registries.ecs import ComponentRegistry
from pixsim7.backend.main.infrastructure.registries.events import EventBus
from pixsim7.backend.main.infrastructure.registries.providers import ProviderRegistry
from pixsim7.backend.main.shared.config import Settings

ContextFactory = Callable[[str], "PluginContext"]


@dataclass
class PluginContext:
    """What `on_load`, `on_enable` and `on_disable` receive: the app's services, typed as the
    app declares them (`pixsim7.backend.main.state.RESOURCES`; a test holds the two equal);
    a service the app has not started is None.

    `redis` is the client (`RedisStatus.client`): present while Redis is configured, also
    while it is down (a command then raises redis' ConnectionError)."""

    app: FastAPI | None
    settings: Settings | None
    plugin_id: str
    logger: logging.Logger = field(repr=False)
    behavior_registry: BehaviorRegistry | None = None
    ecs_registry: ComponentRegistry | None = None
    event_bus: EventBus | None = None
    providers: ProviderRegistry | None = None
    db: Database | None = None
    redis: Redis | None = None


def plugin_logger(plugin_id: str) -> logging.Logger:
    """The logger a plugin writes to: `pixsim7.plugins.<id>`."""
    return logging.getLogger(f"pixsim7.plugins.{plugin_id}")


def context_factory(app: FastAPI | None, settings: Any, **services: Any) -> ContextFactory:
    """A factory building each plugin's context from the services given (the startup step
    passes its inputs: `behavior_registry`, `ecs_registry`, `event_bus`, `providers`, `db`,
    `redis`, the Redis client)."""
    unknown = set(services) - set(_SERVICES)
    if unknown:
        raise TypeError(f"unknown plugin context services: {', '.join(sorted(unknown))}")

    def build(plugin_id: str) -> PluginContext:
        return PluginContext(app=app, settings=settings, plugin_id=plugin_id,
                             logger=plugin_logger(plugin_id), **services)

    return build


_SERVICES = ("behavior_registry", "ecs_registry", "event_bus", "providers", "db", "redis")


def context_factory_from_app(app: FastAPI) -> ContextFactory:
    """A factory building each plugin's context from `app.state` when the plugin loads.

    Services are read at call time, so the factory may be created before they are stored.
    """

    def build(plugin_id: str) -> PluginContext:
        state = app.state
        services = {name: getattr(state, name, None) for name in _SERVICES}
        services["redis"] = getattr(services["redis"], "client", None)
        return context_factory(app, getattr(state, "settings", None), **services)(plugin_id)

    return build
