"""Stealth gameplay: effect `hide` and simulation config `stealth_defaults`."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

STEALTH_DEFAULTS: dict[str, Any] = {
    "detection_radius": 6.0,
    "hidden_detection_radius": 1.5,
    "hide_duration_ticks": 30,
    "noise_decay_per_tick": 0.25,
}


def hide(entity: MutableMapping[str, Any], duration_ticks: int | None = None) -> None:
    """Mark `entity` hidden for `duration_ticks` (the default from `stealth_defaults`)."""
    ticks = STEALTH_DEFAULTS["hide_duration_ticks"] if duration_ticks is None else duration_ticks
    if ticks < 0:
        raise ValueError(f"hide duration must be >= 0 ticks, got {ticks}")
    entity["hidden"] = True
    entity["hidden_ticks_left"] = ticks


def on_load(ctx: Any) -> None:
    """Register the effect and the simulation defaults."""
    if ctx.behavior_registry is None:
        raise RuntimeError(
            f"plugin {ctx.plugin_id!r} needs app.state.behavior_registry; create it before "
            "loading feature plugins"
        )
    ctx.behavior_registry.register_effect("hide", hide, plugin_id=ctx.plugin_id)
    ctx.behavior_registry.register_simulation_config(
        "stealth_defaults", STEALTH_DEFAULTS, plugin_id=ctx.plugin_id
    )
