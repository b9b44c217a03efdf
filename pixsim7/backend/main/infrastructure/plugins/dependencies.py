"""Plugin managers on `app.state`: request-time readers and the one place that stores them."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from pixsim7.backend.main.shared.app_context import StateForwarder

from .context import PluginContext
from .manager import PluginManager

PLUGIN_MANAGER_KEY = "plugin_manager"
ROUTES_MANAGER_KEY = "routes_manager"


def _manager(app: Any, key: str, setter: str) -> PluginManager:
    manager = getattr(app.state, key, None)
    if manager is None:
        raise RuntimeError(
            f"app.state.{key} is not set; the app's startup must call {setter}(manager, app) "
            "before requests are served"
        )
    return manager


def get_plugin_manager(request: Request) -> PluginManager:
    """The feature plugin manager of the app serving `request`."""
    return _manager(request.app, PLUGIN_MANAGER_KEY, "set_plugin_manager")


def get_routes_manager(request: Request) -> PluginManager:
    """The route plugin manager of the app serving `request`."""
    return _manager(request.app, ROUTES_MANAGER_KEY, "set_routes_manager")


def get_plugin_context(request: Request, plugin_id: str) -> PluginContext:
    """The context of a loaded feature or route plugin, looked up by id."""
    for key in (PLUGIN_MANAGER_KEY, ROUTES_MANAGER_KEY):
        manager: PluginManager | None = getattr(request.app.state, key, None)
        if manager is not None and manager.get(plugin_id) is not None:
            return manager.context(plugin_id)
    raise LookupError(
        f"no feature or route plugin {plugin_id!r} is known to this app; check the plugin id "
        "and that its folder is in FEATURE_PLUGINS_DIR or ROUTE_PLUGINS_DIR"
    )


def set_plugin_manager(manager: PluginManager, app: FastAPI) -> None:
    """Store the feature plugin manager on `app.state`."""
    setattr(app.state, PLUGIN_MANAGER_KEY, manager)


def set_routes_manager(manager: PluginManager, app: FastAPI) -> None:
    """Store the route plugin manager on `app.state`."""
    setattr(app.state, ROUTES_MANAGER_KEY, manager)


plugin_manager = StateForwarder(PLUGIN_MANAGER_KEY)
routes_manager = StateForwarder(ROUTES_MANAGER_KEY)
