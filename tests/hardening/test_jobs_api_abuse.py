"""The jobs API and its jobs under abuse: concurrent imports, other deployments' job ids, who
may enqueue, and the queue's bounds."""

from __future__ import annotations

import asyncio

import pytest

from pixsim7.backend.main.infrastructure.core_jobs import PresetImport, import_presets
from testing.apps import started

pytestmark = pytest.mark.integration

PRESET = {"provider_id": "pixverse", "operation": "text_to_video"}


# Two sessions really run at once here: the rollback tier would put them on one connection.
@pytest.mark.template_db
async def test_the_same_batch_imported_four_times_at_once_stores_each_name_once(
    app_factory
) -> None:
    running = await started(app_factory)
    batch = PresetImport.model_validate(
        {"presets": [{"name": f"overlap-{n}", **PRESET} for n in range(300)]})
    results = await asyncio.gather(*(import_presets(running.app, batch) for _ in range(4)))
    assert sum(result["created"] for result in results) == 300, results
    assert all(result["created"] + result["skipped"] == 300 for result in results), results
    listed = (await running.get("/api/v1/presets")).json()
    assert sorted(p["name"] for p in listed if p["name"].startswith("overlap-")) == sorted(
        f"overlap-{n}" for n in range(300))


@pytest.mark.rollback_db
async def test_a_name_twice_in_one_batch_is_stored_once_and_the_first_wins(app_factory) -> None:
    running = await started(app_factory)
    batch = PresetImport.model_validate({"presets": [
        {"name": "twice", **PRESET, "params": {"first": True}},
        {"name": "twice", **PRESET, "params": {"first": False}}]})
    assert await import_presets(running.app, batch) == {"created": 1, "skipped": 1}
    stored = [p for p in (await running.get("/api/v1/presets")).json() if p["name"] == "twice"]
    assert [p["params"] for p in stored] == [{"first": True}]
