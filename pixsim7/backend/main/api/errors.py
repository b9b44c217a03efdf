"""Error responses: an outage of a dependency is a clean 503, anything else a bare 500.

Public bodies never carry exception messages, hosts, URLs or credentials; the log has the rest.
"""

from __future__ import annotations

import logging

import redis.exceptions as redis_errors
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_errors

logger = logging.getLogger("pixsim7.errors")

_DATABASE_OUTAGES = (sa_errors.OperationalError, sa_errors.InterfaceError, sa_errors.TimeoutError)


def _unavailable(service: str) -> JSONResponse:
    return JSONResponse({"detail": f"{service} unavailable, try again later"}, status_code=503,
                        headers={"Retry-After": "1"})


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, _DATABASE_OUTAGES) or getattr(exc, "connection_invalidated", False):
        logger.warning("%s %s: database unavailable (%s)", request.method, request.url.path,
                       type(exc).__name__)
        return _unavailable("database")
    return await _internal_error(request, exc)


async def _connection_error(request: Request, exc: Exception) -> JSONResponse:
    # Raised below SQLAlchemy by the driver (refused, reset, timed out connecting).
    logger.warning("%s %s: dependency unavailable (%s)", request.method, request.url.path,
                   type(exc).__name__)
    return _unavailable("service")


async def _redis_error(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("%s %s: Redis unavailable (%s)", request.method, request.url.path,
                   type(exc).__name__)
    return _unavailable("redis")


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(sa_errors.DBAPIError, _database_error)
    app.add_exception_handler(sa_errors.TimeoutError, _database_error)
    app.add_exception_handler(redis_errors.ConnectionError, _redis_error)
    app.add_exception_handler(redis_errors.TimeoutError, _redis_error)
    app.add_exception_handler(OSError, _connection_error)
    app.add_exception_handler(TimeoutError, _connection_error)
    app.add_exception_handler(Exception, _internal_error)
