"""Character mood: condition `friendly_mood`, built on `relationship_above` from relationships,
and the job kind `mood.evaluate` (declared in manifest.toml) that runs it in the worker."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pixsim7.backend.main.state import state_of

FRIENDLY_MOODS = frozenset({"happy", "calm", "content"})


def make_friendly_mood(
    relationship_above: Callable[[Mapping[str, float], str, float], bool],
) -> Callable[..., bool]:
    """A condition true when the mood is friendly and affinity to the target is positive."""

    def friendly_mood(
        mood: str, affinity: Mapping[str, float], target_id: str, threshold: float = 0.0
    ) -> bool:
        return mood in FRIENDLY_MOODS and relationship_above(affinity, target_id, threshold)

    return friendly_mood


def on_load(ctx: Any) -> None:
    """Register `friendly_mood`; relationships has loaded first, as the manifest requires."""
    if ctx.behavior_registry is None:
        raise RuntimeError(
            f"plugin {ctx.plugin_id!r} needs app.state.behavior_registry; create it before "
            "loading feature plugins"
        )
    relationship_above = ctx.behavior_registry.condition("relationship_above")
    ctx.behavior_registry.register_condition(
        "friendly_mood", make_friendly_mood(relationship_above), plugin_id=ctx.plugin_id
    )


class MoodCheck(BaseModel):
    """Whether a character in `mood` with this `affinity` is friendly towards `target_id`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    mood: str = Field(min_length=1, max_length=64)
    affinity: dict[str, float] = Field(default_factory=dict, max_length=1000)
    target_id: str = Field(min_length=1, max_length=128)
    threshold: float = 0.0


async def evaluate_mood(app: Any, payload: MoodCheck) -> dict[str, Any]:
    """The `mood.evaluate` job: runs the `friendly_mood` condition of the worker's own app."""
    condition = state_of(app).behavior_registry.condition("friendly_mood")
    friendly = condition(payload.mood, payload.affinity, payload.target_id, payload.threshold)
    return {"target_id": payload.target_id, "friendly": bool(friendly)}
