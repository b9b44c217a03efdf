"""Property-based fuzzing of every HTTP operation in the app's own OpenAPI schema.

The app runs its real lifespan through the kit (real PostgreSQL and Redis) and is served by
uvicorn on a loopback port in the kit's event loop; schemathesis generates requests from the
served /openapi.json in a worker thread and checks each response: no 5xx, a documented status
code, a documented content type and headers, a body that matches the documented schema, and
(for invalid input) a rejection.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from testing.apps import started
from testing.polling import wait_until_async

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # FastAPI versions that copy included routes into the app's list
    iter_route_contexts = None

# None of these pins schema creation or seeding: their apps start on a template clone.
pytestmark = [pytest.mark.integration, pytest.mark.template_db]

ADMIN_HEADERS = {"Authorization": "Bearer kit-admin-token"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
CONFORMANCE_CHECKS = CHECKS[1:]
MAX_EXAMPLES = 50
OUTAGE_EXAMPLES = 8
PRESET = {"name": "fuzz-conflict", "provider_id": "pixverse",
          "operation": "text_to_video", "params": {}}
REQUEST_TIMEOUT = 10.0
FUZZ_BUDGET_SECONDS = 150.0


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """Serve an app whose lifespan already ran over HTTP on 127.0.0.1; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_config=None, http="h11", ws="none",
                            access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server._serve(sockets=[sock]))
    try:
        def serving() -> bool:
            if task.done():
                task.result()  # raises what stopped the server
            return server.started

        await wait_until_async(serving, timeout=10, interval=0.01, message="uvicorn did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(10):
            await task
        sock.close()


def no_internal_error(ctx: Any, response: Response, case: schemathesis.Case) -> None:
    """An outage of a dependency is a clean 503, never a bare 500."""
    if response.status_code == 500:
        raise AssertionError(f"500 from {case.operation.label}: {response.text[:200]}")


def fuzz_operation(operation: Any, mode: GenerationMode, base_url: str, checks: list[Any],
                   max_examples: int) -> None:
    """Run generated cases for one operation; raises the first (shrunk) failure."""
    if mode is GenerationMode.NEGATIVE:
        checks = [*checks, negative_data_rejection]

    @settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, headers=ADMIN_HEADERS, timeout=REQUEST_TIMEOUT)
        case.validate_response(response, checks=checks, headers=ADMIN_HEADERS)

    run()


def modes_for(operation: Any) -> list[GenerationMode]:
    """Positive cases always; negative ones where the operation takes any input to break."""
    inputs = (operation.body, operation.path_parameters, operation.query, operation.headers,
              operation.cookies)
    if any(len(container) for container in inputs):
        return [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    return [GenerationMode.POSITIVE]


def fuzz_schema(base_url: str, checks: list[Any] = CHECKS, max_examples: int = MAX_EXAMPLES,
                negative: bool = True) -> tuple[list[str], list[str]]:
    """(labels of fuzzed operations, failure reports), over every operation and mode."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=REQUEST_TIMEOUT)
    labels, failures = [], []
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        for mode in modes_for(operation) if negative else [GenerationMode.POSITIVE]:
            try:
                fuzz_operation(operation, mode, base_url, checks, max_examples)
            except (Exception, BaseExceptionGroup) as exc:  # every finding is reported together
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
    return labels, failures


def documented_operations(app: FastAPI) -> set[str]:
    """`METHOD path` of every HTTP route the running app puts in its schema."""
    routes = iter_route_contexts(app.routes) if iter_route_contexts is not None else app.routes
    return {f"{method} {route.path}" for route in routes
            for method in getattr(route, "methods", None) or ()
            if getattr(route, "include_in_schema", False) and method != "HEAD"}


async def test_every_operation_survives_fuzzing_and_conforms_to_its_schema(app_factory) -> None:
    running = await started(app_factory)
    expected = documented_operations(running.app)
    async with served(running.app) as base_url:
        labels, failures = await asyncio.wait_for(
            asyncio.to_thread(fuzz_schema, base_url), FUZZ_BUDGET_SECONDS)
    assert failures == [], "\n\n".join(failures)
    assert len(expected) >= 8
    assert expected <= set(labels)


async def test_every_operation_documents_what_it_answers_while_database_and_redis_are_down(
    app_factory, make_settings, fault_proxy
) -> None:
    db_proxy, redis_proxy = fault_proxy("postgres"), fault_proxy("redis")
    running = await started(app_factory, make_settings(
        database_proxy=db_proxy, redis_proxy=redis_proxy, ready_cache_ttl=0,
        ready_check_timeout=0.5, database_connect_timeout=1.0, redis_connect_timeout=0.5))
    expected = documented_operations(running.app)
    async with served(running.app) as base_url:
        db_proxy.cut()
        redis_proxy.cut()
        try:
            labels, failures = await asyncio.wait_for(asyncio.to_thread(
                fuzz_schema, base_url, [no_internal_error, *CONFORMANCE_CHECKS],
                OUTAGE_EXAMPLES, False), FUZZ_BUDGET_SECONDS)
            ready = await running.get("/ready")
        finally:
            db_proxy.restore()
            redis_proxy.restore()
    assert ready.status_code == 503
    assert failures == [], "\n\n".join(failures)
    assert expected <= set(labels)


async def test_a_duplicate_preset_gets_a_documented_409(app_factory) -> None:
    running = await started(app_factory)
    async with served(running.app) as base_url:
        def create_twice() -> list[int]:
            schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json",
                                                   timeout=REQUEST_TIMEOUT)
            operation = schema["/api/v1/presets"]["POST"]
            statuses = []
            for _ in range(2):
                case = operation.Case(body=dict(PRESET), media_type="application/json")
                response = case.call(base_url=base_url, timeout=REQUEST_TIMEOUT)
                case.validate_response(response, checks=CHECKS)
                statuses.append(response.status_code)
            return statuses

        statuses = await asyncio.wait_for(asyncio.to_thread(create_twice), 60)
    assert statuses == [201, 409]
