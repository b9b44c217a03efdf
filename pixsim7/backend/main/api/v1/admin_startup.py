"""GET /api/v1/admin/startup: the startup timeline (each step, policy, status, duration);
`?format=trace` gives it as Chrome Trace Event JSON (ui.perfetto.dev, which needs the
internet), `?format=html` as one self-contained page with the plan (opens offline)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from pixsim7.backend.main.api.deps import State
from pixsim7.backend.main.api.security import require_admin
from pixsim7.backend.main.shared.paths import ADMIN_PREFIX
from pixsim7.backend.main.startup.page import app_page
from pixsim7.backend.main.startup.trace import trace_events

router = APIRouter(prefix=ADMIN_PREFIX, dependencies=[Depends(require_admin)], tags=["admin"])


@router.get("/startup", response_model=dict[str, Any], responses={200: {"content": {
    "text/html": {"schema": {"type": "string"}}}, "description": "the timeline; with "
    "`format=html`, a page"}})
async def startup_timeline(
    request: Request, state: State, format: Literal["timeline", "trace", "html"] = Query(
        "timeline", description="`trace`: Chrome Trace Event JSON; `html`: a self-contained "
                                "page of the timeline and the plan")) -> Any:
    if format == "trace":
        return trace_events(state.startup)
    if format == "html":
        return HTMLResponse(app_page(request.app))
    return {"lifecycle": state.lifecycle or "starting", **state.startup.summary()}
