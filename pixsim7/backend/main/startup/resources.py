"""The resources startup steps hand each other, by name, with their types.

A step's parameter named like a resource must carry its type; what a step provides is checked
against it at run time. Each resource a step provides is published on `app.state` under the
same name. `app` is the app being started; the other given ones are what building it set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from pixsim7.backend.main.infrastructure.database import Database
from pixsim7.backend.main.infrastructure.domain_registry import DomainModelRegistry
from pixsim7.backend.main.infrastructure.ecs import ComponentRegistry
from pixsim7.backend.main.infrastructure.events import EventBus
from pixsim7.backend.main.infrastructure.events.handlers import MetricsHandler, WebSocketHub
from pixsim7.backend.main.infrastructure.jobs import JobRegistry
from pixsim7.backend.main.infrastructure.middleware.manager import MiddlewareManager
from pixsim7.backend.main.infrastructure.plugins.behavior_registry import BehaviorRegistry
from pixsim7.backend.main.infrastructure.plugins.manager import PluginManager
from pixsim7.backend.main.infrastructure.providers import ProviderRegistry
from pixsim7.backend.main.infrastructure.redis import RedisStatus
from pixsim7.backend.main.infrastructure.shared_servers import SharedServers
from pixsim7.backend.main.shared.config import Settings


@dataclass(frozen=True)
class Resource:
    type: Any
    doc: str


RESOURCES: dict[str, Resource] = {
    "app": Resource(FastAPI, "the app being started (given)"),
    "settings": Resource(Settings, "the settings in use: as given to create_app, with the "
                                   "embedded servers' URLs once they started"),
    "middleware_manager": Resource(MiddlewareManager, "middleware installed while building"),
    "admin_token": Resource(str | None, "the admin API's token; None: the admin API is off"),
    "embedded": Resource(SharedServers, "the embedded servers this app uses, by service"),
    "domain_registry": Resource(DomainModelRegistry, "the domain model packages"),
    "db": Resource(Database, "the database, its schema created"),
    "redis": Resource(RedisStatus, "the Redis client and whether it answers"),
    "providers": Resource(ProviderRegistry, "the generation providers"),
    "event_bus": Resource(EventBus, "the in-process event bus"),
    "ws_hub": Resource(WebSocketHub, "the event WebSocket listeners"),
    "event_metrics": Resource(MetricsHandler, "event counts"),
    "ecs_registry": Resource(ComponentRegistry, "the ECS components"),
    "behavior_registry": Resource(BehaviorRegistry, "conditions and effects plugins register"),
    "job_registry": Resource(JobRegistry, "the background job kinds"),
    "plugin_manager": Resource(PluginManager, "the feature plugins"),
    "routes_manager": Resource(PluginManager, "the route plugins"),
}
