"""GET /api/v1/admin/plugins: plugin, behavior registry and middleware status for operators."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from pixsim7.backend.main.api.deps import State
from pixsim7.backend.main.api.security import require_admin
from pixsim7.backend.main.shared.paths import ADMIN_PREFIX

router = APIRouter(prefix=ADMIN_PREFIX, tags=["admin"], dependencies=[Depends(require_admin)])


def _summary(component: Any) -> Any:
    # A component that never started is reported as absent rather than failing the whole view.
    return None if component is None else component.summary()


@router.get("/plugins")
async def plugins_status(state: State) -> dict[str, Any]:
    """Feature and route plugins, the behavior registry and middleware, with error messages."""
    return {
        "feature": _summary(state.plugin_manager),
        "route": _summary(state.routes_manager),
        "behavior_registry": _summary(state.behavior_registry),
        "middleware": _summary(state.middleware_manager),
    }
