"""Forecasts: GET /api/v1/plugins/weather/{city} reads the database; the job
`weather.forecast` runs in the worker."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import text

SKIES = ("sunny", "cloudy", "rainy")

router = APIRouter(tags=["weather"])


def sky(city: str, presets: int) -> str:
    return SKIES[(len(city) + presets) % len(SKIES)]


async def presets_stored(app: Any) -> int:
    async with app.state.db.autocommit() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM generation_presets")))


@router.get("/{city}")
async def forecast_for(city: str, request: Request) -> dict[str, Any]:
    """Today's sky over `city`."""
    return {"city": city, "sky": sky(city, await presets_stored(request.app))}


class ForecastRequest(BaseModel):
    city: str = Field(min_length=1, max_length=64)


async def forecast(app: Any, payload: ForecastRequest) -> dict[str, Any]:
    """The `weather.forecast` job, in the worker's own app."""
    return {"city": payload.city, "sky": sky(payload.city, await presets_stored(app))}
