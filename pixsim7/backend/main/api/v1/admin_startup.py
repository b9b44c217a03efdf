"""GET /api/v1/admin/startup: the startup timeline (each step, policy, status, duration);
`?format=trace` gives it as Chrome Trace Event JSON (ui.perfetto.dev, chrome://tracing)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query

from pixsim7.backend.main.api.deps import State
from pixsim7.backend.main.api.security import require_admin
from pixsim7.backend.main.shared.paths import ADMIN_PREFIX
from pixsim7.backend.main.startup.trace import trace_events

router = APIRouter(prefix=ADMIN_PREFIX, dependencies=[Depends(require_admin)], tags=["admin"])


@router.get("/startup")
async def startup_timeline(state: State, format: Literal["timeline", "trace"] = Query(
        "timeline", description="`trace`: Chrome Trace Event JSON")) -> dict[str, Any]:
    if format == "trace":
        return trace_events(state.startup)
    return {"lifecycle": state.lifecycle or "starting", **state.startup.summary()}
