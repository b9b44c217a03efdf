"""The job kinds the core ships: `noop` (echoes its payload) and `presets.import`."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from pixsim7.backend.main.infrastructure.jobs import OUTAGES, JobKind, JobRegistry
from pixsim7.backend.main.routes.presets import MODEL_NAME, PresetCreate


class NoopPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: int = 0
    seconds: float = Field(default=0.0, ge=0, le=60)  # how long the job takes


async def noop(app: FastAPI, payload: NoopPayload) -> dict[str, Any]:
    await asyncio.sleep(payload.seconds)
    return {"value": payload.value}


class PresetImport(BaseModel):
    """A batch of generation presets; names already stored are skipped."""

    model_config = ConfigDict(extra="forbid")

    presets: list[PresetCreate] = Field(min_length=1, max_length=500)


class UnknownProvider(ValueError):
    """A preset names a provider this backend does not have."""


async def import_presets(app: FastAPI, payload: PresetImport) -> dict[str, int]:
    """Insert the presets whose names are free, in one transaction; safe to run twice."""
    known = {p.id for p in app.state.providers.list()}
    unknown = sorted({p.provider_id for p in payload.presets} - known)
    if unknown:
        raise UnknownProvider(f"unknown providers: {', '.join(unknown)}")
    model = app.state.domain_registry.model(MODEL_NAME)
    names = {p.name for p in payload.presets}
    async with app.state.db.session() as session, session.begin():
        taken = set((await session.scalars(
            select(model.name).where(model.name.in_(names)).with_for_update())).all())
        fresh = {p.name: p for p in payload.presets if p.name not in taken}
        session.add_all(model(name=p.name, provider_id=p.provider_id, operation=p.operation,
                              params=p.params) for p in fresh.values())
    return {"created": len(fresh), "skipped": len(payload.presets) - len(fresh)}


CORE_JOBS: tuple[JobKind, ...] = (
    JobKind("noop", NoopPayload, noop, "waits `seconds`, then answers with its value"),
    JobKind("presets.import", PresetImport, import_presets,
            "stores a batch of generation presets, skipping names already taken",
            retry_on=OUTAGES),
)


def job_registry() -> JobRegistry:
    """A new registry holding the core kinds, open: feature plugins add theirs, then startup
    locks it (`app.state.job_registry`)."""
    return JobRegistry(CORE_JOBS)
