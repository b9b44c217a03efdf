"""Server fixtures for the infrastructure tests: a throwaway database and the Redis URL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    """An empty, uniquely named database on the local server, dropped afterwards."""
    name = f"pixsim7_infra_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
def redis_url() -> str:
    """The local Redis; tests keep to their own key prefix and delete what they write."""
    return REDIS_URL
