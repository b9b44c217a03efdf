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


def context_factory_from_app(app: FastAPI) -> ContextFactory:
    """A factory building each plugin's context from `app.state` when the plugin loads.

    Services are read at call time, so the factory may be created before they are stored.
    """

    def build(plugin_id: str) -> PluginContext:
        state = app.state
        return PluginContext(
            app=app,
            settings=getattr(state, "settings", None),
            plugin_id=plugin_id,
            logger=plugin_logger(plugin_id),
            behavior_registry=getattr(state, "behavior_registry", None),
            ecs_registry=getattr(state, "ecs_registry", None),
            event_bus=getattr(state, "event_bus", None),
            providers=getattr(state, "providers", None),
            db=getattr(state, "db", None),
            redis=getattr(getattr(state, "redis", None), "client", None),
        )

    return build
