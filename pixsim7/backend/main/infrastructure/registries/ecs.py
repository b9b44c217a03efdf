"""Component definitions for the game's entity-component system."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["ComponentDefinition", "ComponentRegistry", "register_core_components"]


@dataclass(frozen=True)
class ComponentDefinition:
    """A component type: its name, who registered it, and its fields (name -> type name)."""

    name: str
    owner: str
    fields: dict[str, str] = field(default_factory=dict)


class ComponentRegistry:
    """The component types known to one app, by name."""

    def __init__(self) -> None:
        self._components: dict[str, ComponentDefinition] = {}

    def __len__(self) -> int:
        return len(self._components)

    def __contains__(self, name: object) -> bool:
        return name in self._components

    def register(
        self, name: str, fields: Mapping[str, str], *, owner: str = "core"
    ) -> ComponentDefinition:
        """Define component `name`; ValueError if it exists or a field is malformed."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"component name must be a non-empty string (owner {owner!r})")
        existing = self._components.get(name)
        if existing is not None:
            raise ValueError(
                f"component {name!r} from {owner!r} is already registered by "
                f"{existing.owner!r}; pick another component name"
            )
        for field_name, type_name in fields.items():
            if not isinstance(field_name, str) or not field_name:
                raise ValueError(f"component {name!r} ({owner!r}) has an empty field name")
            if not isinstance(type_name, str) or not type_name:
                raise ValueError(
                    f"component {name!r} ({owner!r}): field {field_name!r} needs a type name "
                    "such as 'float' or 'dict[str, int]'"
                )
        # A private copy, so later changes to the caller's dict do not alter a registered type.
        definition = ComponentDefinition(name, owner, dict(fields))
        self._components[name] = definition
        return definition

    def get(self, name: str) -> ComponentDefinition | None:
        """The definition of component `name`, or None."""
        return self._components.get(name)

    def names(self) -> list[str]:
        """All component names, sorted."""
        return sorted(self._components)

    def by_owner(self) -> dict[str, list[str]]:
        """Component names grouped by owner; owners and names sorted."""
        grouped: dict[str, list[str]] = {}
        for name in self.names():
            grouped.setdefault(self._components[name].owner, []).append(name)
        return {owner: grouped[owner] for owner in sorted(grouped)}

    def summary(self) -> dict[str, dict[str, list[str]]]:
        return {"by_owner": self.by_owner()}


def register_core_components(registry: ComponentRegistry) -> int:
    """Register the built-in components on `registry`; return how many were added."""
    core: dict[str, dict[str, str]] = {
        "transform": {"x": "float", "y": "float", "z": "float", "rotation": "float"},
        "needs": {"hunger": "float", "energy": "float", "social": "float", "fun": "float"},
        "relationships": {"affinity": "dict[int, float]", "trust": "dict[int, float]"},
        "inventory": {"capacity": "int", "items": "list[str]"},
    }
    for name, fields in core.items():
        registry.register(name, fields, owner="core")
    return len(core)
