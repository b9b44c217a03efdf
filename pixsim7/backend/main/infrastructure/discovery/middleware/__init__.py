"""Middleware plugins discovered from MIDDLEWARE_DIR and installed by priority."""

from .manager import (
    MiddlewareError,
    MiddlewareManager,
    MiddlewareManifest,
    MiddlewareManifestError,
    MiddlewareState,
    load_middleware_manifest,
    middleware_manager,
)

__all__ = [
    "MiddlewareError",
    "MiddlewareManager",
    "MiddlewareManifest",
    "MiddlewareManifestError",
    "MiddlewareState",
    "load_middleware_manifest",
    "middleware_manager",
]
