"""The `plugins` step: feature plugins, then route plugins, discovered, loaded in dependency
order and enabled, with the behavior and job registries they fill; `plugins_step` makes it for
a profile's plugin kinds (the worker loads no route plugins)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from pixsim7.backend.main.core_jobs import job_registry
from pixsim7.backend.main.infrastructure.adapters.database import Database
from pixsim7.backend.main.infrastructure.adapters.redis import RedisStatus
from pixsim7.backend.main.infrastructure.discovery.plugins.context import context_factory
from pixsim7.backend.main.infrastructure.discovery.plugins.manager import (
    DIRECTORY_SETTINGS,
    PluginManager,
)
from pixsim7.backend.main.infrastructure.registries.behavior_registry import BehaviorRegistry
from pixsim7.backend.main.infrastructure.registries.ecs import ComponentRegistry
from pixsim7.backend.main.infrastructure.registries.events import EventBus
from pixsim7.backend.main.infrastructure.registries.jobs import JobRegistry
from pixsim7.backend.main.infrastructure.registries.providers import ProviderRegistry
from pixsim7.backend.main.shared.config import Settings
from pixsim7.backend.main.startup.runner import Policy, Step, StepOutcome


class PluginTeardownError(RuntimeError):
    """One or more plugins' on_disable raised; the others were still disabled."""


async def disable_plugins(*managers: PluginManager) -> None:
    """Disable route plugins, then feature plugins; report hooks that raised once all ran."""
    raised: list[str] = []
    for manager in reversed(managers):
        await manager.disable_all()
        raised += [pid for pid, state in manager.plugins.items()
                   if state.status == "disabled" and state.error]
    if raised:
        raise PluginTeardownError(f"on_disable raised in plugin(s): {', '.join(raised)}")


def _plugins_outcome(plugin_manager: PluginManager,
                     routes_manager: PluginManager | None = None) -> StepOutcome:
    managers = [m for m in (plugin_manager, routes_manager) if m is not None]
    failed = [pid for manager in managers for pid in manager.failed_ids()]
    enabled = sum(len(manager.enabled_ids()) for manager in managers)
    return StepOutcome(status="degraded" if failed else "ok",
                       counts={"enabled": enabled, "failed": failed})


# The resource each plugin kind's manager is published as.
MANAGER_RESOURCES = {"feature": "plugin_manager", "route": "routes_manager"}


async def load_plugins(app: FastAPI, settings: Settings, db: Database, event_bus: EventBus,
                       providers: ProviderRegistry, ecs_registry: ComponentRegistry,
                       redis: RedisStatus | None = None, *,
                       kinds: tuple[str, ...] = ("feature", "route"), mount_routes: bool = True,
                       ) -> tuple[BehaviorRegistry, JobRegistry, *tuple[PluginManager, ...]]:
    """The behavior and job registries, and one manager per plugin kind in `kinds` whose
    plugins are discovered, loaded in dependency order and enabled: their routers mounted
    (when `mount_routes`), their manifests' job kinds registered, their hooks run."""
    behavior_registry, jobs = BehaviorRegistry(), job_registry()
    contexts = context_factory(
        app, settings, behavior_registry=behavior_registry, ecs_registry=ecs_registry,
        event_bus=event_bus, providers=providers, db=db,
        redis=redis.client if redis is not None else None)
    managers: list[PluginManager] = []
    try:
        for kind in kinds:
            manager = PluginManager(kind, Path(getattr(settings, DIRECTORY_SETTINGS[kind])),
                                    fail_fast=bool(settings.plugin_fail_fast))
            managers.append(manager)
            manager.discover()
            await manager.load_all(contexts)
            await manager.enable_all(app, jobs, mount_routes=mount_routes)
    except BaseException:
        # A failed step tears down its own partial work: disable what was enabled.
        for manager in reversed(managers):
            await manager.disable_all()
        raise
    return (behavior_registry, jobs, *managers)


def plugins_step(kinds: tuple[str, ...], *, mount_routes: bool) -> Step:
    """The `plugins` step of a profile loading `kinds` (feature plugins, then route plugins),
    mounting their routers only in an app that serves HTTP."""

    async def teardown(plugin_manager: PluginManager,
                       routes_manager: PluginManager | None = None) -> None:
        await disable_plugins(*(m for m in (plugin_manager, routes_manager) if m is not None))

    managers = tuple(MANAGER_RESOURCES[kind] for kind in kinds)
    return Step("plugins", load_plugins, Policy.PER_PLUGIN, teardown, _plugins_outcome,
                ("behavior_registry", "job_registry", *managers)).with_options(
        kinds=kinds, mount_routes=mount_routes)


API_PLUGIN_KINDS = ("feature", "route")
setup_plugins = plugins_step(API_PLUGIN_KINDS, mount_routes=True)
