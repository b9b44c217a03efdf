"""Starlette's CORSMiddleware configured from `settings.cors_origins`."""

from __future__ import annotations

from typing import Any

from starlette.middleware.cors import CORSMiddleware


def build(settings: Any) -> tuple[type, dict[str, Any]]:
    """CORSMiddleware allowing the configured origins; credentials only without a wildcard."""
    origins = getattr(settings, "cors_origins", None)
    if origins is None or isinstance(origins, str):
        raise ValueError(
            f"setting cors_origins must be a list of origins, got {origins!r}; "
            'set CORS_ORIGINS to a JSON list such as ["http://localhost:5173"]'
        )
    origins = [str(origin) for origin in origins]
    return CORSMiddleware, {
        "allow_origins": origins,
        # A wildcard origin with credentials would let any site act with a user's cookies.
        "allow_credentials": "*" not in origins,
        "allow_methods": ["*"],
        "allow_headers": ["*"],
        "expose_headers": ["X-Request-ID"],
    }
