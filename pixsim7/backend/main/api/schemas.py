"""Request and response schemas of the route plugins that ship with the core (`routes/jobs`,
`routes/providers`), like `presets.schemas` for `routes/presets`.

Each app runs its route plugins' modules afresh (two apps share no module), so a model class
defined there would be built again, validator and serializer, for every app. These classes are
schemas nobody changes: defined here once per process, every app's plugin modules use them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

# Jobs (`routes/jobs`).


class JobIn(BaseModel):
    kind: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_.]+$")
    payload: dict[str, Any] = Field(default_factory=dict)


# The body POST /api/v1/jobs takes, for its OpenAPI operation (the route reads the body itself).
JOB_IN_SCHEMA = JobIn.model_json_schema()


class JobAccepted(BaseModel):
    id: str
    kind: str
    status: Literal["queued"] = "queued"


class JobState(BaseModel):
    id: str
    status: Literal["queued", "in_progress", "complete", "failed", "not_found"]
    tries: int | None = None
    result: Any = None
    error: str | None = None


class JobKindOut(BaseModel):
    kind: str
    description: str
    owner: str = Field(description='"core", or the id of the feature plugin declaring the kind')
    payload_schema: dict[str, Any]


class JobsStatus(BaseModel):
    background_jobs: Literal["enabled", "disabled"]
    reason: str | None = None
    queued: int | None = None


# Providers (`routes/providers`).


class ProviderOut(BaseModel):
    """One provider as the API shows it."""

    id: str
    name: str
    operations: list[str]
