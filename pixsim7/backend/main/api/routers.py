"""The core endpoints, included in one place: liveness, readiness and health, metrics, the admin
API and the events WebSocket. Route plugins (`routes/`) mount beside them at startup."""

from __future__ import annotations

from fastapi import FastAPI

from pixsim7.backend.main.api import events, health, metrics
from pixsim7.backend.main.api.v1 import admin_plugins, admin_startup, admin_workers

CORE_ROUTERS = (health.router, metrics.router, admin_plugins.router, admin_startup.router,
                admin_workers.router, events.router)


def include_core_routers(app: FastAPI) -> None:
    """Every core endpoint on `app`, in the order above."""
    for router in CORE_ROUTERS:
        app.include_router(router)
