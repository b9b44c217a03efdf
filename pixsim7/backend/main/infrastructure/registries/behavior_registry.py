"""Conditions, effects and simulation configs contributed by plugins, locked after startup."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pixsim7.backend.main.shared.app_context import StateForwarder

BehaviorKind = Literal["condition", "effect", "simulation_config"]
BEHAVIOR_KINDS: tuple[BehaviorKind, ...] = ("condition", "effect", "simulation_config")


class BehaviorRegistryError(ValueError):
    """A registration is invalid or collides with another plugin's."""


class BehaviorRegistryLockedError(BehaviorRegistryError):
    """A plugin registered something after startup locked the registry."""


@dataclass(frozen=True)
class BehaviorEntry:
    """One registered behavior and the plugin that owns it."""

    kind: BehaviorKind
    id: str
    value: Any
    plugin_id: str


class BehaviorRegistry:
    """Holds behaviors by kind and id; each id belongs to exactly one plugin."""

    def __init__(self) -> None:
        self._entries: dict[BehaviorKind, dict[str, BehaviorEntry]] = {
            kind: {} for kind in BEHAVIOR_KINDS
        }
        self._locked = False

    @property
    def locked(self) -> bool:
        """True once `lock()` has been called."""
        return self._locked

    def lock(self) -> None:
        """Refuse further registrations; called once all plugins have loaded."""
        self._locked = True

    def register_condition(
        self, condition_id: str, fn: Callable[..., Any], *, plugin_id: str
    ) -> None:
        """Register a condition callable under `condition_id`."""
        self._require_callable("condition", condition_id, fn, plugin_id)
        self._add("condition", condition_id, fn, plugin_id)

    def register_effect(self, effect_id: str, fn: Callable[..., Any], *, plugin_id: str) -> None:
        """Register an effect callable under `effect_id`."""
        self._require_callable("effect", effect_id, fn, plugin_id)
        self._add("effect", effect_id, fn, plugin_id)

    def register_simulation_config(
        self, config_id: str, config: dict[str, Any], *, plugin_id: str
    ) -> None:
        """Register a simulation config; a deep copy is stored so later edits do not leak in."""
        if not isinstance(config, dict):
            raise BehaviorRegistryError(
                f"plugin {plugin_id!r} registered simulation config {config_id!r} as "
                f"{type(config).__name__}; pass a dict"
            )
        self._add("simulation_config", config_id, copy.deepcopy(config), plugin_id)

    def condition(self, condition_id: str) -> Callable[..., Any]:
        """The condition registered under `condition_id`."""
        return self._get("condition", condition_id).value

    def effect(self, effect_id: str) -> Callable[..., Any]:
        """The effect registered under `effect_id`."""
        return self._get("effect", effect_id).value

    def simulation_config(self, config_id: str) -> dict[str, Any]:
        """A copy of the simulation config registered under `config_id`."""
        return copy.deepcopy(self._get("simulation_config", config_id).value)

    def owner(self, kind: BehaviorKind, behavior_id: str) -> str:
        """The id of the plugin that registered `behavior_id` of `kind`."""
        return self._get(kind, behavior_id).plugin_id

    def ids(self, kind: BehaviorKind) -> list[str]:
        """Sorted ids registered for `kind`."""
        return sorted(self._entries[kind])

    def ids_for_plugin(self, plugin_id: str) -> dict[str, list[str]]:
        """Sorted ids per kind registered by `plugin_id`."""
        return {
            kind: sorted(i for i, e in entries.items() if e.plugin_id == plugin_id)
            for kind, entries in self._entries.items()
        }

    def summary(self) -> dict[str, Any]:
        """Counts and sorted ids per kind plus the lock flag; JSON-able and deterministic."""
        out: dict[str, Any] = {"locked": self._locked}
        for kind, entries in self._entries.items():
            out[f"{kind}s"] = {"count": len(entries), "ids": sorted(entries)}
        return out

    def _require_callable(self, kind: str, item_id: str, fn: Any, plugin_id: str) -> None:
        if not callable(fn):
            raise BehaviorRegistryError(
                f"plugin {plugin_id!r} registered {kind} {item_id!r} as "
                f"{type(fn).__name__}; pass a callable"
            )

    def _add(self, kind: BehaviorKind, item_id: str, value: Any, plugin_id: str) -> None:
        if self._locked:
            raise BehaviorRegistryLockedError(
                f"plugin {plugin_id!r} tried to register {kind} {item_id!r} after the behavior "
                "registry was locked; register behaviors in the plugin's on_load hook"
            )
        if not isinstance(item_id, str) or not item_id:
            raise BehaviorRegistryError(
                f"plugin {plugin_id!r} registered a {kind} with id {item_id!r}; use a non-empty str"
            )
        existing = self._entries[kind].get(item_id)
        if existing is not None:
            raise BehaviorRegistryError(
                f"{kind} {item_id!r} is registered by plugin {existing.plugin_id!r} and again by "
                f"plugin {plugin_id!r}; rename one of them"
            )
        self._entries[kind][item_id] = BehaviorEntry(kind, item_id, value, plugin_id)

    def _get(self, kind: BehaviorKind, item_id: str) -> BehaviorEntry:
        try:
            return self._entries[kind][item_id]
        except KeyError:
            known = ", ".join(sorted(self._entries[kind])) or "none"
            raise KeyError(f"no {kind} {item_id!r} is registered (known: {known})") from None


behavior_registry = StateForwarder("behavior_registry")
