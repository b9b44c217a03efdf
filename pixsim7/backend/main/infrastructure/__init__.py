"""Infrastructure, in three rooms, each with its own reason to change: `adapters` (servers and
drivers), `registries` (what an app holds while it runs), `discovery` (what is loaded from
folders). Rooms import downwards only: discovery may use registries and adapters, registries
may use adapters.

The modules' former paths (`infrastructure.database`, `infrastructure.plugins`, ...) still
import: each forwards to the module that moved, the same object under both names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from typing import Any

# Each former path under this package, and where the module now lives; a former package's
# submodules follow it (`database.base` is `adapters.database.base`) unless named here.
MOVED = {
    "database": "adapters.database",
    "redis": "adapters.redis",
    "embedded": "adapters.embedded",
    "shared_servers": "adapters.shared_servers",
    "arq_adapter": "adapters.arq_adapter",
    "job_codec": "adapters.job_codec",
    "events": "registries.events",
    "ecs": "registries.ecs",
    "providers": "registries.providers",
    "jobs": "registries.jobs",
    "plugins.behavior_registry": "registries.behavior_registry",
    "manifests": "discovery.manifests",
    "folder_manager": "discovery.folder_manager",
    "package_loader": "discovery.package_loader",
    "domain_registry": "discovery.domain_registry",
    "plugins": "discovery.plugins",
    "middleware": "discovery.middleware",
}


def moved(former: str) -> str | None:
    """Where the module at `former` (a path under this package) lives now, or None."""
    head, _, rest = former.partition(".")
    if former in MOVED:
        return MOVED[former]
    return f"{MOVED[head]}.{rest}" if rest and head in MOVED else None


class _Forward(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a former path as the module that moved (`MOVED`)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if not fullname.startswith(__name__ + "."):
            return None
        target = moved(fullname[len(__name__) + 1:])
        if target is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, loader_state=target)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # a placeholder; exec_module puts the moved module in its place

    def exec_module(self, module: Any) -> None:
        spec = module.__spec__
        # The import system returns what sys.modules holds under the name once this ends.
        sys.modules[spec.name] = importlib.import_module(f"{__name__}.{spec.loader_state}")


if not any(isinstance(finder, _Forward) for finder in sys.meta_path):
    sys.meta_path.insert(0, _Forward())  # before the path finder, which would load a copy
