"""What a plugin's package holds, read and checked: its router and hooks, the job kinds its
manifest declares, the routes it serves."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from pixsim7.backend.main.infrastructure.registries.jobs import JobKind

from .manifest import JobDeclaration, PluginManifestError

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # FastAPI versions that copy included routes into the app's list
    iter_route_contexts = None

HOOK_NAMES = ("on_load", "on_enable", "on_disable")


def check_module(module: ModuleType) -> ModuleType:
    """`module`, once its `router` and hooks have the types a plugin's must have."""
    router = getattr(module, "router", None)
    if router is not None and not isinstance(router, APIRouter):
        raise TypeError(
            f"module attribute 'router' is a {type(router).__name__}; "
            "it must be a fastapi.APIRouter or absent"
        )
    for name in HOOK_NAMES:
        hook = getattr(module, name, None)
        if hook is not None and not callable(hook):
            raise TypeError(f"module attribute {name!r} must be a function taking ctx")
    return module


def job_kinds(plugin_id: str, folder: Path, manifest_path: Path,
              declarations: list[JobDeclaration], module: ModuleType | None) -> list[JobKind]:
    """The job kinds the manifest declares, with their functions and payload models taken
    from the plugin's package; a PluginManifestError names the field that points wrong."""
    kinds = []
    source = folder / "__init__.py"
    for index, job in enumerate(declarations):
        function = getattr(module, job.function, None)
        if not inspect.iscoroutinefunction(function):
            found = "is missing" if function is None else "is not an async function"
            raise PluginManifestError(manifest_path, (
                f"field 'jobs.{index}.function': {job.function!r} {found} in {source}; "
                "a job is `async def f(app, payload)`"))
        payload = getattr(module, job.payload, None)
        if not (isinstance(payload, type) and issubclass(payload, BaseModel)):
            found = "is missing" if payload is None else "is not a pydantic model class"
            raise PluginManifestError(manifest_path, (
                f"field 'jobs.{index}.payload': {job.payload!r} {found} in {source}"))
        kinds.append(JobKind(job.kind, payload, function, job.description,
                             retry_on_outage=job.retry_on_outage,
                             owner=plugin_id))
    return kinds


def describe_routes(router: APIRouter, prefix: str) -> list[str]:
    """`METHODS /path` of each route `router` serves when included under `prefix`."""
    # Read from the plugin's own router: describing the app's entry for it would make newer
    # FastAPI build every route's request handling now rather than on the route's first request.
    routes: list[Any] = router.routes
    if iter_route_contexts is not None:  # expands routers included into this one
        routes = list(iter_route_contexts(routes))
    described = []
    for item in routes:
        path = getattr(item, "path", None)
        path = prefix + path if path is not None else repr(item)
        methods = getattr(item, "methods", None)
        described.append(f"{','.join(sorted(methods))} {path}" if methods else path)
    return described
