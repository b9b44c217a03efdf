"""Dependency order shared by the domain registry and the plugin managers."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence


def stable_dependency_order(
    nodes: Sequence[str], dependencies: Mapping[str, Iterable[str]]
) -> tuple[list[str], list[str]]:
    """(order, blocked): Kahn's algorithm where, among ready nodes, the one listed first goes
    first, so the order is the same on every run. Dependencies on unknown nodes are ignored.
    `blocked` lists, in input order, the nodes that wait on a cycle (or are on one)."""
    position = {node: index for index, node in enumerate(nodes)}
    waiting: dict[str, int] = {}
    dependents: dict[str, list[str]] = {node: [] for node in nodes}
    for node in nodes:
        known = {dep for dep in dependencies.get(node, ()) if dep in position}
        waiting[node] = len(known)
        for dep in known:
            dependents[dep].append(node)
    ready = [position[node] for node in nodes if waiting[node] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        node = nodes[heapq.heappop(ready)]
        order.append(node)
        for dependent in dependents[node]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, position[dependent])
    done = set(order)
    return order, [node for node in nodes if node not in done]
