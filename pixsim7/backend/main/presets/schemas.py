"""What a preset is to its clients: the body that creates one and the stored preset."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pixsim7.backend.main.shared.json_values import UnsafeJSON, check_json_value

# The domain model (in the `core` domain package) the presets are stored with.
MODEL_NAME = "GenerationPreset"


class PresetCreate(BaseModel):
    """A preset to store: the body of POST /api/v1/presets and an item of an import."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    provider_id: str = Field(min_length=1, max_length=64)
    operation: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name", "provider_id", "operation", "params")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        # Whatever is stored must list again: PostgreSQL and the JSON encoder refuse the rest.
        try:
            check_json_value(value)
        except UnsafeJSON as exc:
            where = "/".join(map(str, exc.as_error(())["loc"])) or "top level"
            raise ValueError(f"{exc.msg} (at {where})") from None
        return value


class PresetOut(BaseModel):
    """A stored preset."""

    id: int
    name: str
    provider_id: str
    operation: str
    params: dict[str, Any]
    created_at: datetime | None = None
