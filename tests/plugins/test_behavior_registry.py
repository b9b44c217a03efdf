"""BehaviorRegistry: ownership, duplicates, locking and the summary."""

from __future__ import annotations

import pytest

from pixsim7.backend.main.infrastructure.discovery.plugins import (
    BehaviorRegistry,
    BehaviorRegistryError,
    BehaviorRegistryLockedError,
)


def always(*_: object) -> bool:
    return True


def test_register_and_read_back() -> None:
    registry = BehaviorRegistry()
    registry.register_condition("near", always, plugin_id="spatial")
    registry.register_effect("hide", always, plugin_id="stealth")
    config = {"radius": 3, "layers": ["a"]}
    registry.register_simulation_config("defaults", config, plugin_id="stealth")
    config["layers"].append("b")
    assert registry.condition("near") is always
    assert registry.effect("hide") is always
    assert registry.simulation_config("defaults") == {"radius": 3, "layers": ["a"]}
    assert registry.owner("effect", "hide") == "stealth"
    assert registry.ids_for_plugin("stealth") == {
        "condition": [],
        "effect": ["hide"],
        "simulation_config": ["defaults"],
    }


def test_duplicate_names_both_plugins() -> None:
    registry = BehaviorRegistry()
    registry.register_condition("near", always, plugin_id="spatial")
    with pytest.raises(BehaviorRegistryError) as info:
        registry.register_condition("near", always, plugin_id="other")
    assert "'spatial'" in str(info.value) and "'other'" in str(info.value)
    # The same id in another kind is a different behavior.
    registry.register_effect("near", always, plugin_id="other")


def test_lock_refuses_later_registrations() -> None:
    registry = BehaviorRegistry()
    registry.register_effect("hide", always, plugin_id="stealth")
    assert registry.locked is False
    registry.lock()
    assert registry.locked is True
    with pytest.raises(BehaviorRegistryLockedError) as info:
        registry.register_condition("late", always, plugin_id="latecomer")
    assert "'late'" in str(info.value) and "'latecomer'" in str(info.value)
    with pytest.raises(BehaviorRegistryLockedError):
        registry.register_simulation_config("cfg", {}, plugin_id="latecomer")
    assert registry.effect("hide") is always


def test_invalid_values_are_refused() -> None:
    registry = BehaviorRegistry()
    with pytest.raises(BehaviorRegistryError, match="pass a callable"):
        registry.register_effect("bad", "not callable", plugin_id="p")  # type: ignore[arg-type]
    with pytest.raises(BehaviorRegistryError, match="pass a dict"):
        registry.register_simulation_config("bad", [1], plugin_id="p")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="no condition 'missing'"):
        registry.condition("missing")


def test_summary() -> None:
    registry = BehaviorRegistry()
    registry.register_condition("b", always, plugin_id="p")
    registry.register_condition("a", always, plugin_id="q")
    registry.lock()
    assert registry.summary() == {
        "locked": True,
        "conditions": {"count": 2, "ids": ["a", "b"]},
        "effects": {"count": 0, "ids": []},
        "simulation_configs": {"count": 0, "ids": []},
    }
