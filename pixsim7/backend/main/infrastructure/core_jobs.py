"""The job kinds the core ships: `noop` (echoes its payload) and `presets.import`."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.dialects.postgresql import insert as pg_insert

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
    """Insert the presets whose names are free, in one statement; safe to run twice, also at
    the same time: a name another import is inserting right now is waited for, then skipped."""
    known = {p.id for p in app.state.providers.list()}
    unknown = sorted({p.provider_id for p in payload.presets} - known)
    if unknown:
        raise UnknownProvider(f"unknown providers: {', '.join(unknown)}")
    table = app.state.domain_registry.model(MODEL_NAME).__table__
    # The first of each name in the batch wins, as when the batch is stored one by one.
    fresh = {p.name: p for p in reversed(payload.presets)}
    rows = [{"name": p.name, "provider_id": p.provider_id, "operation": p.operation,
             "params": p.params} for p in reversed(fresh.values())]
    statement = (pg_insert(table).values(rows)
                 .on_conflict_do_nothing(index_elements=[table.c["name"]])
                 .returning(table.c["name"]))
    async with app.state.db.session() as session, session.begin():
        created = len((await session.execute(statement)).all())
    return {"created": created, "skipped": len(payload.presets) - created}


CORE_JOBS: tuple[JobKind, ...] = (
    # For tests and smoke checks: it only occupies a worker, so production does not offer it.
    JobKind("noop", NoopPayload, noop, "waits `seconds`, then answers with its value",
            debug_only=True),
    JobKind("presets.import", PresetImport, import_presets,
            "stores a batch of generation presets, skipping names already taken",
            retry_on=OUTAGES),
)


def job_registry() -> JobRegistry:
    """A new registry holding the core kinds, open: feature plugins add theirs, then startup
    locks it (`app.state.job_registry`)."""
    return JobRegistry(CORE_JOBS)
