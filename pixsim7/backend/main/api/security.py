"""Admin authentication: a bearer token compared with `app.state.admin_token`."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, status
from starlette.requests import HTTPConnection

from pixsim7.backend.main.shared.paths import ADMIN_PREFIX
from pixsim7.backend.main.state import state_of

# One answer for every failure, so a caller learns nothing about why the token was refused.
_UNAUTHORIZED_DETAIL = "admin authentication required"
ADMIN_OFF_DETAIL = "the admin API is off: set ADMIN_TOKEN to use it"


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


def require_admin(request: HTTPConnection) -> None:
    """FastAPI dependency: allow only `Authorization: Bearer <ADMIN_TOKEN>`, else 401; 503 when
    no token is set (DEBUG=false without ADMIN_TOKEN)."""
    require_bearer(request, state_of(request.app).admin_token, ADMIN_OFF_DETAIL)


def require_bearer(request: HTTPConnection, expected: str | None, off_detail: str,
                   unauthorized_detail: str = _UNAUTHORIZED_DETAIL) -> None:
    """Allow only `Authorization: Bearer <expected>` (compared in constant time), else 401 with
    one answer (`unauthorized_detail`) for every wrong credential; 503 with `off_detail` when
    `expected` is unset."""
    if not expected:
        raise HTTPException(status_code=status.HTTP_503_SERVICE_UNAVAILABLE, detail=off_detail)
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        raise _unauthorized(unauthorized_detail)
    if not hmac.compare_digest(credentials.encode("utf-8"), str(expected).encode("utf-8")):
        raise _unauthorized(unauthorized_detail)




async def require_admin_prefix(connection: HTTPConnection) -> None:
    """App-wide dependency: any path under /api/v1/admin (HTTP or WebSocket) needs the token.

    Async although it never waits: a sync dependency would send every request to a thread."""
    path = connection.scope["path"]  # what URL.path holds, without building a URL
    if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
        require_admin(connection)
