"""GET /api/v1/admin/startup: the startup timeline (each step, policy, status, duration)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from pixsim7.backend.main.api.security import require_admin

router = APIRouter(prefix="/api/v1/admin", dependencies=[Depends(require_admin)], tags=["admin"])


@router.get("/startup")
async def startup_timeline(request: Request) -> dict[str, Any]:
    state = request.app.state
    return {"lifecycle": getattr(state, "lifecycle", "starting"), **state.startup.summary()}
