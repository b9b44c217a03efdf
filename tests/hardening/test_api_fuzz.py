"""Property-based fuzzing of every HTTP operation in the app's own OpenAPI schema.

The main run attacks the real `pixsim7-backend serve` over its socket with a fresh seed each
run (printed in the summary; PIXSIM7_FUZZ_SEED replays one) for a time budget
(PIXSIM7_FUZZ_SECONDS, 20 by default), not a fixed count: first every operation on its own,
with positive, negative and hostile cases (NaN, lone surrogates, NUL, deep nesting, huge
numbers put into valid bodies), then a stateful phase of random valid and hostile call
sequences after which the presets list must still answer. Every response is checked (no 5xx,
documented status, content type, headers and body) and the served process's log must show no
traceback. The outage tests serve an in-process app whose dependencies a fault proxy takes
away.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import random
import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from pixsim7_testing.apps import started
from pixsim7_testing.polling import wait_until_async
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

from .conftest import client_input_failures

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
OUTAGE_EXAMPLES = 8
HOSTILE = "hostile"
# The served run: a time budget split between single calls and call sequences.
DEFAULT_FUZZ_SECONDS = 20.0
STATELESS_SHARE = 0.65
ROUND_EXAMPLES = 25
STATEFUL_EXAMPLES = 10
STATEFUL_STEPS = 10
PRESET = {"name": "fuzz-conflict", "provider_id": "pixverse",
          "operation": "text_to_video", "params": {}}
REQUEST_TIMEOUT = 10.0
OUTAGE_DEADLINE_SECONDS = 120.0


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


class Counter:
    """Cases sent so far; `call` sends one and validates its response."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.cases = 0

    def call(self, case: schemathesis.Case, checks: list[Any]) -> Any:
        self.cases += 1
        response = case.call(base_url=self.base_url, headers=ADMIN_HEADERS,
                             timeout=REQUEST_TIMEOUT)
        case.validate_response(response, checks=checks, headers=ADMIN_HEADERS)
        return response


def no_internal_error(ctx: Any, response: Response, case: schemathesis.Case) -> None:
    """An outage of a dependency is a clean 503, never a bare 500."""
    if response.status_code == 500:
        raise AssertionError(f"500 from {case.operation.label}: {response.text[:200]}")


def fuzz_operation(operation: Any, mode: GenerationMode | str, counter: Counter,
                   checks: list[Any], max_examples: int, seed: int) -> None:
    """Run generated cases for one operation in `mode` (a GenerationMode, or HOSTILE);
    raises the first (shrunk) failure."""
    if mode is GenerationMode.NEGATIVE:
        checks = [*checks, negative_data_rejection]
    if mode == HOSTILE:
        cases, checks = hostile_case(operation), HOSTILE_CHECKS
    else:
        cases = operation.as_strategy(generation_mode=mode)

    @hypothesis.seed(seed)
    @settings(max_examples=max_examples, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def run(case: schemathesis.Case) -> None:
        counter.call(case, checks)

    run()


def modes_for(operation: Any) -> list[GenerationMode | str]:
    """Positive cases always; negative ones where the operation takes any input to break;
    hostile ones where it takes a body."""
    inputs = (operation.body, operation.path_parameters, operation.query, operation.headers,
              operation.cookies)
    modes: list[GenerationMode | str] = [GenerationMode.POSITIVE]
    if any(len(container) for container in inputs):
        modes.append(GenerationMode.NEGATIVE)
    if len(operation.body):
        modes.append(HOSTILE)
    return modes


def fuzz_outage(base_url: str, seed: int) -> tuple[list[str], list[str]]:
    """(labels of fuzzed operations, failure reports): valid cases for every operation."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=REQUEST_TIMEOUT)
    counter, labels, failures = Counter(base_url), [], []
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        try:
            fuzz_operation(operation, GenerationMode.POSITIVE, counter,
                           [no_internal_error, *CONFORMANCE_CHECKS], OUTAGE_EXAMPLES, seed)
        except (Exception, BaseExceptionGroup) as exc:  # every finding is reported together
            failures.append(f"{operation.label}: {describe(exc)}")
    return labels, failures


def documented_operations(app: FastAPI) -> set[str]:
    """`METHOD path` of every HTTP route the running app puts in its schema."""
    routes = iter_route_contexts(app.routes) if iter_route_contexts is not None else app.routes
    return {f"{method} {route.path}" for route in routes
            for method in getattr(route, "methods", None) or ()
            if getattr(route, "include_in_schema", False) and method != "HEAD"}


def nested(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = {"n": value}
    return value


SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")

# What a careless or hostile client puts where the schema expects ordinary values.
HOSTILE_VALUES = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf]),
    # Lone surrogates only: a high one followed by a low one is a valid pair in JSON text.
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3).filter(
        lambda text: not SURROGATE_PAIR.search(text)),
    st.text(min_size=0, max_size=5).map(lambda text: text + "\x00"),
    st.integers(65, 600).map(lambda depth: nested({}, depth)),
    # Longer than the server accepts, short enough for Python to write out.
    st.integers(1001, 4000).map(lambda digits: int("9" * digits)),
)


def hostile_case(operation: Any) -> st.SearchStrategy[schemathesis.Case]:
    """A valid case for `operation` with one value of its JSON body (or the body itself)
    replaced by a hostile one."""

    @st.composite
    def build(draw: st.DrawFn) -> schemathesis.Case:
        case = draw(operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
        value = draw(HOSTILE_VALUES)
        body = case.body if isinstance(case.body, dict) else None
        places = [(body, key) for key in body] if body else []
        places += [(item, key) for item in (body or {}).values() if isinstance(item, dict)
                   for key in item]
        if not places or draw(st.integers(0, 4)) == 0:
            body = value
        else:
            target, key = draw(st.sampled_from(places))
            target[key] = value
        # Raw bytes: client libraries refuse to write NaN or Infinity themselves.
        case.body = json.dumps(body).encode()
        return case

    return build()


def rejected(ctx: Any, response: Response, case: schemathesis.Case) -> None:
    """Hostile input gets a 4xx."""
    if not 400 <= response.status_code < 500:
        raise AssertionError(f"{response.status_code} for hostile input to "
                             f"{case.operation.label}: {response.text[:200]}; "
                             f"body sent: {case.body[:300]!r}")


HOSTILE_CHECKS = [not_a_server_error, rejected, content_type_conformance,
                  response_schema_conformance]


def describe(exc: BaseException) -> str:
    """An exception's message, with each sub-exception's for a group."""
    if isinstance(exc, BaseExceptionGroup):
        return "\n".join(describe(sub) for sub in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def fuzz_seed() -> int:
    """PIXSIM7_FUZZ_SEED when set (to replay a failure), else a fresh one."""
    pinned = os.environ.get("PIXSIM7_FUZZ_SEED", "").strip()
    return int(pinned) if pinned else random.SystemRandom().randrange(2**32)


def fuzz_budget() -> float:
    return float(os.environ.get("PIXSIM7_FUZZ_SECONDS", DEFAULT_FUZZ_SECONDS))


def fuzz_rounds(schema: Any, counter: Counter, seed: int, until: float) -> list[str]:
    """Each operation and mode in turn, ROUND_EXAMPLES cases at a time with a new seed per
    round, until the monotonic clock reaches `until`; the first failure's report."""
    operations = [result.ok() for result in schema.get_all_operations()]
    for round_number in itertools.count():
        for operation in operations:
            for mode in modes_for(operation):
                if time.monotonic() >= until:
                    return []
                try:
                    fuzz_operation(operation, mode, counter, CHECKS, ROUND_EXAMPLES,
                                   seed + round_number)
                except (Exception, BaseExceptionGroup) as exc:
                    return [f"{operation.label} [{getattr(mode, 'value', mode)}]: "
                            f"{describe(exc)}"]
    return []


def stateful_machine(schema: Any, counter: Counter) -> type[RuleBasedStateMachine]:
    """Random sequences of valid and hostile calls to any operation; after each, presets
    still list."""
    operations = [result.ok() for result in schema.get_all_operations()]
    valid = st.one_of(*(op.as_strategy(generation_mode=GenerationMode.POSITIVE)
                        for op in operations))
    hostile = st.one_of(*(hostile_case(op) for op in operations if len(op.body)))

    class Sequences(RuleBasedStateMachine):
        @rule(case=valid)
        def call(self, case: schemathesis.Case) -> None:
            counter.call(case, CHECKS)

        @rule(case=hostile)
        def attack(self, case: schemathesis.Case) -> None:
            counter.call(case, HOSTILE_CHECKS)

        @invariant()
        def presets_still_list(self) -> None:
            listed = httpx.get(f"{counter.base_url}/api/v1/presets", timeout=REQUEST_TIMEOUT)
            assert listed.status_code == 200, listed.text[:300]

    return Sequences


def run_stateful(schema: Any, counter: Counter, seed: int, until: float) -> list[str]:
    machine = stateful_machine(schema, counter)
    for round_number in itertools.count():
        if time.monotonic() >= until:
            break
        hypothesis.seed(seed + round_number)(machine)
        try:
            run_state_machine_as_test(machine, settings=settings(
                max_examples=STATEFUL_EXAMPLES, stateful_step_count=STATEFUL_STEPS, deadline=None,
                database=None, suppress_health_check=list(HealthCheck)))
        except (Exception, BaseExceptionGroup) as exc:
            return [f"stateful sequence: {describe(exc)}"]
    return []


@pytest.mark.slow(seconds=25)
def test_the_served_api_survives_fuzzing_for_its_time_budget(
    served_api, record_property
) -> None:
    seed, budget = fuzz_seed(), fuzz_budget()
    serve = served_api(ADMIN_TOKEN="kit-admin-token")
    schema = schemathesis.openapi.from_url(f"{serve.base_url}/openapi.json",
                                           timeout=REQUEST_TIMEOUT)
    counter = Counter(serve.base_url)
    began = time.monotonic()
    failures = fuzz_rounds(schema, counter, seed, began + budget * STATELESS_SHARE)
    stateless_cases = counter.cases
    if not failures:
        failures = run_stateful(schema, counter, seed, began + budget)
    took = time.monotonic() - began
    summary = (f"seed {seed} (replay: PIXSIM7_FUZZ_SEED={seed}): {counter.cases} cases "
               f"({stateless_cases} single, {counter.cases - stateless_cases} in sequences) "
               f"in {took:.1f}s")
    print(summary)
    record_property("fuzz", summary)
    assert failures == [], summary + "\n\n" + "\n\n".join(failures)
    assert client_input_failures(serve) == [], summary + "\n" + serve.describe()
    assert stateless_cases >= 100 and counter.cases > stateless_cases, summary


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
                fuzz_outage, base_url, fuzz_seed()), OUTAGE_DEADLINE_SECONDS)
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
