"""Middleware plugins: folders with a manifest and a `build(settings)` returning (class, kwargs).

Usage when building the app (before it starts; Starlette refuses middleware afterwards)::

    manager = MiddlewareManager(settings.middleware_dir)
    manager.discover()
    manager.install(app, settings)
    app.state.middleware_manager = manager
    # in the lifespan:
    await manager.startup(app)
    ...
    await manager.shutdown(app)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from pixsim7.backend.main.infrastructure.manifests import (
    MANIFEST_FILENAME,
    ManifestError,
    load_manifest,
    manifest_folders,
)
from pixsim7.backend.main.infrastructure.plugins.loader import (
    call_hook,
    describe_error,
    load_package,
    namespace_token,
    unload_namespace,
    unload_package,
)
from pixsim7.backend.main.infrastructure.plugins.manifest import PLUGIN_ID_PATTERN
from pixsim7.backend.main.shared.app_context import StateForwarder

logger = logging.getLogger("pixsim7.middleware")

MiddlewareStatus = Literal["discovered", "disabled", "installed", "started", "stopped", "failed"]


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
class MiddlewareState:
    """One middleware plugin as the manager sees it."""

    id: str
    name: str
    version: str
    priority: int
    enabled_in_manifest: bool
    folder: Path
    manifest_path: Path
    status: MiddlewareStatus = "discovered"
    error: str | None = None
    middleware_class: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able view used by `MiddlewareManager.summary()`."""
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "priority": self.priority,
            "status": self.status,
            "middleware_class": self.middleware_class,
            "error": self.error,
        }


@dataclass
class _Runtime:
    module: ModuleType | None = None


def load_middleware_manifest(path: Path) -> MiddlewareManifest:
    """Read and validate one middleware manifest."""
    return load_manifest(path, MiddlewareManifest, MiddlewareManifestError)


class MiddlewareManager:
    """Installs middleware plugins so that the lowest priority number runs outermost."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._states: dict[str, MiddlewareState] = {}
        self._runtime: dict[str, _Runtime] = {}
        self._token = namespace_token("middleware")
        self._discovered = False
        self._installed = False

    @property
    def middleware(self) -> dict[str, MiddlewareState]:
        """States by id, ordered outermost first (priority, then id)."""
        return self._states

    def get(self, middleware_id: str) -> MiddlewareState | None:
        """The state of `middleware_id`, or None."""
        return self._states.get(middleware_id)

    def installed_ids(self) -> list[str]:
        """Ids of installed middleware, outermost first."""
        live = ("installed", "started", "stopped")
        return [mid for mid, s in self._states.items() if s.status in live]

    def summary(self) -> dict[str, Any]:
        """Middleware in order (outermost first) with priority and status; JSON-able."""
        return {
            "order": self.installed_ids(),
            "middleware": [state.as_dict() for state in self._states.values()],
        }

    def discover(self) -> dict[str, MiddlewareState]:
        """Read every middleware folder's manifest; any problem raises naming the manifest."""
        if self._discovered:
            raise RuntimeError(f"middleware in {self.directory} was already discovered")
        self._discovered = True
        found: list[MiddlewareState] = []
        # A folder with only __init__.py is a middleware missing its manifest: reported.
        for folder in manifest_folders(self.directory, "middleware_dir",
                                       markers=(MANIFEST_FILENAME, "__init__.py")):
            manifest_path = folder / MANIFEST_FILENAME
            manifest = load_middleware_manifest(manifest_path)
            for other in found:
                if other.id == manifest.id:
                    raise MiddlewareManifestError(
                        manifest_path,
                        f"field 'id': middleware id {manifest.id!r} is also declared by "
                        f"{other.manifest_path}; rename one of them",
                    )
            found.append(
                MiddlewareState(
                    id=manifest.id,
                    name=manifest.name,
                    version=manifest.version,
                    priority=manifest.priority,
                    enabled_in_manifest=manifest.enabled,
                    folder=folder,
                    manifest_path=manifest_path,
                    status="discovered" if manifest.enabled else "disabled",
                )
            )
        found.sort(key=lambda s: (s.priority, s.id))
        self._states = {state.id: state for state in found}
        return self._states

    def install(self, app: FastAPI, settings: Any) -> list[str]:
        """Import, build and add each enabled middleware to `app`; returns ids outermost first."""
        if self._installed:
            raise RuntimeError(f"middleware from {self.directory} is already installed")
        if not self._discovered:
            self.discover()
        self._installed = True
        built: list[tuple[MiddlewareState, type, dict[str, Any]]] = []
        for state in self._states.values():
            if state.status == "disabled":
                continue
            module_name = f"{self._token}_{state.id}"
            try:
                module = load_package(state.folder, module_name)
                self._runtime[state.id] = _Runtime(module=module)
                middleware_class, kwargs = self._build(module, settings)
            except Exception as exc:
                unload_package(module_name)
                self._runtime.pop(state.id, None)
                state.status = "failed"
                state.error = describe_error(exc)
                raise MiddlewareError(
                    f"middleware {state.id!r} ({state.manifest_path}) failed to build: "
                    f"{state.error}; fix it or set enabled = false in its manifest"
                ) from exc
            # The qualified name only: plugin module names carry a per-manager random token.
            state.middleware_class = middleware_class.__qualname__
            built.append((state, middleware_class, kwargs))
        # Starlette puts each added middleware outside the ones added before, so the outermost
        # (lowest priority number) must be added last.
        for state, middleware_class, kwargs in reversed(built):
            app.add_middleware(middleware_class, **kwargs)
            state.status = "installed"
        ids = [state.id for state, _, _ in built]
        logger.info("middleware installed, outermost first: %s", ", ".join(ids) or "none")
        return ids

    async def startup(self, app: FastAPI) -> None:
        """Run `on_startup(app)` hooks outermost first; a failing hook raises naming the id."""
        for state in self._states.values():
            if state.status != "installed":
                continue
            hook = getattr(self._runtime[state.id].module, "on_startup", None)
            if hook is not None:
                try:
                    await call_hook(hook, app)
                except Exception as exc:
                    state.status = "failed"
                    state.error = describe_error(exc)
                    raise MiddlewareError(
                        f"middleware {state.id!r} ({state.manifest_path}) on_startup failed: "
                        f"{state.error}"
                    ) from exc
            state.status = "started"

    async def shutdown(self, app: FastAPI) -> None:
        """Run `on_shutdown(app)` hooks innermost first; errors are logged, the rest still run."""
        for state in reversed(list(self._states.values())):
            if state.status not in ("installed", "started"):
                continue
            hook = getattr(self._runtime[state.id].module, "on_shutdown", None)
            state.status = "stopped"
            if hook is None:
                continue
            try:
                await call_hook(hook, app)
            except Exception as exc:
                state.error = describe_error(exc)
                logger.exception(
                    "middleware %s (%s): on_shutdown raised; continuing with the others",
                    state.id,
                    state.manifest_path,
                )
        unload_namespace(self._token)

    def _build(self, module: ModuleType, settings: Any) -> tuple[type, dict[str, Any]]:
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


middleware_manager = StateForwarder("middleware_manager")
