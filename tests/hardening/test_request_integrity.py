"""A request that fails stores nothing, and whatever is stored can be listed again."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pixsim7_testing.apps import started

pytestmark = pytest.mark.integration

PRESET = {"provider_id": "pixverse", "operation": "text_to_video"}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


# Raw JSON text, so the lone surrogate reaches the server exactly as a client can send it.
POISON_PARAMS = {
    "nested 500 deep": json.dumps(nested(500)),
    "lone surrogate": '{"prompt": "\\ud800"}',
}


@pytest.mark.parametrize("params", POISON_PARAMS.values(), ids=POISON_PARAMS)
async def test_a_preset_that_cannot_be_read_back_is_refused_and_not_stored(
    app_factory, params: str
) -> None:
    running = await started(app_factory)
    client = running.client
    body = '{"name": "poison", "provider_id": "pixverse", "operation": "text_to_video", ' \
           f'"params": {params}}}'
    first = await client.post("/api/v1/presets", content=body,
                              headers={"Content-Type": "application/json"})
    assert first.status_code == 422, first.text
    assert first.json()["detail"][0]["loc"][:2] == ["body", "params"], first.text
    listed = await client.get("/api/v1/presets")
    assert listed.status_code == 200, listed.text
    assert "poison" not in [preset["name"] for preset in listed.json()]
    # The name was not taken by the refused request.
    clean = await client.post("/api/v1/presets", json={"name": "poison", **PRESET})
    assert clean.status_code == 201, clean.text
