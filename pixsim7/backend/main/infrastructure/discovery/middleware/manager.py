"""Middleware plugins: folders with a manifest and a `build(settings)` returning (class, kwargs).

Usage when building the app (before it starts; Starlette refuses middleware afterwards)::

    manager = MiddlewareManager(settings.middleware_dir)
    manager.discover()
    manager.install(app, settings)  # or build(settings), for a stack of the app's own
    # in the lifespan:
    await manager.startup(app)
    ...
    await manager.shutdown(app)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from pixsim7.backend.main.infrastructure.discovery.folder_manager import (
    FolderItem,
    ManifestFolderManager,
)
from pixsim7.backend.main.infrastructure.discovery.manifests import ManifestError, load_manifest
from pixsim7.backend.main.infrastructure.discovery.package_loader import call_hook, describe_error
from pixsim7.backend.main.infrastructure.discovery.plugins.manifest import PLUGIN_ID_PATTERN
from pixsim7.backend.main.shared.app_context import StateForwarder

logger = logging.getLogger("pixsim7.middleware")

# "built" lasts only while `install` adds the built middleware to the app.
MiddlewareStatus = Literal["discovered", "disabled", "built", "installed", "started", "stopped",
                           "failed"]


class MiddlewareManifestError(ManifestError):
    """A middleware manifest cannot be read or is invalid; names the file and the field."""


class MiddlewareError(RuntimeError):
    """A middleware plugin failed to import, build or start; names the id and manifest path."""


class MiddlewareManifest(BaseModel):
    """The validated contents of a middleware plugin's `manifest.toml`."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    id: str = Field(pattern=PLUGIN_ID_PATTERN)
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    priority: int
    enabled: bool = True
    description: str | None = None


@dataclass
class MiddlewareState(FolderItem):
    """One middleware plugin as the manager sees it."""

    status: MiddlewareStatus = "discovered"
    priority: int = 0
    enabled_in_manifest: bool = True
    middleware_class: str | None = None

    def details(self) -> dict[str, Any]:
        return {"priority": self.priority, "middleware_class": self.middleware_class}


def load_middleware_manifest(path: Path) -> MiddlewareManifest:
    """Read and validate one middleware manifest."""
    return load_manifest(path, MiddlewareManifest, MiddlewareManifestError)


class MiddlewareManager(ManifestFolderManager[MiddlewareState]):
    """Installs middleware plugins so that the lowest priority number runs outermost."""

    label = "middleware"
    setting = "middleware_dir"
    logger = logger

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, "middleware")
        self._installed = False
        self._built: dict[str, tuple[type, dict[str, Any]]] = {}

    @property
    def middleware(self) -> dict[str, MiddlewareState]:
        """States by id, ordered outermost first (priority, then id)."""
        return self._items

    def installed_ids(self) -> list[str]:
        """Ids of installed middleware, outermost first."""
        return self.ids("installed", "started", "stopped")

    def summary(self) -> dict[str, Any]:
        """Middleware in order (outermost first) with priority and status; JSON-able."""
        return {
            "order": self.installed_ids(),
            "middleware": [state.as_dict() for state in self._items.values()],
        }

    def discover(self) -> dict[str, MiddlewareState]:
        """Read every middleware folder's manifest; any problem raises naming the manifest."""
        found = super().discover()
        self._items = dict(sorted(found.items(), key=lambda kv: (kv[1].priority, kv[0])))
        return self._items

    def build(self, settings: Any) -> list[tuple[type, dict[str, Any]]]:
        """Import and build each enabled middleware: (class, kwargs) outermost first, for the
        app's stack (`api.middleware`), which adds them; they count as installed."""
        if self._installed:
            raise RuntimeError(f"middleware from {self.directory} is already installed")
        if not self._discovered:
            self.discover()
        self._installed = True
        for state in self._ready("discovered"):
            with self._phase(state, "built"):
                self._import(state, self._build(state, settings))
        built = list(self._ready("built"))
        for state in built:
            state.status = "installed"
        logger.info("middleware installed, outermost first: %s",
                    ", ".join(state.id for state in built) or "none")
        return [self._built[state.id] for state in built]

    def install(self, app: FastAPI, settings: Any) -> list[str]:
        """`build(settings)` and add the result to `app` alone, outermost first; their ids."""
        add_outermost_first(app, self.build(settings))
        return self.installed_ids()

    async def startup(self, app: FastAPI) -> None:
        """Run `on_startup(app)` hooks outermost first; a failing hook raises naming the id."""
        for state in self._ready("installed"):
            hook = getattr(self._modules[state.id], "on_startup", None)
            with self._phase(state, "started"):
                if hook is not None:
                    await call_hook(hook, app)

    async def shutdown(self, app: FastAPI) -> None:
        """Run `on_shutdown(app)` hooks innermost first; errors are logged, the rest still run."""
        await self._stop_all(("installed", "started"), "stopped", "on_shutdown", lambda _: app)

    def _read(self, folder: Path, manifest_path: Path) -> MiddlewareState:
        manifest = load_middleware_manifest(manifest_path)
        return MiddlewareState(
            id=manifest.id, name=manifest.name, version=manifest.version, folder=folder,
            manifest_path=manifest_path, priority=manifest.priority,
            enabled_in_manifest=manifest.enabled,
            status="discovered" if manifest.enabled else "disabled")

    def _duplicate(self, item: MiddlewareState, first: MiddlewareState) -> None:
        raise MiddlewareManifestError(
            item.manifest_path,
            f"field 'id': middleware id {item.id!r} is also declared by "
            f"{first.manifest_path}; rename one of them")

    def _build(self, state: MiddlewareState, settings: Any) -> Callable[[ModuleType], None]:
        def build(module: ModuleType) -> None:
            middleware_class, kwargs = _build(module, settings)
            # The qualified name only: plugin module names carry a per-manager random token.
            state.middleware_class = middleware_class.__qualname__
            self._built[state.id] = (middleware_class, kwargs)

        return build

    def _fail(self, item: MiddlewareState, exc: Exception) -> None:
        phase = "failed to build" if item.status == "discovered" else "on_startup failed"
        hint = ("; fix it or set enabled = false in its manifest"
                if item.status == "discovered" else "")
        item.status = "failed"
        item.error = describe_error(exc)
        raise MiddlewareError(
            f"middleware {item.id!r} ({item.manifest_path}) {phase}: {item.error}{hint}"
        ) from exc


def _build(module: ModuleType, settings: Any) -> tuple[type, dict[str, Any]]:
    build = getattr(module, "build", None)
    if not callable(build):
        raise TypeError("the package must define build(settings) -> (middleware_class, kwargs)")
    result = build(settings)
    if (
        not isinstance(result, tuple)
        or len(result) != 2
        or not isinstance(result[0], type)
        or not isinstance(result[1], dict)
    ):
        raise TypeError(
            f"build(settings) returned {result!r}; return (middleware_class, kwargs_dict)"
        )
    return result[0], result[1]


def add_outermost_first(app: FastAPI, stack: list[tuple[type, dict[str, Any]]]) -> None:
    """Add `stack` (outermost first) to `app`: Starlette puts each added middleware outside
    the ones added before, so they are added innermost first."""
    for middleware_class, kwargs in reversed(stack):
        app.add_middleware(middleware_class, **kwargs)


middleware_manager = StateForwarder("middleware_manager")
