"""Affinity between characters: ECS component `affinity`, condition `relationship_above`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter

from pixsim7.backend.main.api.deps import Behaviors, Components

PLUGIN_ID = "relationships"
CONDITION_IDS = ("relationship_above",)
AFFINITY_FIELDS = {"target_id": "str", "value": "float"}
COMPONENT_NAMES = ("affinity",)


def relationship_above(affinity: Mapping[str, float], target_id: str, threshold: float) -> bool:
    """True when the affinity towards `target_id` is strictly above `threshold` (default 0)."""
    return float(affinity.get(target_id, 0.0)) > threshold


def on_load(ctx: Any) -> None:
    """Register the condition and the ECS component this plugin contributes."""
    if ctx.behavior_registry is None or ctx.ecs_registry is None:
        raise RuntimeError(
            f"plugin {ctx.plugin_id!r} needs app.state.behavior_registry and "
            "app.state.ecs_registry; create both before loading feature plugins"
        )
    ctx.behavior_registry.register_condition(
        "relationship_above", relationship_above, plugin_id=ctx.plugin_id
    )
    ctx.ecs_registry.register("affinity", dict(AFFINITY_FIELDS), owner=ctx.plugin_id)
    ctx.logger.debug("registered condition relationship_above and component affinity")


router = APIRouter(tags=["relationships"])


@router.get("/")
async def registered(behaviors: Behaviors, components: Components) -> dict[str, Any]:
    """The behavior and component ids this plugin registered on the running app."""
    conditions = set(behaviors.ids("condition"))
    names = set(components.names())
    return {
        "plugin": PLUGIN_ID,
        "conditions": [c for c in CONDITION_IDS if c in conditions],
        "components": [c for c in COMPONENT_NAMES if c in names],
    }
