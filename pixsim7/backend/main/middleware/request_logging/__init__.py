"""One log line per HTTP request on logger `pixsim7.requests`: method, path, status, duration.

Probes that succeed log at DEBUG, so a probe every few seconds does not flood the log.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import ASGIApp, Scope

from pixsim7.backend.main.api.observing import ResponseObserver

LOGGER_NAME = "pixsim7.requests"
PROBE_PATHS = frozenset({"/", "/ready", "/health", "/metrics"})


class RequestLoggingMiddleware(ResponseObserver):
    """Requests that raise are logged with status 500 (and the error goes on up)."""

    def __init__(self, app: ASGIApp, logger_name: str = LOGGER_NAME) -> None:
        super().__init__(app)
        self.logger = logging.getLogger(logger_name)

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        self._log(scope, status, seconds * 1000)

    def _log(self, scope: Scope, status: int, duration_ms: float) -> None:
        quiet = scope["path"] in PROBE_PATHS and status < 400
        level = logging.DEBUG if quiet else logging.INFO
        if self.logger.isEnabledFor(level):
            # Read after the app ran: the request id middleware sits outside this one.
            request_id = scope.get("state", {}).get("request_id")
            self.logger.log(
                level,
                "%s %s %d %.1fms",
                scope["method"],
                scope["path"],
                status,
                duration_ms,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status_code": status,
                    "duration_ms": round(duration_ms, 3),
                    "request_id": request_id,
                },
            )


def build(settings: Any) -> tuple[type, dict[str, Any]]:
    """The middleware class and its keyword arguments."""
    return RequestLoggingMiddleware, {"logger_name": LOGGER_NAME}
