"""Listings answer one bounded page at a time, and a client walks them by the Link header."""

from __future__ import annotations

import re

import pytest
from pixsim7_testing.apps import started

from pixsim7.backend.main.presets import DEFAULT_PRESETS, PresetImport, import_presets
from pixsim7.backend.main.routes.presets import PAGE_DEFAULT, PAGE_MAX

pytestmark = [pytest.mark.integration, pytest.mark.rollback_db]

PRESET = {"provider_id": "pixverse", "operation": "text_to_video"}
NEXT = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')


async def stored(running, count: int) -> list[str]:
    """Import `count` presets with awkward names; every name now stored, sorted."""
    names = [f"p {n:04d} ü/?&#" for n in range(count)]
    for first in range(0, count, 500):
        batch = PresetImport.model_validate({"presets": [
            {"name": name, **PRESET} for name in names[first:first + 500]]})
        await import_presets(running.app, batch)
    return sorted([*names, *(p["name"] for p in DEFAULT_PRESETS)])


async def test_the_listing_is_one_bounded_page_with_a_link_to_the_next(app_factory) -> None:
    running = await started(app_factory)
    names = await stored(running, 1200)
    first = await running.get("/api/v1/presets")
    assert first.status_code == 200
    assert [p["name"] for p in first.json()] == names[:PAGE_DEFAULT]  # still a JSON list
    assert NEXT.match(first.headers["Link"])
    biggest = await running.get("/api/v1/presets", params={"limit": PAGE_MAX})
    assert len(biggest.json()) == PAGE_MAX
    assert (await running.get("/api/v1/presets", params={"limit": PAGE_MAX + 1})
            ).status_code == 422


async def test_walking_the_links_lists_every_preset_once_in_order(app_factory) -> None:
    running = await started(app_factory)
    names = await stored(running, 1200)
    seen, url, pages = [], "/api/v1/presets?limit=250", 0
    while url is not None:
        page = await running.get(url)
        assert page.status_code == 200, page.text
        seen += [p["name"] for p in page.json()]
        link = NEXT.match(page.headers.get("Link", ""))
        url = link["url"] if link else None
        pages += 1
    assert seen == names
    assert pages == -(-len(names) // 250)


@pytest.mark.parametrize("query", ["after=%00", "after=%1B%00x", "after=" + "a" * 129,
                                   "after="])
async def test_a_cursor_that_cannot_be_a_name_is_refused(app_factory, query) -> None:
    running = await started(app_factory)
    answer = await running.get(f"/api/v1/presets?{query}")
    assert answer.status_code == 422, answer.text
