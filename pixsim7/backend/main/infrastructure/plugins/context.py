"""What a plugin's hooks receive: the app and the shared services, gathered in one object."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

ContextFactory = Callable[[str], "PluginContext"]


@dataclass
class PluginContext:
    """Services handed to `on_load`, `on_enable` and `on_disable`; absent services are None."""

    app: FastAPI | None
    settings: Any
    plugin_id: str
    logger: logging.Logger = field(repr=False)
    behavior_registry: Any = None
    ecs_registry: Any = None
    event_bus: Any = None
    providers: Any = None
    db: Any = None
    redis: Any = None


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
