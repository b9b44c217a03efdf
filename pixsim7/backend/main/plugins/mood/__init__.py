"""Character mood: condition `friendly_mood`, built on `relationship_above` from relationships."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

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
