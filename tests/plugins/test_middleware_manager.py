"""MiddlewareManager: priority order on real requests, hooks, errors, and the bundled middleware."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from pixsim7_testing.plugins import write_plugin

from pixsim7.backend.main.infrastructure.discovery.middleware import (
    MiddlewareError,
    MiddlewareManager,
    MiddlewareManifestError,
)
from pixsim7.backend.main.shared.config import PACKAGE_DIR, Settings

TAGGING_MIDDLEWARE = """
from starlette.datastructures import MutableHeaders


class Tag:
    def __init__(self, app, tag):
        self.app = app
        self.tag = tag

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {{}}).setdefault("trace", []).append(self.tag)

        async def tagged(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                previous = headers.get("x-trace")
                headers["x-trace"] = previous + "," + self.tag if previous else self.tag
            await send(message)

        await self.app(scope, receive, tagged)


def build(settings):
    return Tag, {{"tag": "{id}"}}


def on_startup(app):
    app.state.events.append(("startup", "{id}"))


async def on_shutdown(app):
    app.state.events.append(("shutdown", "{id}"))
    {shutdown_extra}
"""


def write_middleware(
    root: Path, mid: str, priority: int, *, enabled: bool = True, shutdown_extra: str = ""
) -> Path:
    manifest = (
        f'id = "{mid}"\nname = "{mid}"\nversion = "1.0"\npriority = {priority}\n'
        f"enabled = {'true' if enabled else 'false'}\n"
    )
    code = TAGGING_MIDDLEWARE.format(id=mid, shutdown_extra=shutdown_extra)
    return write_plugin(root, mid, code, manifest_text=manifest)


def traced_app() -> FastAPI:
    app = FastAPI()
    app.state.events = []

    @app.get("/trace")
    async def trace(request: Request) -> list[str]:
        return request.state.trace

    return app


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_lowest_priority_is_outermost(tmp_path: Path) -> None:
    # Folder names sort the opposite way to priorities, so only priority can explain the order.
    write_middleware(tmp_path, "a_inner", 30)
    write_middleware(tmp_path, "b_middle", 20)
    write_middleware(tmp_path, "c_outer", 10)
    write_middleware(tmp_path, "d_off", 5, enabled=False)
    app = traced_app()
    manager = MiddlewareManager(tmp_path)
    manager.discover()
    assert manager.install(app, settings=None) == ["c_outer", "b_middle", "a_inner"]

    async with client_for(app) as client:
        response = await client.get("/trace")
    assert response.json() == ["c_outer", "b_middle", "a_inner"]
    # Responses travel outward, so the innermost tags first.
    assert response.headers["x-trace"] == "a_inner,b_middle,c_outer"

    await manager.startup(app)
    await manager.shutdown(app)
    assert app.state.events == [
        ("startup", "c_outer"),
        ("startup", "b_middle"),
        ("startup", "a_inner"),
        ("shutdown", "a_inner"),
        ("shutdown", "b_middle"),
        ("shutdown", "c_outer"),
    ]
    summary = manager.summary()
    assert summary["order"] == ["c_outer", "b_middle", "a_inner"]
    statuses = {m["id"]: (m["priority"], m["status"]) for m in summary["middleware"]}
    assert statuses == {
        "d_off": (5, "disabled"),
        "c_outer": (10, "stopped"),
        "b_middle": (20, "stopped"),
        "a_inner": (30, "stopped"),
    }


async def test_failing_shutdown_hook_is_logged_and_others_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_middleware(tmp_path, "outer", 1)
    write_middleware(tmp_path, "inner", 2, shutdown_extra="raise RuntimeError('stuck')")
    app = traced_app()
    manager = MiddlewareManager(tmp_path)
    manager.install(app, settings=None)
    await manager.startup(app)
    with caplog.at_level(logging.ERROR, logger="pixsim7.middleware"):
        await manager.shutdown(app)
    assert ("shutdown", "outer") in app.state.events
    assert manager.get("inner").error == "RuntimeError: stuck"
    assert "inner" in caplog.text


async def test_manifest_errors_name_the_path(tmp_path: Path) -> None:
    folder = write_plugin(
        tmp_path, "bad", "", manifest_text='id = "bad"\nname = "Bad"\nversion = "1"\n'
    )
    with pytest.raises(MiddlewareManifestError) as info:
        MiddlewareManager(tmp_path).discover()
    assert str(folder / "manifest.toml") in str(info.value)
    assert "'priority' is required" in str(info.value)


async def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    write_middleware(tmp_path, "one", 1)
    write_plugin(
        tmp_path,
        "two",
        "",
        manifest_text='id = "one"\nname = "Two"\nversion = "1"\npriority = 2\n',
    )
    with pytest.raises(MiddlewareManifestError, match="also declared by"):
        MiddlewareManager(tmp_path).discover()


async def test_build_errors_name_the_middleware(tmp_path: Path) -> None:
    folder = write_plugin(
        tmp_path,
        "broken",
        "def build(settings):\n    return 'nope'\n",
        manifest_text='id = "broken"\nname = "B"\nversion = "1"\npriority = 1\n',
    )
    manager = MiddlewareManager(tmp_path)
    with pytest.raises(MiddlewareError) as info:
        manager.install(FastAPI(), settings=None)
    assert "'broken'" in str(info.value)
    assert str(folder / "manifest.toml") in str(info.value)
    assert manager.get("broken").status == "failed"


async def test_two_managers_load_separate_modules(tmp_path: Path) -> None:
    write_middleware(tmp_path, "solo", 1)
    first, second = MiddlewareManager(tmp_path), MiddlewareManager(tmp_path)
    first.install(traced_app(), settings=None)
    second.install(traced_app(), settings=None)
    assert first.module("solo") is not second.module("solo")
    assert first.module("solo") is not None


def bundled_app() -> tuple[FastAPI, MiddlewareManager]:
    settings = Settings(_env_file=None, cors_origins=["http://allowed.example"])
    app = FastAPI()

    @app.get("/hello")
    async def hello(request: Request) -> dict[str, str]:
        return {"request_id": request.state.request_id}

    manager = MiddlewareManager(PACKAGE_DIR / "middleware")
    manager.install(app, settings)
    return app, manager


async def test_bundled_middleware(caplog: pytest.LogCaptureFixture) -> None:
    app, manager = bundled_app()
    assert manager.installed_ids() == ["request_id", "request_logging", "cors"]
    async with client_for(app) as client:
        with caplog.at_level(logging.INFO, logger="pixsim7.requests"):
            generated = await client.get("/hello")
        echoed = await client.get("/hello", headers={"X-Request-ID": "abc-123"})
        unsafe = await client.get("/hello", headers={"X-Request-ID": "bad id\twith spaces"})
        preflight = await client.options(
            "/hello",
            headers={
                "Origin": "http://allowed.example",
                "Access-Control-Request-Method": "GET",
            },
        )
        foreign = await client.get("/hello", headers={"Origin": "http://evil.example"})
        allowed = await client.get("/hello", headers={"Origin": "http://allowed.example"})

    request_id = generated.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert generated.json() == {"request_id": request_id}
    assert echoed.headers["x-request-id"] == "abc-123"
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe.headers["x-request-id"])

    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://allowed.example"
    assert "access-control-allow-origin" not in foreign.headers
    assert allowed.headers["access-control-allow-origin"] == "http://allowed.example"
    assert allowed.headers["access-control-expose-headers"] == "X-Request-ID"
    # Without an Origin no CORS header, but caches learn the answer depends on Origin.
    assert "access-control-allow-origin" not in generated.headers
    assert [r.headers.get("vary") for r in (generated, foreign, allowed)] == ["Origin"] * 3

    records = [r for r in caplog.records if r.name == "pixsim7.requests"]
    assert len(records) == 1
    assert re.fullmatch(r"GET /hello 200 \d+\.\dms", records[0].getMessage())
    assert records[0].request_id == request_id
