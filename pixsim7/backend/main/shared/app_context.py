"""The app whose objects the legacy module-level names forward to.

New code reads registries from `request.app.state`. Older imports such as
`domain_registry` or `middleware_manager` stay importable as forwarders: each attribute access
goes to the object held by the app that started most recently and is still running.
"""

from __future__ import annotations

import warnings
from typing import Any

from fastapi import FastAPI

_active_apps: list[FastAPI] = []


class NoActiveAppError(RuntimeError):
    """Raised when a legacy module-level name is used while no app is running."""


def activate(app: FastAPI) -> None:
    """Mark `app` as the current app for module-level forwarders."""
    if app not in _active_apps:
        _active_apps.append(app)


def deactivate(app: FastAPI) -> None:
    """Forget `app`; forwarders fall back to the previously activated app, if any."""
    if app in _active_apps:
        _active_apps.remove(app)


def current_app() -> FastAPI:
    """The most recently activated app that is still running."""
    if not _active_apps:
        raise NoActiveAppError(
            "no pixsim7 app is running; read registries from request.app.state instead"
        )
    return _active_apps[-1]


class StateForwarder:
    """Stands in for a former module-level singleton: forwards to `current_app().state.<key>`.

Each use warns (DeprecationWarning) and names the `app.state` key to read instead.
"""

    __slots__ = ("_key",)

    def __init__(self, key: str) -> None:
        object.__setattr__(self, "_key", key)

    def _target(self) -> Any:
        key = object.__getattribute__(self, "_key")
        warnings.warn(f"the module-level {key} is deprecated; read app.state.{key} "
                      f"(request.app.state.{key} in a route)", DeprecationWarning, stacklevel=3)
        target = getattr(current_app().state, key, None)
        if target is None:
            raise NoActiveAppError(f"the running app has no app.state.{key} yet")
        return target

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # introspection (pytest, inspect) is not a use
            raise AttributeError(name)
        return getattr(self._target(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target(), name, value)

    def __repr__(self) -> str:
        return f"<forwarder to app.state.{object.__getattribute__(self, '_key')}>"
