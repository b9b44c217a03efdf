"""Feature and route plugins: manifests, the plugin manager, contexts and the behavior registry."""

# The legacy `behavior_registry` forwarder is not re-exported here: the name would shadow the
# `behavior_registry` submodule; import it from `.behavior_registry`.
from pixsim7.backend.main.infrastructure.registries.behavior_registry import (
    BehaviorRegistry,
    BehaviorRegistryError,
    BehaviorRegistryLockedError,
)

from .context import ContextFactory, PluginContext, context_factory_from_app, plugin_logger
from .dependencies import (
    get_plugin_context,
    get_plugin_manager,
    get_routes_manager,
    plugin_manager,
    routes_manager,
)
from .manager import PluginDependencyError, PluginManager, PluginStartupError, PluginState
from .manifest import PluginManifest, PluginManifestError, load_manifest

__all__ = [
    "BehaviorRegistry",
    "BehaviorRegistryError",
    "BehaviorRegistryLockedError",
    "ContextFactory",
    "PluginContext",
    "PluginDependencyError",
    "PluginManager",
    "PluginManifest",
    "PluginManifestError",
    "PluginStartupError",
    "PluginState",
    "context_factory_from_app",
    "get_plugin_context",
    "get_plugin_manager",
    "get_routes_manager",
    "load_manifest",
    "plugin_logger",
    "plugin_manager",
    "routes_manager",
]
