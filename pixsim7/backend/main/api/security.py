"""Admin authentication: a bearer token compared with `app.state.admin_token`."""

from __future__ import annotations

import hmac
import logging

from fastapi import HTTPException, status
from starlette.requests import HTTPConnection

logger = logging.getLogger("pixsim7.security")

# One answer for every failure, so a caller learns nothing about why the token was refused.
_UNAUTHORIZED_DETAIL = "admin authentication required"


def _unauthorized() -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=_UNAUTHORIZED_DETAIL,
        headers={"WWW-Authenticate": "Bearer"},
    )


def require_admin(request: HTTPConnection) -> None:
    """FastAPI dependency: allow only `Authorization: Bearer <ADMIN_TOKEN>`, else 401."""
    expected = getattr(request.app.state, "admin_token", None)
    if not expected:
        logger.warning(
            "admin endpoint %s refused: ADMIN_TOKEN is not set, so the admin API is closed",
            request.url.path,
        )
        raise _unauthorized()
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        raise _unauthorized()
    if not hmac.compare_digest(credentials.encode("utf-8"), str(expected).encode("utf-8")):
        raise _unauthorized()


ADMIN_PREFIX = "/api/v1/admin"


def require_admin_prefix(connection: HTTPConnection) -> None:
    """App-wide dependency: any path under /api/v1/admin (HTTP or WebSocket) needs the token."""
    path = connection.url.path
    if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
        require_admin(connection)
