"""The `presets.import` job: a batch of presets stored in one statement."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.dialects.postgresql import insert as pg_insert

from pixsim7.backend.main.infrastructure.registries.jobs import JobKind
from pixsim7.backend.main.presets.schemas import MODEL_NAME, PresetCreate


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


IMPORT_JOB = JobKind("presets.import", PresetImport, import_presets,
                     "stores a batch of generation presets, skipping names already taken",
                     retry_on_outage=True)
