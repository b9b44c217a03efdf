"""The app factory runs a real lifespan; milestones and app.state are captured stably."""

from __future__ import annotations

from pixsim7_testing.inventory import Normalizer, dumps, state_inventory
from syrupy.filters import paths

from pixsim7.backend.main.main import create_app as create_backend_app
from tests.kit.sample_app import create_app


async def test_lifespan_runs_around_the_test_with_a_client(app_factory) -> None:
    running = await app_factory(factory=create_app)
    assert running.started
    assert (await running.client.post("/notes/hello")).json() == {"id": 1}
    assert (await running.get("/notes")).json() == {"rows": ["hello"], "keys": 1}
    await running.stop()
    assert running.app.state.db.is_closed()


async def test_milestones_in_order_from_record_fields(app_factory) -> None:
    running = await app_factory(factory=create_app)
    assert running.recorder.steps("startup") == [("database", "ok"), ("redis", "ok")]
    await running.stop()
    assert running.recorder.steps("shutdown") == [("redis", "ok"), ("database", "ok")]
    assert running.milestones[0] == {"phase": "startup", "step": "database", "status": "ok",
                                     "tables": 1}


async def test_startup_failure_is_kept_with_its_milestones(app_factory, make_settings,
                                                          fault_proxy) -> None:
    proxy = fault_proxy("postgres")
    proxy.cut()
    running = await app_factory(make_settings(database_proxy=proxy), factory=create_app)
    assert not running.started
    assert isinstance(running.startup_error, OSError)
    assert running.recorder.steps("startup") == [("database", "failed")]


async def test_inventory_is_byte_identical_across_runs(app_factory, make_settings,
                                                       fault_proxy) -> None:
    # The second app runs through a proxy: another port, same database server.
    first = await app_factory(factory=create_app)
    second = await app_factory(make_settings(database_proxy=fault_proxy("postgres")),
                               factory=create_app)
    assert first.app.state.settings.database_url != second.app.state.settings.database_url
    assert dumps(first.inventory()) == dumps(second.inventory())


async def test_inventory_snapshot(app_factory, snapshot_json) -> None:
    running = await app_factory(factory=create_app)
    await running.stop()
    # The settings are pinned once, by the full startup golden scenario.
    assert {"inventory": running.inventory(),
            "milestones": running.normalized_milestones()} == snapshot_json(
        exclude=paths("inventory.settings.summary"))


def test_normalizer_hides_volatile_values(tmp_path) -> None:
    normalize = Normalizer({tmp_path: "<tmp_path>"})
    state = {
        "url": "postgresql+asyncpg://postgres:pw@127.0.0.1:54321/pixsim7_t_gw1_0123456789",
        "data_dir": tmp_path / "data",
        "admin_token": "abc",
        "startup": {"duration_ms": 12.5, "started_at": 1700000000.0, "steps": 3},
        "request": "id 3f2b1c4d-1111-2222-3333-444455556666 at 0x7f00deadbeef",
        "prefix": "pixsim7:t:gw0_abcdef0123:",
    }
    assert state_inventory(state, normalize) == {
        "admin_token": {"type": "str", "summary": "<secret>"},
        "data_dir": {"type": "pathlib.PosixPath", "summary": "<tmp_path>/data"},
        "prefix": {"type": "str", "summary": "<test-prefix>"},
        "request": {"type": "str", "summary": "id <uuid> at <addr>"},
        "startup": {"type": "dict", "summary": {
            "duration_ms": "<duration>", "started_at": "<timestamp>", "steps": 3}},
        "url": {"type": "str", "summary": "postgresql+asyncpg://postgres@<host>:<port>/<test-db>"},
    }


async def test_record_milestones_around_a_plan_run_directly(app_settings) -> None:
    from fastapi import FastAPI
    from pixsim7_testing.milestones import record_milestones

    from pixsim7.backend.main.startup import Policy, Step, run_plan

    async def noop(app: FastAPI) -> None:
        return None

    app = FastAPI()
    app.state.settings = app_settings
    with record_milestones(app) as recorder:
        async with run_plan(app, (Step("one", noop, Policy.REQUIRED, noop),), "direct"):
            pass
    assert recorder.steps("startup") == [("one", "ok"), ("complete", "ok")]
    assert recorder.steps("shutdown") == [("one", "ok")]


async def test_two_apps_in_one_test_keep_their_own_milestones(app_factory, make_settings) -> None:
    worker = await app_factory(factory=lambda s: create_backend_app(s, profile="worker"))
    api = await app_factory(make_settings())
    assert worker.started and api.started
    await api.stop()
    await worker.stop()
    worker_steps = [step for step, _ in worker.recorder.steps("startup")]
    api_steps = [step for step, _ in api.recorder.steps("startup")]
    only_api = "middleware_lifecycle"  # the worker serves no HTTP
    assert only_api in api_steps and only_api not in worker_steps
    assert worker_steps.count("complete") == 1 and api_steps.count("complete") == 1
    # Each shutdown went to its own recorder only: each step once, middleware for the api alone.
    worker_down = [step for step, _ in worker.recorder.steps("shutdown")]
    api_down = [step for step, _ in api.recorder.steps("shutdown")]
    assert only_api in api_down and only_api not in worker_down
    assert len(set(worker_down)) == len(worker_down) and "database" in worker_down
