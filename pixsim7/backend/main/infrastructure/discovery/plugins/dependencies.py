"""Plugin managers on `app.state` (the `plugins` startup step writes them): request-time
readers, and the legacy module-level names that forward to the running app's."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from pixsim7.backend.main.shared.app_context import StateForwarder

from .context import PluginContext
from .manager import PluginManager

PLUGIN_MANAGER_KEY = "plugin_manager"
ROUTES_MANAGER_KEY = "routes_manager"


def _manager(app: Any, key: str) -> PluginManager:
    manager = getattr(app.state, key, None)
    if manager is None:
        raise RuntimeError(
            f"app.state.{key} is not set: the app's `plugins` startup step sets it, so this "
            "app did not start, or its plugins step failed")
    return manager


def get_plugin_manager(request: Request) -> PluginManager:
    """The feature plugin manager of the app serving `request`."""
    return _manager(request.app, PLUGIN_MANAGER_KEY)


def get_routes_manager(request: Request) -> PluginManager:
    """The route plugin manager of the app serving `request`."""
    return _manager(request.app, ROUTES_MANAGER_KEY)


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


plugin_manager = StateForwarder(PLUGIN_MANAGER_KEY)
routes_manager = StateForwarder(ROUTES_MANAGER_KEY)
