"""GET /api/v1/admin/plugins: plugin, behavior registry and middleware status for operators."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from pixsim7.backend.main.api.security import require_admin
from pixsim7.backend.main.shared.paths import ADMIN_PREFIX

router = APIRouter(prefix=ADMIN_PREFIX, tags=["admin"], dependencies=[Depends(require_admin)])


def _summary(request: Request, key: str) -> Any:
    # A component that never started is reported as absent rather than failing the whole view.
    component = getattr(request.app.state, key, None)
    return None if component is None else component.summary()


@router.get("/plugins")
async def plugins_status(request: Request) -> dict[str, Any]:
    """Feature and route plugins, the behavior registry and middleware, with error messages."""
    return {
        "feature": _summary(request, "plugin_manager"),
        "route": _summary(request, "routes_manager"),
        "behavior_registry": _summary(request, "behavior_registry"),
        "middleware": _summary(request, "middleware_manager"),
    }
