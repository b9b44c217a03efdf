"""Input PostgreSQL, Redis or the JSON encoder cannot take gets a 422 naming the field.

Every case is sent as raw bytes to the real `pixsim7-backend serve`; its log must show no
traceback afterwards, and nothing a refused request carried may be stored.
"""

from __future__ import annotations

import httpx
import pytest

from .conftest import client_input_failures

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}
PRESET = '"provider_id": "pixverse", "operation": "text_to_video"'

# (path, raw JSON body, the loc the 422 must name)
REFUSED = {
    "NUL in a preset name": (
        "/api/v1/presets", '{"name": "a\\u0000b", ' + PRESET + "}", ["body", "name"]),
    "NUL in a preset operation": (
        "/api/v1/presets",
        '{"name": "nul-op", "provider_id": "pixverse", "operation": "t\\u0000"}',
        ["body", "operation"]),
    "lone surrogate in a preset name": (
        "/api/v1/presets", '{"name": "\\ud800", ' + PRESET + "}", ["body", "name"]),
    "lone surrogate in a too long name": (
        "/api/v1/presets", '{"name": "' + "x" * 200 + '\\udfff", ' + PRESET + "}",
        ["body", "name"]),
    "NaN in params": (
        "/api/v1/presets", '{"name": "nan", ' + PRESET + ', "params": {"seed": NaN}}',
        ["body", "params", "seed"]),
    "Infinity in params": (
        "/api/v1/presets", '{"name": "inf", ' + PRESET + ', "params": {"w": [1, -Infinity]}}',
        ["body", "params", "w", 1]),
    "1e400 in params": (
        "/api/v1/presets", '{"name": "big", ' + PRESET + ', "params": {"cfg": 1e400}}',
        ["body", "params", "cfg"]),
    "a preset body that is only 1e400": ("/api/v1/presets", "1e400", ["body"]),
    "a job body that is only NaN": ("/api/v1/jobs", "NaN", ["body"]),
    "NaN in a job payload": (
        "/api/v1/jobs", '{"kind": "render", "payload": {"x": NaN}}', ["body", "payload", "x"]),
    "lone surrogate in a job payload": (
        "/api/v1/jobs", '{"kind": "render", "payload": {"t": "\\udc80"}}',
        ["body", "payload", "t"]),
    "lone surrogate in a job payload key": (
        "/api/v1/jobs", '{"kind": "render", "payload": {"\\ud800": 1}}', ["body", "payload"]),
    "a number 5000 digits long": (
        "/api/v1/jobs", '{"kind": "render", "payload": {"n": ' + "9" * 5000 + "}}",
        ["body", "payload", "n"]),
    "nesting 100000 deep": ("/api/v1/jobs", "[" * 100_000 + "]" * 100_000, ["body"]),
}


@pytest.mark.parametrize("debug", ["true", "false"])
def test_unstorable_input_gets_a_422_naming_the_field_and_no_traceback(served_api, debug) -> None:
    serve = served_api(DEBUG=debug, SECRET_KEY="hardening-secret-key-not-the-default")
    answers = {}
    with httpx.Client(base_url=serve.base_url, timeout=10) as client:
        for name, (path, body, _loc) in REFUSED.items():
            response = client.post(path, content=body.encode("utf-8", "surrogatepass"),
                                   headers=JSON)
            answers[name] = (response.status_code, response.json()["detail"][0]["loc"][:len(_loc)])
        presets = client.get("/api/v1/presets")
        jobs = client.get("/api/v1/jobs/status")
    assert answers == {name: (422, loc) for name, (_path, _body, loc) in REFUSED.items()}
    assert presets.status_code == 200, presets.text
    assert [p["name"] for p in presets.json() if p["name"] in {"nan", "inf", "big", "nul-op"}] \
        == []
    assert jobs.json()["queued"] == 0
    assert client_input_failures(serve) == [], serve.describe()


def test_an_escaped_surrogate_pair_is_an_ordinary_character(served_api) -> None:
    # An escaped high + low surrogate in JSON text is one valid character (U+1F600).
    serve = served_api()
    body = '{"name": "smile-\\ud83d\\ude00", ' + PRESET + ', "params": {"t": "\\ud83d\\ude00"}}'
    created = httpx.post(f"{serve.base_url}/api/v1/presets", content=body.encode(),
                         headers=JSON, timeout=10)
    assert created.status_code == 201, created.text
    listed = httpx.get(f"{serve.base_url}/api/v1/presets", timeout=10).json()
    stored = [p for p in listed if p["name"] == "smile-\U0001F600"]
    assert [p["params"] for p in stored] == [{"t": "\U0001F600"}]
    assert client_input_failures(serve) == [], serve.describe()


def test_a_validation_error_repeats_only_an_excerpt_of_the_input(served_api) -> None:
    serve = served_api()
    name = "n" * 900_000
    response = httpx.post(f"{serve.base_url}/api/v1/presets",
                          json={"name": name, "provider_id": "pixverse",
                                "operation": "text_to_video"}, timeout=10)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "name"]
    assert len(response.content) < 1000, len(response.content)
    assert client_input_failures(serve) == [], serve.describe()


# (content type, raw body): none of them is a JSON object the routes could take.
ODD_BODIES = {
    "invalid UTF-8 as JSON": ("application/json", b'{"name": "\xff\xfe"}'),
    "invalid UTF-8 as text": ("text/plain", b"\xff\xfe\x00"),
    "a form": ("application/x-www-form-urlencoded", b"name=a&provider_id=b"),
    "truncated JSON": ("application/json", b'{"name": "cut'),
    "JSON with a BOM": ("application/json", b"\xef\xbb\xbf{}"),
    "an array": ("application/json", b"[1, 2, 3]"),
    "null": ("application/json", b"null"),
}


@pytest.mark.parametrize("path", ["/api/v1/presets", "/api/v1/jobs"])
def test_bodies_that_are_not_a_json_object_get_a_4xx_and_no_traceback(served_api, path) -> None:
    serve = served_api()
    statuses = {}
    with httpx.Client(base_url=serve.base_url, timeout=10) as client:
        for name, (content_type, body) in ODD_BODIES.items():
            response = client.post(path, content=body, headers={"Content-Type": content_type})
            statuses[name] = response.status_code
            assert len(response.content) < 2000, (name, response.text)
    assert all(400 <= status < 500 for status in statuses.values()), statuses
    assert client_input_failures(serve) == [], serve.describe()


def test_an_oversized_request_head_is_refused(served_api) -> None:
    serve = served_api(MAX_HEADER_BYTES="4096")
    statuses = [httpx.get(f"{serve.base_url}{path}", headers=headers).status_code
                for path, headers in [("/ready", {"X-Big": "h" * 8192}),
                                      ("/ready?" + "q" * 8192, {}),
                                      ("/ready", {f"X-{n}": "h" * 100 for n in range(60)})]]
    assert statuses == [431, 431, 431]
    assert httpx.get(f"{serve.base_url}/ready", headers={"X-Small": "h" * 1000}).status_code \
        == 200
    assert client_input_failures(serve) == [], serve.describe()
