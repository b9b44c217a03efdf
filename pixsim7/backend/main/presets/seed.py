"""The default generation presets a fresh database gets, inserted idempotently."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as pg_insert

from pixsim7.backend.main.infrastructure.adapters.database import Database

__all__ = ["DEFAULT_PRESETS", "seed_default_presets"]

logger = logging.getLogger(__name__)

DEFAULT_PRESETS: tuple[Mapping[str, Any], ...] = (
    {
        "name": "pixverse-text-to-video-720p",
        "provider_id": "pixverse",
        "operation": "text_to_video",
        "params": {"duration": 5, "quality": "720p", "aspect_ratio": "16:9"},
    },
    {
        "name": "pixverse-image-to-video-720p",
        "provider_id": "pixverse",
        "operation": "image_to_video",
        "params": {"duration": 5, "quality": "720p"},
    },
    {
        "name": "sora-text-to-video-1080p",
        "provider_id": "sora",
        "operation": "text_to_video",
        "params": {"duration": 10, "resolution": "1080p", "aspect_ratio": "16:9"},
    },
    {
        "name": "runway-image-to-video-fast",
        "provider_id": "runway",
        "operation": "image_to_video",
        "params": {"duration": 5, "model": "gen3a_turbo"},
    },
)


def _preset_table(preset_model: type) -> Table:
    table = getattr(preset_model, "__table__", None)
    if not isinstance(table, Table):
        raise TypeError(f"{preset_model!r} is not a mapped table model; pass GenerationPreset")
    if "name" not in table.c or not _unique_on_name(table):
        raise TypeError(
            f"{preset_model.__name__} needs a unique `name` column to seed presets idempotently"
        )
    return table


def _unique_on_name(table: Table) -> bool:
    # Column(unique=True) shows up as a UniqueConstraint, Column(unique=True, index=True) as an
    # index; ON CONFLICT (name) works with either.
    for constraint in table.constraints:
        columns = getattr(constraint, "columns", None)
        if columns is not None and [c.name for c in columns] == ["name"]:
            return True
    return any(i.unique and [c.name for c in i.columns] == ["name"] for i in table.indexes)


async def seed_default_presets(
    db: Database,
    preset_model: type,
    presets: Iterable[Mapping[str, Any]] = DEFAULT_PRESETS,
) -> int:
    """Insert the presets whose names are not taken yet; return how many rows were inserted."""
    table = _preset_table(preset_model)
    rows = [copy.deepcopy(dict(preset)) for preset in presets]
    if not rows:
        return 0
    # ON CONFLICT DO NOTHING makes concurrent replicas safe: a row another replica is inserting
    # right now is waited for and then skipped, never duplicated or turned into an error.
    statement = (
        pg_insert(table)
        .values(rows)
        .on_conflict_do_nothing(index_elements=[table.c["name"]])
        .returning(*table.primary_key.columns)
    )
    async with db.autocommit() as conn:  # one statement: atomic without BEGIN/COMMIT
        inserted = len((await conn.execute(statement)).all())
    if inserted:
        logger.info("seeded %d generation presets into %s", inserted, db.safe_url)
    return inserted
