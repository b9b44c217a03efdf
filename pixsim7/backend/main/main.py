"""The FastAPI entry point: `create_app(settings)`, its `lifespan`, and a lazily built `app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from pixsim7.backend.main.api import health, metrics
from pixsim7.backend.main.api.errors import install_error_handlers
from pixsim7.backend.main.api.middleware import inner_middleware, install_middleware
from pixsim7.backend.main.api.routers import include_core_routers
from pixsim7.backend.main.api.security import require_admin_prefix
from pixsim7.backend.main.shared.config import Settings, get_settings
from pixsim7.backend.main.shared.logs import configure_logging
from pixsim7.backend.main.startup import (
    PROFILES,
    StepOutcome,
    run_build_step,
    run_plan,
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Run the app's startup plan; on the way out, tear down what started, in reverse."""
    profile = PROFILES[app.state.profile]
    async with run_plan(app, profile.plan, profile.name):
        yield


def create_app(settings: Settings | None = None, *, profile: str = "api") -> FastAPI:
    """Build an app that owns all its registries and managers (on `app.state`).

    A failure while building raises StartupAborted with the timeline so far.
    """
    if profile not in PROFILES:
        raise ValueError(
            f"unknown profile {profile!r}; use one of {', '.join(sorted(PROFILES))}")
    settings = settings or get_settings()
    serves_http = PROFILES[profile].serves_http
    # An app serving no HTTP (the worker's) has no routes at all, FastAPI's own docs included.
    docs = {} if serves_http else {"openapi_url": None, "docs_url": None, "redoc_url": None}
    app = FastAPI(
        title=settings.app_name,
        version=settings.app_version,
        lifespan=lifespan,
        # Every route under the admin prefix, plugin routes included, needs the admin token.
        dependencies=[Depends(require_admin_prefix)],
        **docs,
    )
    install_error_handlers(app)
    app.state.settings = settings
    app.state.profile = profile
    app.state.readiness = health.ReadinessChecker(app)
    app.state.metrics = metrics.AppMetrics(app)
    if not serves_http:
        return app
    # Middleware can only be added before the app serves, so it is discovered here; the
    # stack's order is written in api.middleware.
    inner = inner_middleware(settings, app.state.metrics)
    app.state.middleware_manager = run_build_step(
        app, "middleware", lambda: install_middleware(app, settings, inner),
        lambda manager: StepOutcome(counts={"middleware": len(manager.installed_ids())}))
    include_core_routers(app)
    return app


_app: FastAPI | None = None


def __getattr__(name: str) -> Any:
    # `uvicorn pixsim7.backend.main.main:app` (or any ASGI server) still works; importing
    # builds nothing. This is the app a server imports, so it sets up the process's logging
    # from LOG_LEVEL and LOG_FORMAT as the CLI does; create_app() alone never touches logging.
    global _app
    if name == "app":
        if _app is None:
            settings = get_settings()
            configure_logging(settings.log_level, settings.log_format, settings.secret_values())
            _app = create_app(settings)
        return _app
    raise AttributeError(name)
