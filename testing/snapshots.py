"""syrupy hooks for the kit's JSON snapshots: what a snapshot keeps and how a milestone reads."""

from __future__ import annotations

import json
from typing import Any

from syrupy.types import PropertyFilter, PropertyPath


def _names(path: PropertyPath, prop: Any = None) -> tuple[str, ...]:
    parts = [part for part, _ in path] + ([] if prop is None else [prop])
    return tuple(str(part) for part in parts)


def _along(here: tuple[str, ...], wanted: tuple[str, ...]) -> bool:
    # True when one path lies on the other: an ancestor of a wanted path or inside one.
    return all(want in ("*", name) for name, want in zip(here, wanted, strict=False))


def subtrees(*paths: str) -> PropertyFilter:
    """An `include` filter keeping the dotted `paths` and all under them; `*` is any one key.

    Unlike syrupy's `paths_include`, a kept path keeps its whole content.
    """
    if not paths:
        raise TypeError("subtrees() needs at least one dotted path")
    wanted = [tuple(path.split(".")) for path in paths]

    def keep(*, prop: Any, path: PropertyPath) -> bool:
        here = _names(path, prop)
        return any(_along(here, want) for want in wanted)

    return keep


def _shown(value: Any) -> str:
    # Strings bare and lists bracketed keep a line free of escaped quotes in the JSON file.
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + ", ".join(_shown(item) for item in value) + "]"
    return json.dumps(value, sort_keys=True)


def milestone_line(milestone: dict[str, Any]) -> str:
    """`startup plugins: degraded [per_plugin] enabled=6 failed=[alpha]`: one milestone a line."""
    rest = {k: v for k, v in milestone.items() if k not in ("phase", "step", "status", "policy")}
    line = f"{milestone['phase']} {milestone['step']}: {milestone['status']}"
    if "policy" in milestone:
        line += f" [{milestone['policy']}]"
    return " ".join([line, *(f"{k}={_shown(v)}" for k, v in sorted(rest.items()))])


def milestones_as_lines(*, data: Any, path: PropertyPath) -> Any:
    """A syrupy matcher writing each item of a `milestones` list as one `milestone_line`."""
    names = _names(path)
    if (isinstance(data, dict) and len(names) >= 2 and names[-2] == "milestones"
            and {"phase", "step", "status"} <= data.keys()):
        return milestone_line(data)
    return data
