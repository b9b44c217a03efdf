"""Discovery, dependency ordering, loading and enabling of one folder of plugins.

Usage, inside the app's lifespan::

    manager = PluginManager("feature", settings.feature_plugins_dir,
                            fail_fast=settings.plugin_fail_fast)
    manager.discover()
    await manager.load_all(context_factory_from_app(app))
    await manager.enable_all(app, job_registry)
    ...
    await manager.disable_all()

Each failure is recorded on the plugin's `PluginState`; a required plugin's failure, or any
failure while `fail_fast` is on, raises `PluginStartupError` instead of continuing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, FastAPI
from starlette.routing import BaseRoute

from pixsim7.backend.main.infrastructure.discovery.folder_manager import (
    FolderItem,
    ManifestFolderManager,
)
from pixsim7.backend.main.infrastructure.discovery.manifests import (
    ManifestError,
    dependency_cycles,
    dependency_order,
)
from pixsim7.backend.main.infrastructure.discovery.package_loader import call_hook, describe_error
from pixsim7.backend.main.infrastructure.registries.jobs import JobRegistry
from pixsim7.backend.main.shared.paths import API_V1, FEATURE_PLUGINS_PREFIX

from .contents import check_module, describe_routes, job_kinds
from .context import ContextFactory, PluginContext
from .manifest import (
    PLUGIN_KINDS,
    JobDeclaration,
    PluginManifestError,
    load_manifest,
    read_toml,
)

logger = logging.getLogger("pixsim7.plugins")

PluginStatus = Literal["discovered", "loaded", "enabled", "disabled", "failed"]

# The setting that points at each kind's folder, for error messages.
DIRECTORY_SETTINGS = {"feature": "feature_plugins_dir", "route": "route_plugins_dir"}


class PluginStartupError(RuntimeError):
    """A plugin failure that stops startup: a required plugin, or any plugin under fail-fast."""

    def __init__(
        self,
        message: str,
        *,
        plugin_id: str | None = None,
        manifest_path: Path | None = None,
        cause: str | None = None,
    ) -> None:
        super().__init__(message)
        self.plugin_id = plugin_id
        self.manifest_path = manifest_path
        self.cause = cause


class PluginDependencyError(RuntimeError):
    """A plugin cannot load because of its dependencies (missing, failed, disabled, cyclic)."""


@dataclass
class PluginState(FolderItem):
    """What the manager knows about one plugin; `error` is `ExceptionClass: message`."""

    status: PluginStatus = "discovered"
    kind: str = "feature"
    required: bool = False
    enabled_in_manifest: bool = True
    dependencies: tuple[str, ...] = ()
    routes: list[str] = field(default_factory=list)
    description: str | None = None
    prefix: str | None = None
    job_declarations: tuple[JobDeclaration, ...] = ()
    jobs: list[str] = field(default_factory=list)

    def details(self) -> dict[str, Any]:
        return {
            "required": self.required,
            "enabled_in_manifest": self.enabled_in_manifest,
            "dependencies": list(self.dependencies),
            "routes": list(self.routes),
            "jobs": list(self.jobs),
        }


class PluginManager(ManifestFolderManager[PluginState]):
    """Loads the plugins of one kind from one directory; one instance per app."""

    logger = logger

    def __init__(self, kind: str, directory: Path, *, fail_fast: bool) -> None:
        if kind not in PLUGIN_KINDS:
            raise ValueError(f"plugin kind {kind!r} is unknown; use one of {PLUGIN_KINDS}")
        super().__init__(directory, kind)
        self.kind = kind
        self.label = f"{kind} plugin"
        self.setting = DIRECTORY_SETTINGS[kind]
        self.fail_fast = bool(fail_fast)
        self._contexts: dict[str, PluginContext] = {}
        self._routes: dict[str, list[BaseRoute]] = {}
        self._loaded = False

    @property
    def plugins(self) -> dict[str, PluginState]:
        """Plugin states by id: folder order after `discover()`, load order after `load_all()`."""
        return self._items

    def context(self, plugin_id: str) -> PluginContext:
        """The context the plugin's hooks received; exists once the plugin has loaded."""
        context = self._contexts.get(plugin_id)
        if context is None:
            known = ", ".join(self._items) or "none"
            raise LookupError(
                f"{self.kind} plugin {plugin_id!r} has no context: it was not discovered or did "
                f"not load (known {self.kind} plugins: {known})"
            )
        return context

    def enabled_ids(self) -> list[str]:
        """Ids of enabled plugins, in load order."""
        return self.ids("enabled")

    def failed_ids(self) -> list[str]:
        """Ids of failed plugins, in order."""
        return self.ids("failed")

    def required_failed_ids(self) -> list[str]:
        """Ids of failed plugins whose manifest says `required = true`."""
        return [pid for pid in self.failed_ids() if self._items[pid].required]

    def summary(self) -> dict[str, Any]:
        """Kind, fail-fast flag and each plugin's status; JSON-able and deterministic."""
        return {
            "kind": self.kind,
            "fail_fast": self.fail_fast,
            "plugins": [state.as_dict() for state in self._items.values()],
        }

    async def load_all(self, context_factory: ContextFactory) -> None:
        """Import plugins in dependency order and run their `on_load(ctx)` hooks.

        `context_factory(plugin_id)` returns the `PluginContext` for one plugin; it is called
        once per plugin, and that context is passed to all of the plugin's hooks.
        """
        if self._loaded:
            raise RuntimeError(f"{self.kind} plugins in {self.directory} were already loaded")
        if not self._discovered:
            self.discover()
        self._loaded = True
        cyclic = dependency_cycles(list(self._items), {
            pid: state.dependencies for pid, state in self._items.items()})
        for group in cyclic:
            for pid in group:
                state = self._items[pid]
                if state.status != "failed":
                    self._fail(state, PluginDependencyError(
                        f"dependency cycle among plugins {', '.join(group)}; "
                        "remove one of these dependencies"))
        # Keep `plugins` in load order so summaries read top to bottom as startup happened.
        self._items = {pid: self._items[pid]
                       for pid in self._dependency_order({p for g in cyclic for p in g})}
        for state in self._ready("discovered"):
            if not state.enabled_in_manifest:
                state.status = "disabled"
                logger.info("%s plugin %s is disabled in %s", self.kind, state.id,
                            state.manifest_path)
                continue
            with self._phase(state, "loaded"):
                self._check_dependencies(state, ok_status="loaded")
                context = self._contexts[state.id] = context_factory(state.id)
                module = self._import(state, check_module)
                hook = getattr(module, "on_load", None)
                if hook is not None:
                    try:
                        await call_hook(hook, context)
                    except BaseException:
                        self._unload(state)
                        raise
                logger.debug("%s plugin %s loaded", self.kind, state.id)

    async def enable_all(self, app: FastAPI, job_registry: JobRegistry | None = None, *,
                         mount_routes: bool = True) -> None:
        """Include each loaded plugin's `router` into `app` (unless not `mount_routes`: an app
        serving no HTTP), register the job kinds its manifest declares in `job_registry`, and
        run its `on_enable(ctx)` hook.

        Route plugins mount under `/api/v1` + manifest prefix; feature plugins under
        `/api/v1/plugins/<id>` unless the manifest gives a prefix (then `/api/v1` + prefix).
        """
        if not self._loaded:
            raise RuntimeError(
                f"{self.kind} plugins in {self.directory} must be loaded (load_all) "
                "before enable_all"
            )
        for state in self._ready("loaded"):
            with self._phase(state, "enabled"):
                self._check_dependencies(state, ok_status="enabled")
                await self._enable_one(state, app if mount_routes else None, job_registry)
                logger.info("%s plugin %s %s enabled (%d routes)", self.kind, state.id,
                            state.version, len(state.routes))
        # FastAPI caches the schema on first request; plugins may have added routes since.
        app.openapi_schema = None

    async def disable_all(self) -> None:
        """Run `on_disable(ctx)` for enabled plugins in reverse order; hook errors are logged."""
        await self._stop_all(("enabled",), "disabled", "on_disable",
                             lambda state: self._contexts[state.id])

    def _read(self, folder: Path, manifest_path: Path) -> PluginState:
        manifest = load_manifest(manifest_path, self.kind)
        return PluginState(
            id=manifest.id,
            name=manifest.name,
            version=manifest.version,
            folder=folder,
            manifest_path=manifest_path,
            kind=self.kind,
            required=manifest.required,
            enabled_in_manifest=manifest.enabled,
            dependencies=manifest.dependencies,
            description=manifest.description,
            prefix=manifest.prefix,
            job_declarations=manifest.jobs,
        )

    def _unreadable(self, folder: Path, manifest_path: Path, exc: Exception) -> None:
        # Without a readable manifest the folder name is the only identity available.
        state = PluginState(
            id=folder.name, name=folder.name, version="", folder=folder,
            manifest_path=manifest_path, kind=self.kind,
            # A manifest that fails validation may still say `required = true`; honour it, so
            # a required plugin's packaging mistake stops startup instead of starting without
            # it.
            required=_declares_required(manifest_path),
        )
        if state.id in self._items:
            state.id = f"{state.id}@{folder.name}"
        self._items[state.id] = state
        self._fail(state, exc)

    def _duplicate(self, item: PluginState, first: PluginState) -> None:
        # Neither copy can be trusted to be the intended one, so the id as a whole fails.
        first.required = first.required or item.required
        self._fail(first, PluginManifestError(
            item.manifest_path,
            f"field 'id': plugin id {item.id!r} is declared by both {first.folder} "
            f"and {item.folder}; rename one of them",
        ))

    def _dependency_order(self, cyclic: set[str]) -> list[str]:
        """Stable topological order: among ready plugins, the earliest folder goes first."""
        ids = list(self._items)
        # Edges from cyclic plugins are dropped; those plugins already failed.
        order, rest = dependency_order(ids, {
            pid: [d for d in self._items[pid].dependencies if d not in cyclic] for pid in ids
        })
        # Anything left depends only on cyclic plugins via edges already dropped; keep it listed.
        return order + rest

    def _check_dependencies(self, state: PluginState, *, ok_status: str) -> None:
        for dep in state.dependencies:
            dep_state = self._items.get(dep)
            if dep_state is None:
                raise PluginDependencyError(
                    f"depends on {dep!r}, which is not installed in {self.directory}; "
                    f"add the {dep!r} plugin or remove it from dependencies"
                )
            if dep_state.status == "disabled":
                raise PluginDependencyError(
                    f"dependency {dep!r} is disabled; enable it in {dep_state.manifest_path} "
                    f"or disable {state.id!r} too"
                )
            if dep_state.status != ok_status:
                raise PluginDependencyError(f"dependency {dep!r} failed")

    async def _enable_one(self, state: PluginState, app: FastAPI | None,
                          job_registry: JobRegistry | None) -> None:
        """Mount the plugin's router, register its jobs, run `on_enable`; all or nothing."""
        module = self._modules[state.id]
        router: APIRouter | None = getattr(module, "router", None)
        try:
            if router is not None and app is not None:
                prefix = self._router_prefix(state)
                before = {id(route) for route in app.router.routes}
                app.include_router(router, prefix=prefix)
                self._routes[state.id] = [r for r in app.router.routes if id(r) not in before]
                state.routes = describe_routes(router, prefix)
            if state.job_declarations:
                if job_registry is None:
                    raise RuntimeError(f"plugin {state.id!r} declares jobs, but no job registry "
                                       "was given to enable_all")
                kinds = job_kinds(state.id, state.folder, state.manifest_path,
                                  state.job_declarations, module)
                job_registry.register_all(kinds)
                state.jobs = [kind.name for kind in kinds]
            hook = getattr(module, "on_enable", None)
            if hook is not None:
                await call_hook(hook, self._contexts[state.id])
        except Exception:
            # Take the plugin's routes and jobs back out so a failed plugin serves nothing.
            if app is not None:
                removed = {id(r) for r in self._routes.pop(state.id, [])}
                app.router.routes[:] = [r for r in app.router.routes if id(r) not in removed]
            state.routes = []
            if state.jobs and job_registry is not None:
                job_registry.unregister_owner(state.id)
                state.jobs = []
            raise

    def _router_prefix(self, state: PluginState) -> str:
        if state.prefix is not None:
            return API_V1 + state.prefix
        if self.kind == "feature":
            return f"{FEATURE_PLUGINS_PREFIX}/{state.id}"
        return API_V1

    def _fail(self, state: PluginState, exc: BaseException) -> None:
        state.status = "failed"
        state.error = describe_error(exc)
        raise_now = state.required or self.fail_fast
        # Manifest and dependency problems are fully described by their message.
        if isinstance(exc, PluginDependencyError | PluginManifestError):
            logger.error("%s plugin %s failed: %s", self.kind, state.id, state.error)
        else:
            logger.error("%s plugin %s failed: %s", self.kind, state.id, state.error, exc_info=exc)
        if not raise_now:
            return
        if state.required:
            why = "required"
            hint = "fix the plugin, or set required = false in its manifest to start without it"
        else:
            why = "optional"
            hint = (
                "fix the plugin, set enabled = false in its manifest, or set "
                "PLUGIN_FAIL_FAST=false to start without it"
            )
        raise PluginStartupError(
            f"{why} {self.kind} plugin {state.id!r} ({state.manifest_path}) failed: "
            f"{state.error}; {hint}",
            plugin_id=state.id,
            manifest_path=state.manifest_path,
            cause=state.error,
        ) from exc


def _declares_required(manifest_path: Path) -> bool:
    """Whether an invalid but readable manifest says `required = true`."""
    try:
        return read_toml(manifest_path).get("required") is True
    except ManifestError:  # not TOML at all: nothing can be read from it
        return False
