"""GET and POST /api/v1/presets: saved generation presets, stored in the database.

The listing is a JSON list, one page at a time: `limit` presets (100 by default, at most
PAGE_MAX) ordered by name, after the name `after`; a `Link: <...>; rel="next"` header (RFC 8288)
gives the next page while there is one.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from pixsim7.backend.main.api.deps import Db, DomainModels, Events, Providers
from pixsim7.backend.main.infrastructure.registries.providers import ProviderRegistry
from pixsim7.backend.main.presets import MODEL_NAME, PresetCreate, PresetOut
from pixsim7.backend.main.shared.json_values import UnsafeJSON, check_json_value

CREATED_EVENT = "preset.created"
PAGE_DEFAULT = 100
PAGE_MAX = 500

logger = logging.getLogger("pixsim7.plugins.presets")


def _out(row: Any) -> PresetOut:
    return PresetOut(
        id=row.id,
        name=row.name,
        provider_id=row.provider_id,
        operation=row.operation,
        params=dict(row.params or {}),
        created_at=row.created_at,
    )


def _conflict(name: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_409_CONFLICT,
        detail=f"a preset named {name!r} already exists; choose another name",
    )


def _check_provider(providers: ProviderRegistry, body: PresetCreate) -> None:
    known = sorted(p.id for p in providers.list())
    if body.provider_id not in known:
        # Same shape as FastAPI's own validation errors, so clients handle one format.
        raise HTTPException(
            status_code=422,
            detail=[
                {
                    "type": "unknown_provider",
                    "loc": ["body", "provider_id"],
                    "msg": f"unknown provider {body.provider_id!r}; known providers: "
                    f"{', '.join(known) or 'none'}",
                    "input": body.provider_id,
                }
            ],
        )


router = APIRouter(tags=["presets"])


# Declared so the OpenAPI schema lists every status these routes answer with.
_DATABASE_DOWN = {503: {"description": "the database is unavailable; retry later"}}


async def _insert(session: Any, model: Any, body: PresetCreate) -> PresetOut:
    taken = await session.scalar(select(model.id).where(model.name == body.name))
    if taken is not None:
        raise _conflict(body.name)
    row = model(name=body.name, provider_id=body.provider_id, operation=body.operation,
                params=body.params)
    session.add(row)
    await session.flush()
    # created_at comes from the server default, so read the row back once.
    await session.refresh(row)
    preset = _out(row)
    preset.model_dump_json()  # the answer must render before the row is kept
    return preset


def _page_cursor(after: str | None) -> str | None:
    if after is not None:
        try:
            check_json_value(after)
        except UnsafeJSON as exc:
            raise HTTPException(422, detail=[{"type": exc.as_error(())["type"],
                                              "loc": ["query", "after"], "msg": exc.msg}]) from None
    return after


@router.get("", response_model=list[PresetOut], responses={
    **_DATABASE_DOWN,
    200: {"description": "one page of presets by name; a `Link` header with `rel=\"next\"` "
                         "gives the next page while there is one"},
})
async def list_presets(
    request: Request, response: Response, db: Db, models: DomainModels,
    limit: int = Query(PAGE_DEFAULT, ge=1, le=PAGE_MAX, description="presets on this page"),
    after: str | None = Query(None, min_length=1, max_length=128,
                              description="the last name of the previous page"),
) -> list[PresetOut]:
    """Presets ordered by name, one page of at most `limit`, after the name `after`."""
    after = _page_cursor(after)
    model = models.model(MODEL_NAME)
    query = select(model).order_by(model.name).limit(limit + 1)
    if after is not None:
        query = query.where(model.name > after)
    async with db.session() as session:
        rows = (await session.execute(query)).scalars().all()
        page = [_out(row) for row in rows[:limit]]
    if len(rows) > limit:
        following = request.url.include_query_params(limit=limit, after=page[-1].name)
        response.headers["Link"] = f'<{following}>; rel="next"'
    return page


@router.post("", response_model=PresetOut, status_code=status.HTTP_201_CREATED, responses={
    400: {"description": "the body could not be read (not UTF-8)"},
    409: {"description": "a preset with this name already exists"},
    **_DATABASE_DOWN,
})
async def create_preset(body: PresetCreate, db: Db, models: DomainModels, event_bus: Events,
                        providers: Providers) -> PresetOut:
    """Create a preset; 409 if the name is taken, 422 if the provider is unknown."""
    _check_provider(providers, body)
    model = models.model(MODEL_NAME)
    async with db.session() as session:
        try:
            # One transaction: anything that fails before the commit, the answer included,
            # rolls the row back.
            async with session.begin():
                preset = await _insert(session, model, body)
        except IntegrityError:
            # Another request took the name between the check and the insert.
            raise _conflict(body.name) from None
    try:
        await event_bus.publish(
            CREATED_EVENT,
            {
                "id": preset.id,
                "name": preset.name,
                "provider_id": preset.provider_id,
                "operation": preset.operation,
            },
        )
    except Exception:
        # The preset is stored; failing the request now would invite a retry that gets a 409.
        logger.exception(
            "preset %r was created but publishing %s failed", preset.name, CREATED_EVENT
        )
    return preset
