"""The pixsim7 testing kit as a pytest plugin (`-p testing.plugin`).

Fixtures: `kit_services` (session: PostgreSQL and Redis from the chosen backend),
`test_database` and `redis_namespace` (per test, removed after; a test marked `template_db`
gets a clone of the run's migrated and seeded template, `kit_template`), `make_settings` /
`app_settings` (backend settings aimed at them), `fault_proxy` (cut / blackhole / restore a
service), `app_factory` (build an app, run its lifespan, give a client, milestones and
app.state inventory), `kit_normalizer` and `snapshot_json` (syrupy JSON snapshots),
`backend_env` / `backend_services_env` (a subprocess environment without the parent's backend
settings, the second aimed at this test's database and Redis) and `backend_processes` (start
the real CLI, stopped after the test).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from syrupy.extensions.json import JSONSnapshotExtension

from testing.apps import DEFAULT_FACTORY, AppFactory, RunningApp, load_factory, start_app
from testing.inventory import Normalizer
from testing.isolation import (
    IsolatedDatabase,
    RedisNamespace,
    admin_connection,
    create_database,
    drop_database,
    new_namespace,
    ssl_negotiation_skipped,
)
from testing.ownership import reap_leftovers
from testing.processes import BackendProcess, start_backend
from testing.processes import backend_env as build_backend_env
from testing.proxy import FaultProxy
from testing.services import (
    ServiceSet,
    ServiceStartError,
    describe_selection,
    select_backend,
)
from testing.session import WORKERINPUT_KEY, RunServices
from testing.snapshots import milestones_as_lines
from testing.template import TemplateDatabase, template_name

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = REPO_ROOT / "pixsim7" / "backend" / "main"
RUN_SERVICES = pytest.StashKey[RunServices]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "pixsim7_app_factory",
        "module:callable that builds the app from a Settings object",
        default=DEFAULT_FACTORY,
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    try:
        return [f"pixsim7 services: {describe_selection(select_backend())}"]
    except ServiceStartError as exc:
        return [f"pixsim7 services: {exc}"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "template_db: test_database is a clone of the run's migrated and seeded template "
        "instead of an empty database (for tests that do not pin schema creation)",
    )
    workerinput = getattr(config, "workerinput", None)
    config.stash[RUN_SERVICES] = (RunServices.from_workerinput(workerinput[WORKERINPUT_KEY])
                                  if workerinput and WORKERINPUT_KEY in workerinput
                                  else RunServices())


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    # Before xdist starts workers (and so the services): only the owning process cleans up.
    if not hasattr(session.config, "workerinput"):
        line = reap_leftovers()
        if line:
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(line)
            else:
                print(line, file=sys.stderr)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: start the run's services once and hand them to each worker."""
    node.workerinput[WORKERINPUT_KEY] = node.config.stash[RUN_SERVICES].workerinput()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    session.config.stash[RUN_SERVICES].stop()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    line = config.stash[RUN_SERVICES].summary()
    if line:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def kit_services(pytestconfig: pytest.Config) -> ServiceSet:
    """PostgreSQL and Redis for the whole run (one set, shared by xdist workers), stopped and
    removed at its end."""
    try:
        return pytestconfig.stash[RUN_SERVICES].get()
    except ServiceStartError as exc:
        raise ServiceStartError(str(exc)) from None


@pytest.fixture(scope="session")
def _kit_sslmode(kit_services: ServiceSet) -> Iterator[None]:
    with ssl_negotiation_skipped(kit_services.postgres):
        yield


@pytest.fixture(scope="session")
def kit_template(request: pytest.FixtureRequest, kit_services: ServiceSet,
                 _kit_sslmode: None) -> Iterator[TemplateDatabase]:
    """The run's template database, made once per run (shared by xdist workers) by the app's
    own schema and seed steps; nobody can connect to it. Dropped by its last user."""
    # xdist gives every worker of a run the same id, so they share one template. Not the
    # environment variable: a session started from inside a worker would inherit it.
    workerinput = getattr(request.config, "workerinput", {})
    run_id = workerinput.get("testrunuid") or uuid.uuid4().hex
    template = TemplateDatabase(kit_services.postgres, template_name(run_id)).acquire()
    try:
        yield template
    finally:
        template.release()


@pytest.fixture
def _database_template(request: pytest.FixtureRequest) -> TemplateDatabase | None:
    # A sync fixture, so that the session template is never first set up inside a test's loop.
    if request.node.get_closest_marker("template_db") is None:
        return None
    return request.getfixturevalue("kit_template")


@pytest_asyncio.fixture
async def test_database(
    kit_services: ServiceSet, _kit_sslmode: None, _database_template: TemplateDatabase | None
) -> AsyncIterator[IsolatedDatabase]:
    """A database created for this test and dropped after it: empty, or a clone of the run's
    template when the test is marked `template_db`."""
    # One admin connection for both ends of the test: a connection costs as much as a CREATE.
    admin = await admin_connection(kit_services.postgres)
    try:
        if _database_template is not None:
            database = await _database_template.clone(admin)
        else:
            database = await create_database(kit_services.postgres, admin=admin)
        try:
            yield database
        finally:
            await drop_database(database, admin)
    finally:
        await admin.close()


@pytest_asyncio.fixture
async def redis_namespace(kit_services: ServiceSet) -> AsyncIterator[RedisNamespace]:
    """A Redis key prefix for this test; its keys are deleted after it."""
    namespace = new_namespace(kit_services.redis)
    try:
        yield namespace
    finally:
        await namespace.clear()


@pytest.fixture
def fault_proxy(kit_services: ServiceSet) -> Iterator[Callable[[str], FaultProxy]]:
    """`fault_proxy("postgres" | "redis")`: a started proxy in front of that service."""
    proxies: list[FaultProxy] = []

    def make(service: str) -> FaultProxy:
        endpoints = {"postgres": kit_services.postgres, "redis": kit_services.redis}
        if service not in endpoints:
            raise ValueError(f"fault_proxy: unknown service {service!r}; use postgres or redis")
        endpoint = endpoints[service]
        proxy = FaultProxy(endpoint.host, endpoint.port, name=service).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def make_settings(
    test_database: IsolatedDatabase, redis_namespace: RedisNamespace, tmp_path: Path
) -> Callable[..., Any]:
    """`make_settings(**overrides)`: backend Settings aimed at this test's database and Redis.

    `database_proxy=` / `redis_proxy=` route the app through a `fault_proxy`.
    """
    from pixsim7.backend.main.shared.config import Settings

    def make(*, database_proxy: FaultProxy | None = None, redis_proxy: FaultProxy | None = None,
             **overrides: Any) -> Settings:
        database_url = test_database.sqlalchemy_url
        redis_url = redis_namespace.url
        if database_proxy is not None:
            database_url = database_proxy.rewrite_url(database_url)
        if redis_proxy is not None:
            redis_url = redis_proxy.rewrite_url(redis_url)
        values: dict[str, Any] = {
            "debug": True,
            "database_url": database_url,
            "redis_url": redis_url,
            "redis_key_prefix": redis_namespace.prefix,
            "secret_key": "kit-secret-key",
            "admin_token": "kit-admin-token",
            "data_dir": tmp_path / "data",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def app_settings(make_settings: Callable[..., Any]) -> Any:
    return make_settings()


@pytest.fixture
def kit_normalizer(tmp_path: Path) -> Normalizer:
    return Normalizer({tmp_path: "<tmp_path>", PACKAGE_DIR: "<package>", REPO_ROOT: "<repo>"})


@pytest_asyncio.fixture
async def app_factory(
    request: pytest.FixtureRequest, make_settings: Callable[..., Any], kit_normalizer: Normalizer
) -> AsyncIterator[Callable[..., Any]]:
    """`await app_factory(settings, factory=None)`: a RunningApp; shut down after the test."""
    default_factory = request.config.getini("pixsim7_app_factory")
    running: list[RunningApp] = []

    async def start(settings: Any = None, factory: AppFactory | str | None = None) -> RunningApp:
        settings = make_settings() if settings is None else settings
        build = factory if callable(factory) else load_factory(factory or default_factory)
        app = await start_app(build, settings, kit_normalizer)
        running.append(app)
        return app

    yield start
    for app in reversed(running):
        await app.stop()


@pytest.fixture
def snapshot_json(snapshot: Any) -> Any:
    """A syrupy snapshot stored as a readable JSON file under __snapshots__/, one line per
    milestone; `snapshot_json(include=subtrees(...))` pins only part of the data."""
    return snapshot.with_defaults(extension_class=JSONSnapshotExtension,
                                  matcher=milestones_as_lines)


@pytest.fixture
def backend_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a `pixsim7-backend` subprocess: the parent's without any backend
    setting, PYTHONUNBUFFERED=1 and PIXSIM7_DATA_DIR=<tmp_path>/data. No database is made."""
    return build_backend_env(PIXSIM7_DATA_DIR=str(tmp_path / "data"))


@pytest.fixture
def backend_services_env(
    backend_env: dict[str, str], test_database: IsolatedDatabase, redis_namespace: RedisNamespace
) -> dict[str, str]:
    """`backend_env` plus DATABASE_URL, REDIS_URL and REDIS_KEY_PREFIX of this test."""
    return {
        **backend_env,
        "DATABASE_URL": test_database.url,
        "REDIS_URL": redis_namespace.url,
        "REDIS_KEY_PREFIX": redis_namespace.prefix,
    }


@pytest.fixture
def backend_processes(tmp_path: Path) -> Iterator[Callable[..., BackendProcess]]:
    """`backend_processes(command, env, **kw)`: a started `pixsim7-backend` command, or `arq`
    for the worker through arq's command line (see `testing.processes.start_backend`; cwd
    defaults to tmp_path; a second process of one command gets a log of its own). Every one
    still running after the test gets SIGTERM, then a kill after 15 s."""
    started: list[BackendProcess] = []

    def start(command: str, env: dict[str, str], *, cwd: Path | None = None,
              **kwargs: Any) -> BackendProcess:
        if "name" not in kwargs and "log" not in kwargs:  # one log file per process
            taken = sum(process.name.split("#")[0] == command for process in started)
            kwargs["name"] = f"{command}#{taken + 1}" if taken else command
        process = start_backend(command, env, cwd or tmp_path, **kwargs)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.send()
        for process in started:
            process.stop(timeout=15.0)
