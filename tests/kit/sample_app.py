"""A small app for the kit's own tests: real PostgreSQL and Redis in its lifespan, milestones."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from fastapi import FastAPI, Request

logger = logging.getLogger("pixsim7.startup")


def _milestone(app: FastAPI, phase: str, step: str, status: str, **extra: Any) -> None:
    logger.info("%s %s: %s", phase, step, status,
                extra={"milestone": {"phase": phase, "step": step, "status": status, **extra},
                       "app_id": app.state.app_id})


def create_app(settings: Any) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        dsn = settings.database_url.replace("postgresql+asyncpg://", "postgresql://")
        try:
            app.state.db = await asyncpg.connect(dsn, timeout=2)
        except Exception:
            _milestone(app, "startup", "database", "failed")
            raise
        await app.state.db.execute(
            "CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, body text NOT NULL)"
        )
        _milestone(app, "startup", "database", "ok", tables=1)
        app.state.redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=2)
        app.state.prefix = settings.redis_key_prefix
        await app.state.redis.ping()
        _milestone(app, "startup", "redis", "ok")
        app.state.started_at = 1234.5
        app.state.data_dir = settings.data_dir
        try:
            yield
        finally:
            await app.state.redis.aclose()
            _milestone(app, "shutdown", "redis", "ok")
            await app.state.db.close()
            _milestone(app, "shutdown", "database", "ok")

    app = FastAPI(lifespan=lifespan)
    app.state.app_id = uuid.uuid4().hex

    @app.post("/notes/{body}")
    async def add_note(body: str, request: Request) -> dict:
        state = request.app.state
        note_id = await state.db.fetchval("INSERT INTO notes (body) VALUES ($1) RETURNING id", body)
        await state.redis.set(f"{state.prefix}note:{note_id}", body)
        return {"id": note_id}

    @app.get("/notes")
    async def list_notes(request: Request) -> dict:
        state = request.app.state
        rows = await state.db.fetch("SELECT body FROM notes ORDER BY id")
        keys = [key async for key in state.redis.scan_iter(match=f"{state.prefix}*")]
        return {"rows": [r["body"] for r in rows], "keys": len(keys)}

    return app
