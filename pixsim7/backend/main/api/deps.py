"""Typed dependencies on the serving app's state, one per resource of `state.RESOURCES`.

    from pixsim7.backend.main.api.deps import Db, Providers

    @router.get("")
    async def list_things(db: Db, providers: Providers) -> ...

A route that takes one gets the app's object, typed; when the app has none (its step failed
or did not run) or it is down, the request answers 503 with `Retry-After`, naming what is
missing, before the route runs. `resource(name)` makes one for any key of the table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from pixsim7.backend.main.infrastructure.adapters.database import Database
from pixsim7.backend.main.infrastructure.adapters.redis import RedisStatus
from pixsim7.backend.main.infrastructure.discovery.domain_registry import DomainModelRegistry
from pixsim7.backend.main.infrastructure.registries.behavior_registry import BehaviorRegistry
from pixsim7.backend.main.infrastructure.registries.ecs import ComponentRegistry
from pixsim7.backend.main.infrastructure.registries.events import EventBus
from pixsim7.backend.main.infrastructure.registries.jobs import JobRegistry
from pixsim7.backend.main.infrastructure.registries.providers import ProviderRegistry
from pixsim7.backend.main.shared.config import Settings
from pixsim7.backend.main.state import RESOURCES, AppState, state_of

RETRY_AFTER_S = 1


def _unavailable(detail: str) -> HTTPException:
    """A 503 that tells the client when to try again."""
    return HTTPException(status_code=503, detail=detail,
                         headers={"Retry-After": str(RETRY_AFTER_S)})


def resource(name: str, *, up: Callable[[Any], bool] | None = None,
             detail: str | None = None, optional: bool = False) -> Callable[[Request], Any]:
    """A dependency giving the serving app's `name` (a key of `state.RESOURCES`): 503 with
    Retry-After when the app has none or `up(value)` is false; with `optional`, None
    instead of the 503 when the app has none."""
    if name not in RESOURCES or name == "app":
        raise KeyError(f"{name!r} is not a key of app.state; the keys are declared in "
                       "pixsim7.backend.main.state.RESOURCES")
    missing = detail or f"the app has no {name} ({RESOURCES[name].doc}): try again later"

    def dependency(request: Request) -> Any:
        value = getattr(request.app.state, name, None)  # the one read; the table says it
        if value is None:
            if optional:
                return None
            raise _unavailable(missing)
        if up is not None and not up(value):
            raise _unavailable(missing)
        return value

    dependency.__name__ = dependency.__qualname__ = f"app_state_{name}"
    return dependency


def app_state(request: Request) -> AppState:
    """The serving app's state, read through the table (`state.state_of`)."""
    return state_of(request.app)


State = Annotated[AppState, Depends(app_state)]
AppSettings = Annotated[Settings, Depends(resource("settings"))]
Db = Annotated[Database, Depends(resource("db"))]
DomainModels = Annotated[DomainModelRegistry, Depends(resource("domain_registry"))]
Providers = Annotated[ProviderRegistry, Depends(resource("providers"))]
Events = Annotated[EventBus, Depends(resource("event_bus"))]
Jobs = Annotated[JobRegistry, Depends(resource("job_registry"))]
Behaviors = Annotated[BehaviorRegistry, Depends(resource("behavior_registry"))]
Components = Annotated[ComponentRegistry, Depends(resource("ecs_registry"))]
# None when the app has no Redis step result; a route that reports the state itself.
MaybeRedis = Annotated[RedisStatus | None, Depends(resource("redis", optional=True))]
