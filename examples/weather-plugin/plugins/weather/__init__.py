"""Forecasts: GET /api/v1/plugins/weather/{city} reads the database; the job
`weather.forecast` runs in the worker."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pixsim7.backend.main.api.deps import Db
from pixsim7.backend.main.infrastructure.database import Database
from pixsim7.backend.main.state import state_of
from pydantic import BaseModel, Field
from sqlalchemy import text

SKIES = ("sunny", "cloudy", "rainy")

router = APIRouter(tags=["weather"])


def sky(city: str, presets: int) -> str:
    return SKIES[(len(city) + presets) % len(SKIES)]


async def presets_stored(db: Database) -> int:
    async with db.autocommit() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM generation_presets")))


@router.get("/{city}")
async def forecast_for(city: str, db: Db) -> dict[str, Any]:
    """Today's sky over `city` (503 with Retry-After while the app has no database)."""
    return {"city": city, "sky": sky(city, await presets_stored(db))}


class ForecastRequest(BaseModel):
    city: str = Field(min_length=1, max_length=64)


async def forecast(app: Any, payload: ForecastRequest) -> dict[str, Any]:
    """The `weather.forecast` job, in the worker's own app."""
    db = state_of(app).db
    if db is None:  # not in a started worker: its database step is required
        raise RuntimeError("the weather.forecast job needs the app's database")
    return {"city": payload.city, "sky": sky(payload.city, await presets_stored(db))}
