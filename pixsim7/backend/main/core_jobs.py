"""The job kinds the core ships: `noop` (echoes its payload) and `presets.import`."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from pixsim7.backend.main.infrastructure.registries.jobs import JobKind, JobRegistry
from pixsim7.backend.main.presets import IMPORT_JOB


class NoopPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: int = 0
    seconds: float = Field(default=0.0, ge=0, le=60)  # how long the job takes


async def noop(app: FastAPI, payload: NoopPayload) -> dict[str, Any]:
    await asyncio.sleep(payload.seconds)
    return {"value": payload.value}


CORE_JOBS: tuple[JobKind, ...] = (
    # For tests and smoke checks: it only occupies a worker, so production does not offer it.
    JobKind("noop", NoopPayload, noop, "waits `seconds`, then answers with its value",
            debug_only=True),
    IMPORT_JOB,
)


def job_registry() -> JobRegistry:
    """A new registry holding the core kinds, open: feature plugins add theirs, then startup
    locks it (`app.state.job_registry`)."""
    return JobRegistry(CORE_JOBS)
