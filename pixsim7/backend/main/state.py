"""What a started app holds on `app.state`: every key, its type, and the one place that writes
it. Startup steps are handed these by parameter name (`startup.runner`), routes take them as
typed dependencies (`api.deps`), plugins find them on their context (`PluginContext`).

Nothing else is put on `app.state`: a test checks a started app against this table, and the
source against its writers.
"""

from __future__ import annotations

import typing
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from pixsim7.backend.main.infrastructure.adapters.database import Database
from pixsim7.backend.main.infrastructure.adapters.redis import RedisStatus
from pixsim7.backend.main.infrastructure.adapters.shared_servers import SharedServers
from pixsim7.backend.main.infrastructure.discovery.domain_registry import DomainModelRegistry
from pixsim7.backend.main.infrastructure.discovery.middleware.manager import MiddlewareManager
from pixsim7.backend.main.infrastructure.discovery.plugins.manager import PluginManager
from pixsim7.backend.main.infrastructure.registries.behavior_registry import BehaviorRegistry
from pixsim7.backend.main.infrastructure.registries.ecs import ComponentRegistry
from pixsim7.backend.main.infrastructure.registries.events import EventBus
from pixsim7.backend.main.infrastructure.registries.events.handlers import (
    MetricsHandler,
    WebSocketHub,
)
from pixsim7.backend.main.infrastructure.registries.jobs import JobRegistry
from pixsim7.backend.main.infrastructure.registries.providers import ProviderRegistry
from pixsim7.backend.main.shared.config import Settings


class Readiness(Protocol):
    """What `app.state.readiness` offers (`api.health.ReadinessChecker`, made above here)."""

    status: str | None

    def dependencies(self) -> Awaitable[dict[str, str]]: ...

    def forget(self) -> None: ...

    def summary(self) -> dict[str, Any]: ...


class Metrics(Protocol):
    """What `app.state.metrics` offers (`api.metrics.AppMetrics`, made above here)."""

    registry: CollectorRegistry


class Timeline(Protocol):
    """What `app.state.startup` offers (`startup.timeline.StartupTimeline`, made above here)."""

    records: list[Any]
    profile: str | None

    def status(self, step: str, phase: str = ...) -> str | None: ...

    def summary(self) -> dict[str, Any]: ...


Lifecycle = Literal["starting", "ready", "stopping", "stopped"]
CREATE_APP = "main.create_app"
RUNNER = "startup.runner.run_plan"


@dataclass(frozen=True)
class Resource:
    """One key of `app.state`. `type` is a class (checked when a step provides the resource),
    a Literal, or for what is made above this module the Protocol it meets (those two are not
    checked); `writer` is the one place that sets it: `step:<name>` for a startup step's
    result (the runner publishes it), else a function."""

    type: Any
    doc: str
    writer: str

    @property
    def checkable(self) -> bool:
        """Whether `type` is a class or union to check values and annotations against."""
        return not (getattr(self.type, "_is_protocol", False)
                    or typing.get_origin(self.type) is Literal)


def _step(name: str) -> str:
    return f"step:{name}"


RESOURCES: dict[str, Resource] = {
    # Written while building the app, before any step runs.
    "app": Resource(FastAPI, "the app being started (given to steps, not on app.state)",
                    CREATE_APP),
    "settings": Resource(Settings, "the settings in use: as given to create_app, with the "
                                   "embedded servers' URLs once they started (the "
                                   "embedded_services step replaces them)", CREATE_APP),
    "profile": Resource(str, "the startup profile's name (`api`, `worker`)", CREATE_APP),
    "readiness": Resource(Readiness, "the /ready checks and their cache", CREATE_APP),
    "metrics": Resource(Metrics, "the app's Prometheus registry", CREATE_APP),
    "middleware_manager": Resource(MiddlewareManager, "middleware installed while building",
                                   "main.create_app (the build step `middleware`)"),
    "app_id": Resource(str, "the id the app's milestone records carry",
                       "startup.timeline.app_id"),
    "startup": Resource(Timeline, "the steps the app ran, with status and timing",
                        "startup.timeline.startup_timeline"),
    "lifecycle": Resource(Lifecycle, "`starting`, `ready`, `stopping` or `stopped`", RUNNER),
    # Provided by the startup steps, published by the runner under the same name.
    "admin_token": Resource(str | None, "the admin API's token; None: the admin API is off",
                            _step("settings")),
    "embedded": Resource(SharedServers, "the embedded servers this app uses, by service",
                         _step("embedded_services")),
    "domain_registry": Resource(DomainModelRegistry, "the domain model packages",
                                _step("domain_registry")),
    "db": Resource(Database, "the database, its schema created", _step("database")),
    "redis": Resource(RedisStatus, "the Redis client and whether it answers", _step("redis")),
    "providers": Resource(ProviderRegistry, "the generation providers", _step("providers")),
    "event_bus": Resource(EventBus, "the in-process event bus", _step("event_handlers")),
    "ws_hub": Resource(WebSocketHub, "the event WebSocket listeners", _step("event_handlers")),
    "event_metrics": Resource(MetricsHandler, "event counts", _step("event_handlers")),
    "ecs_registry": Resource(ComponentRegistry, "the ECS components", _step("ecs_components")),
    "behavior_registry": Resource(BehaviorRegistry, "conditions and effects plugins register",
                                  _step("plugins")),
    "job_registry": Resource(JobRegistry, "the background job kinds", _step("plugins")),
    "plugin_manager": Resource(PluginManager, "the feature plugins", _step("plugins")),
    "routes_manager": Resource(PluginManager, "the route plugins", _step("plugins")),
}

class AppState:
    """What an editor completes on `state_of(app)`: the table's keys with their types (a key
    not set yet reads as None)."""

    settings: Settings
    profile: str
    readiness: Readiness
    metrics: Metrics
    middleware_manager: MiddlewareManager | None
    app_id: str
    startup: Timeline
    lifecycle: Lifecycle
    admin_token: str | None
    embedded: SharedServers | None
    domain_registry: DomainModelRegistry | None
    db: Database | None
    redis: RedisStatus | None
    providers: ProviderRegistry | None
    event_bus: EventBus | None
    ws_hub: WebSocketHub | None
    event_metrics: MetricsHandler | None
    ecs_registry: ComponentRegistry | None
    behavior_registry: BehaviorRegistry | None
    job_registry: JobRegistry | None
    plugin_manager: PluginManager | None
    routes_manager: PluginManager | None


class StateView:
    """`app.state` read through the table: a declared key the app has not set (yet) reads as
    None, an undeclared one is an AttributeError naming the table."""

    __slots__ = ("_state",)

    def __init__(self, app: FastAPI) -> None:
        object.__setattr__(self, "_state", app.state)

    def __getattr__(self, name: str) -> Any:
        if name not in RESOURCES or name == "app":
            raise AttributeError(f"app.state has no declared key {name!r}; the keys are "
                                 "declared in pixsim7.backend.main.state.RESOURCES")
        return getattr(object.__getattribute__(self, "_state"), name, None)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("app.state is written by each key's one writer (state.RESOURCES)")


def state_of(app: FastAPI) -> AppState:
    """A typed, read-only view of `app.state` (absent keys read as None)."""
    return StateView(app)  # type: ignore[return-value]
