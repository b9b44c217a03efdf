"""The app's middleware stack, outermost first; this is the one place its order is written:

1. the middleware plugins of MIDDLEWARE_DIR, by manifest `priority` (lowest number outermost:
   request ids, request logging, CORS in the bundled ones);
2. request metrics: every request the plugins pass on, counted with its final status;
3. the request guard (body and head limits, read timeouts), innermost, so that the plugins
   log and tag its 413s, 408s and 431s.

`create_app` runs `install_middleware` as its build step `middleware`, with 2 and 3 as `inner`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from pixsim7.backend.main.api.metrics import AppMetrics, RequestMetricsMiddleware
from pixsim7.backend.main.api.request_guard import RequestGuard
from pixsim7.backend.main.infrastructure.discovery.middleware.manager import (
    MiddlewareManager,
    add_outermost_first,
)
from pixsim7.backend.main.shared.config import Settings


def inner_middleware(settings: Settings, metrics: AppMetrics) -> list[tuple[type, dict[str, Any]]]:
    """2 and 3 above: the app's own middleware, inside the plugins', outermost first."""
    return [
        (RequestMetricsMiddleware, {"metrics": metrics}),
        (RequestGuard, {"max_bytes": settings.max_body_bytes,
                        "max_head_bytes": settings.max_header_bytes,
                        "read_timeout": settings.request_read_timeout}),
    ]


def install_middleware(app: FastAPI, settings: Settings,
                       inner: Sequence[tuple[type, dict[str, Any]]] = ()) -> MiddlewareManager:
    """Discover MIDDLEWARE_DIR and add its middleware to `app`, outside `inner` (the app's
    own, outermost first; the order is written above). Only possible while
    building."""
    middleware = MiddlewareManager(Path(settings.middleware_dir))
    middleware.discover()
    add_outermost_first(app, [*middleware.build(settings), *inner])
    return middleware

