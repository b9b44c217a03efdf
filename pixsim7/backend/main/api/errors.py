"""Error responses: an outage of a dependency is a clean 503, anything else a bare 500.

Public bodies never carry exception messages, hosts, URLs or credentials; the log has the rest.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

import redis.exceptions as redis_errors
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_errors

from pixsim7.backend.main.api.request_guard import excerpt
from pixsim7.backend.main.infrastructure.adapters.database import cannot_write, is_database_outage
from pixsim7.backend.main.state import state_of

logger = logging.getLogger("pixsim7.errors")



def _unavailable(service: str, detail: str | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail or f"{service} unavailable, try again later"},
                        status_code=503, headers={"Retry-After": "1"})


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if is_database_outage(exc):
        logger.warning("%s %s: database unavailable (%s)", request.method, request.url.path,
                       type(exc).__name__)
        return _unavailable("database")
    reason = cannot_write(exc)
    if reason is not None:
        db = state_of(request.app).db
        if db is not None:
            db.note_write_failure(reason)
        logger.error("%s %s: the database cannot write (%s, %s)", request.method,
                     request.url.path, reason, type(exc).__name__)
        return _unavailable("database", f"the database cannot write right now ({reason}), "
                                        "try again later")
    return await _internal_error(request, exc)


# What Redis answers when it is up but cannot take a write: its disk failed (MISCONF, for the
# append-only file too), maxmemory reached (OOM), a replica (READONLY). Inside a script (the
# enqueue is one) the code comes after the script's own words: `... @user_script:5: -MISCONF`.
_REDIS_CANNOT_WRITE = {"MISCONF": "disk", "OOM": "out of memory", "READONLY": "read-only"}
_REDIS_CODE = re.compile(r"(?:^|-)(MISCONF|OOM|READONLY)\b")


def _redis_cannot_write(exc: Exception) -> str | None:
    if isinstance(exc, redis_errors.ReadOnlyError):  # redis-py strips these codes itself
        return "read-only"
    if isinstance(exc, redis_errors.OutOfMemoryError):
        return "out of memory"
    found = _REDIS_CODE.search(str(exc))
    return _REDIS_CANNOT_WRITE[found.group(1)] if found else None


async def _redis_response_error(request: Request, exc: Exception) -> JSONResponse:
    reason = _redis_cannot_write(exc)
    if reason is None:
        return await _internal_error(request, exc)
    logger.error("%s %s: Redis cannot write (%s)", request.method, request.url.path, reason)
    return _unavailable("redis", f"Redis cannot write right now ({reason}), try again later")


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


def _excerpt(value: Any) -> Any:
    """A short excerpt of a client's input that JSON can always render."""
    if value is None or isinstance(value, bool) or (
            isinstance(value, int) and abs(value) < 2**63):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        return excerpt(value.decode("utf-8", "replace"))
    if isinstance(value, str):
        return excerpt(value)
    try:
        return excerpt(json.dumps(value, default=repr, ensure_ascii=False))
    except (ValueError, RecursionError):  # integers too long to print, nesting too deep
        return f"<{type(value).__name__}>"


def _short_error(error: dict[str, Any]) -> dict[str, Any]:
    short = {"type": error["type"], "loc": [_excerpt(part) for part in error["loc"]],
             "msg": error["msg"]}
    if "input" in error:
        short["input"] = _excerpt(error["input"])
    if "ctx" in error:
        short["ctx"] = {key: _excerpt(value) for key, value in error["ctx"].items()}
    return short


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's default echoes the whole input, which may be a megabyte or not encodable.
    return JSONResponse({"detail": [_short_error(error) for error in exc.errors()]},
                        status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(sa_errors.DBAPIError, _database_error)
    app.add_exception_handler(sa_errors.TimeoutError, _database_error)
    app.add_exception_handler(redis_errors.ConnectionError, _redis_error)
    app.add_exception_handler(redis_errors.TimeoutError, _redis_error)
    app.add_exception_handler(redis_errors.ResponseError, _redis_response_error)
    app.add_exception_handler(OSError, _connection_error)
    app.add_exception_handler(TimeoutError, _connection_error)
    app.add_exception_handler(Exception, _internal_error)
