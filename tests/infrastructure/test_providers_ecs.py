"""Provider descriptors and the ECS component registry."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError

import pytest

from pixsim7.backend.main.infrastructure.registries.ecs import (
    ComponentDefinition,
    ComponentRegistry,
    register_core_components,
)
from pixsim7.backend.main.infrastructure.registries.providers import (
    ProviderDescriptor,
    ProviderRegistry,
    default_providers,
)


def test_default_providers_register_sorted() -> None:
    registry = ProviderRegistry(default_providers())
    assert registry.ids() == ["pixverse", "runway", "sora"]
    assert [p.id for p in registry.list()] == registry.ids()
    assert registry.get("sora") == ProviderDescriptor("sora", "Sora", ("text_to_video",))
    assert registry.get("missing") is None
    assert "runway" in registry and len(registry) == 3
    assert [p.id for p in registry.supporting("image_to_video")] == ["pixverse", "runway"]


def test_default_providers_are_fresh_each_call() -> None:
    assert default_providers() == default_providers()
    assert default_providers() is not default_providers()


def test_duplicate_provider_id_is_refused() -> None:
    registry = ProviderRegistry()
    registry.register(ProviderDescriptor("pixverse", "Pixverse", ("text_to_video",)))
    with pytest.raises(ValueError, match="provider 'pixverse' is already registered"):
        registry.register(ProviderDescriptor("pixverse", "Other", ()))


def test_descriptor_is_frozen() -> None:
    provider = default_providers()[0]
    with pytest.raises(FrozenInstanceError):
        provider.id = "other"  # type: ignore[misc]
    assert provider.supports("text_to_video")
    assert not provider.supports("teleport")


def test_core_components() -> None:
    registry = ComponentRegistry()
    count = register_core_components(registry)
    assert count == len(registry) == 4
    assert registry.names() == ["inventory", "needs", "relationships", "transform"]
    assert registry.by_owner() == {"core": registry.names()}
    transform = registry.get("transform")
    assert isinstance(transform, ComponentDefinition)
    assert transform.owner == "core" and transform.fields["x"] == "float"
    assert registry.get("nope") is None
    json.dumps({name: registry.get(name).fields for name in registry.names()})


def test_duplicate_component_names_both_owners() -> None:
    registry = ComponentRegistry()
    register_core_components(registry)
    with pytest.raises(ValueError, match="'needs' from 'romance' is already registered by 'core'"):
        registry.register("needs", {"love": "float"}, owner="romance")


def test_plugin_components_group_by_owner() -> None:
    registry = ComponentRegistry()
    register_core_components(registry)
    fields = {"mood": "str"}
    registry.register("emotion", fields, owner="romance")
    registry.register("affection", {"level": "int"}, owner="romance")
    fields["mood"] = "changed later"
    assert registry.get("emotion").fields == {"mood": "str"}
    assert registry.by_owner() == {
        "core": ["inventory", "needs", "relationships", "transform"],
        "romance": ["affection", "emotion"],
    }


@pytest.mark.parametrize(
    ("name", "fields", "problem"),
    [
        ("", {}, "non-empty string"),
        ("c", {"": "int"}, "empty field name"),
        ("c", {"f": ""}, "needs a type name"),
    ],
)
def test_malformed_components(name: str, fields: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ComponentRegistry().register(name, fields, owner="plugin")
