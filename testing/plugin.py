"""The pixsim7 testing kit as a pytest plugin, loaded through the `pytest11` entry point
`pixsim7` of the `pixsim7-testing` distribution: installing it is enough.

Fixtures: `kit_services` (session: PostgreSQL and Redis from the chosen backend),
`test_database` and `redis_namespace` (per test, removed after; a test marked `template_db`
gets a clone of the run's migrated and seeded template, `kit_template`), `kit_tier` and
`kit_shared_apps` (a test marked `rollback_db` shares its worker's started app for its
settings, inside a transaction rolled back after it; see `pixsim7_testing.rollback`),
`make_settings` / `app_settings` (backend Settings aimed at them), `fault_proxy` (cut /
blackhole / restore a service), `app_factory` (build an app, run its lifespan, give a client,
milestones and app.state inventory), `kit_normalizer` and `snapshot_json` (syrupy JSON
snapshots), `backend_env` / `backend_services_env` (a subprocess environment without the
parent's backend settings, the second aimed at this test's database and Redis),
`backend_processes` (start the real CLI, stopped after the test) and `servers_data_dir` (a
PIXSIM7_DATA_DIR for embedded servers, removed after the test).
"""

from __future__ import annotations

import inspect
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pixsim7_testing.apps import DEFAULT_FACTORY, AppFactory, RunningApp, load_factory, start_app
from pixsim7_testing.inventory import Normalizer
from pixsim7_testing.isolation import (
    DatabaseJanitor,
    IsolatedDatabase,
    RedisNamespace,
    admin_connection,
    new_namespace,
    ssl_negotiation_skipped,
)
from pixsim7_testing.ownership import reap_leftovers
from pixsim7_testing.processes import BackendProcess, start_backend
from pixsim7_testing.processes import backend_env as build_backend_env
from pixsim7_testing.proxy import FaultProxy
from pixsim7_testing.rollback import MARKER as ROLLBACK_MARKER
from pixsim7_testing.rollback import RollbackScope, SharedApps, refuse
from pixsim7_testing.services import (
    ServiceSet,
    ServiceStartError,
    describe_selection,
    select_backend,
)
from pixsim7_testing.session import WORKERINPUT_KEY, RunServices
from pixsim7_testing.snapshots import milestones_as_lines
from pixsim7_testing.template import TemplateClones, TemplateDatabase, template_name
from syrupy.extensions.json import JSONSnapshotExtension

from pixsim7.backend.main.infrastructure.embedded import private_folder
from pixsim7.backend.main.startup.trace import write_trace

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = REPO_ROOT / "pixsim7" / "backend" / "main"
RUN_SERVICES = pytest.StashKey[RunServices]()
STARTED_APPS = pytest.StashKey[list[RunningApp]]()  # each test's apps, for their traces
TIER_BY_MARKER = {"template_db": "template", ROLLBACK_MARKER: "rollback"}
PROCESS_MARKER = "backend_process"
# The event loop the kit's fixtures and the tests using them run on: one per session (per xdist
# worker), where the rollback tier's shared apps live.
KIT_LOOP_SCOPE = "session"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "pixsim7_app_factory",
        "module:callable that builds the app from a Settings object",
        default=DEFAULT_FACTORY,
    )
    parser.addoption(
        "--startup-trace", metavar="DIR", default=None,
        help="write the startup and shutdown of every app a test starts to DIR as Chrome "
             "Trace Event JSON (open them in ui.perfetto.dev); a failed test's are written "
             "to its tmp_path without this option")


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
    config.addinivalue_line(
        "markers",
        f"{ROLLBACK_MARKER}: app_factory gives a started app shared by this worker's tests "
        "with the same settings; the test runs in a transaction rolled back after it",
    )
    config.addinivalue_line(
        "markers",
        f"{PROCESS_MARKER}: set by the kit on every test that runs the backend's own commands "
        f"(it uses backend_env): `-m 'not {PROCESS_MARKER}'` keeps the tests that run in the "
        "test process",
    )
    workerinput = getattr(config, "workerinput", None)
    config.stash[RUN_SERVICES] = (RunServices.from_workerinput(workerinput[WORKERINPUT_KEY])
                                  if workerinput and WORKERINPUT_KEY in workerinput
                                  else RunServices())


def _trace_name(item: pytest.Item, number: int) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in item.nodeid)
    return f"{safe}{f'-{number + 1}' if number else ''}.trace.json"


def write_app_traces(item: pytest.Item, folder: Path) -> list[Path]:
    """The startup trace of each app `item` started, written to `folder`."""
    apps = item.stash.get(STARTED_APPS, [])
    timelines = [getattr(getattr(app.app, "state", None), "startup", None) for app in apps]
    return [write_trace(timeline, folder / _trace_name(item, n))
            for n, timeline in enumerate(timelines) if timeline is not None]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    if report.when == "call" and report.failed and item.stash.get(STARTED_APPS, []):
        folder = item.config.getoption("startup_trace")
        tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
        if folder is None and tmp_path is not None:
            folder = tmp_path
        if folder is not None:
            paths = write_app_traces(item, Path(folder))
            report.sections.append(("pixsim7 startup trace", "\n".join(
                f"{path} (open it in ui.perfetto.dev)" for path in paths)))
    return report


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_pycollect_makeitem(collector: Any, name: str, obj: object) -> Any:
    # Before pytest-asyncio sees it: an `async def` test without an `asyncio` mark of its own
    # runs on the kit's loop, in pytest-asyncio's strict mode as in auto, so that a project
    # needs no asyncio settings for the kit (a test's own mark still wins).
    if inspect.iscoroutinefunction(obj) and collector.get_closest_marker("asyncio") is None \
            and not any(mark.name == "asyncio" for mark in getattr(obj, "pytestmark", ())):
        pytest.mark.asyncio(loop_scope=KIT_LOOP_SCOPE)(obj)
    yield


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "backend_env" in getattr(item, "fixturenames", ()):
            item.add_marker(PROCESS_MARKER)
    # Without xdist the services start here, when a collected test needs them, so that a run
    # they cannot serve stops before any test (xdist's controller starts them for its workers).
    services = config.stash[RUN_SERVICES]
    if services.owner and any("kit_services" in getattr(item, "fixturenames", ())
                              for item in items):
        try:
            services.get()
        except ServiceStartError as exc:
            _services_did_not_start(str(exc))


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


def _services_did_not_start(error: str) -> None:
    # The run stops here, once, with the sentence: not once per test, and before syrupy could
    # call snapshots of tests that never ran unused.
    pytest.exit(f"pixsim7 testing kit: {error}", returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: start the run's services once and hand them to each worker."""
    services = node.config.stash[RUN_SERVICES]
    node.workerinput[WORKERINPUT_KEY] = services.workerinput()
    if services.error is not None:
        _services_did_not_start(services.error)


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
        _services_did_not_start(str(exc))
        raise  # not reached: pytest.exit raised


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
def kit_tier(request: pytest.FixtureRequest) -> str:
    """The test's isolation tier: `empty` (no marker), `template` or `rollback`; the closest
    marker wins, so one test can leave its module's tier."""
    for marker in request.node.iter_markers():
        if marker.name in TIER_BY_MARKER:
            return TIER_BY_MARKER[marker.name]
    return "empty"


@pytest.fixture
def _database_template(request: pytest.FixtureRequest, kit_tier: str) -> TemplateDatabase | None:
    # A sync fixture, so that the session template is never first set up inside a test's loop.
    if kit_tier == "rollback":
        raise refuse("test_database is a database of the test's own, and this tier has none: "
                     "the app's sessions share the worker's database inside the test's "
                     "transaction, which a connection of the test's own would never see")
    if kit_tier != "template":
        return None
    return request.getfixturevalue("kit_template")


@pytest_asyncio.fixture(loop_scope=KIT_LOOP_SCOPE)
async def test_database(
    kit_services: ServiceSet, _kit_sslmode: None, _database_template: TemplateDatabase | None
) -> AsyncIterator[IsolatedDatabase]:
    """A database created for this test and dropped after it: empty, or a clone of the run's
    template when the test is marked `template_db`; refused under `rollback_db`."""
    janitor = (_database_template.janitor() if _database_template is not None
               else DatabaseJanitor(kit_services.postgres))
    async with janitor as database:
        yield database


@pytest.fixture
def _kit_rollback_scope(request: pytest.FixtureRequest, kit_tier: str) -> RollbackScope | None:
    # Sync, so that the async fixtures behind it are set up outside any running loop.
    return request.getfixturevalue("_kit_rollback") if kit_tier == "rollback" else None


@pytest_asyncio.fixture(loop_scope=KIT_LOOP_SCOPE)
async def redis_namespace(kit_services: ServiceSet, _kit_rollback_scope: RollbackScope | None
                          ) -> AsyncIterator[RedisNamespace]:
    """A Redis key prefix for this test (under `rollback_db`, the shared apps' prefix); its
    keys are deleted after it."""
    if _kit_rollback_scope is not None:
        yield _kit_rollback_scope.apps.namespace  # the scope clears it
        return
    namespace = new_namespace(kit_services.redis)
    try:
        yield namespace
    finally:
        await namespace.clear()


@pytest_asyncio.fixture(scope="session", loop_scope=KIT_LOOP_SCOPE)
async def kit_shared_apps(kit_services: ServiceSet, _kit_sslmode: None,
                          kit_template: TemplateDatabase,
                          tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SharedApps]:
    """This worker's rollback-tier apps, on one clone of the template; `await .close()`
    stops them (the next rollback test starts its app again). All gone at the end."""
    admin = await admin_connection(kit_services.postgres)
    try:
        root = tmp_path_factory.mktemp("rollback")
        apps = SharedApps(TemplateClones(kit_template, admin), new_namespace(kit_services.redis),
                          root / "data", _normalizer(root))
        await apps.open()
        try:
            yield apps
        finally:
            await apps.shut()
    finally:
        await admin.close()


@pytest_asyncio.fixture(loop_scope=KIT_LOOP_SCOPE)
async def _kit_rollback(kit_shared_apps: SharedApps) -> AsyncIterator[RollbackScope]:
    """This test's transaction on each shared app it takes, undone after it."""
    scope = RollbackScope(kit_shared_apps)
    try:
        yield scope
    finally:
        await scope.close()


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
def make_settings(request: pytest.FixtureRequest, tmp_path: Path,
                  redis_namespace: RedisNamespace, _kit_rollback_scope: RollbackScope | None
                  ) -> Callable[..., Any]:
    """`make_settings(**overrides)`: backend Settings aimed at this test's database and Redis.

    `database_proxy=` / `redis_proxy=` route the app through a `fault_proxy`.
    """
    from pixsim7.backend.main.shared.config import Settings

    rollback = _kit_rollback_scope
    own_database = request.getfixturevalue("test_database") if rollback is None else None

    def database() -> IsolatedDatabase:
        # Read at each call: the rollback tier renews its database when a test wrote to it.
        return rollback.apps.database if rollback is not None else own_database

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "debug": True,
            "database_url": database().sqlalchemy_url,
            "redis_url": redis_namespace.url,
            "redis_key_prefix": redis_namespace.prefix,
            "secret_key": "kit-secret-key",
            "admin_token": "kit-admin-token",
            "data_dir": rollback.apps.data_dir if rollback is not None else tmp_path / "data",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    def make(*, database_proxy: FaultProxy | None = None, redis_proxy: FaultProxy | None = None,
             **overrides: Any) -> Settings:
        if rollback is not None:
            if database_proxy or redis_proxy:
                raise refuse("a fault proxy cuts a service under one test, and this tier's "
                             "apps and their connections are shared with the worker's other "
                             "tests")
            return rollback.apps.settings(build, **overrides)
        proxied = {}
        if database_proxy is not None:
            proxied["database_url"] = database_proxy.rewrite_url(database().sqlalchemy_url)
        if redis_proxy is not None:
            proxied["redis_url"] = redis_proxy.rewrite_url(redis_namespace.url)
        return build(**{**proxied, **overrides})

    return make


@pytest.fixture
def app_settings(make_settings: Callable[..., Any]) -> Any:
    return make_settings()


def _normalizer(tmp_path: Path) -> Normalizer:
    return Normalizer({tmp_path: "<tmp_path>", PACKAGE_DIR: "<package>", REPO_ROOT: "<repo>"})


@pytest.fixture
def kit_normalizer(tmp_path: Path) -> Normalizer:
    return _normalizer(tmp_path)


@pytest_asyncio.fixture(loop_scope=KIT_LOOP_SCOPE)
async def app_factory(
    request: pytest.FixtureRequest, make_settings: Callable[..., Any], kit_normalizer: Normalizer,
    _kit_rollback_scope: RollbackScope | None,
) -> AsyncIterator[Callable[..., Any]]:
    """`await app_factory(settings, factory=None)`: a RunningApp; shut down after the test
    (under `rollback_db`, the worker's shared app for these settings, left running)."""
    default_factory = request.config.getini("pixsim7_app_factory")
    running: list[RunningApp] = []
    views: list[RunningApp] = []
    request.node.stash[STARTED_APPS] = started = []  # for their traces

    async def start(settings: Any = None, factory: AppFactory | str | None = None) -> RunningApp:
        settings = make_settings() if settings is None else settings
        build = factory if callable(factory) else load_factory(factory or default_factory)
        scope = _kit_rollback_scope
        if scope is not None and scope.apps.shares(settings):
            shared = await scope.apps.get(build, settings)
            if isinstance(shared, RunningApp):  # its startup failed: nothing to share
                started.append(shared)
                return shared
            view = await scope.take(shared)
            views.append(view)
            started.append(view)
            return view
        app = await start_app(build, settings, kit_normalizer)
        running.append(app)
        started.append(app)
        return app

    yield start
    for view in views:
        await view.release()
    for app in reversed(running):
        await app.stop()
    folder = request.config.getoption("startup_trace")
    if folder is not None:
        write_app_traces(request.node, Path(folder))


@pytest.fixture
def snapshot_json(snapshot: Any) -> Any:
    """A syrupy snapshot stored as a readable JSON file under __snapshots__/, one line per
    milestone; `snapshot_json(include=subtrees(...))` pins only part of the data."""
    return snapshot.with_defaults(extension_class=JSONSnapshotExtension,
                                  matcher=milestones_as_lines)


@pytest.fixture
def backend_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a `pixsim7-backend` subprocess: the parent's without any backend
    setting, PYTHONUNBUFFERED=1, PIXSIM7_DATA_DIR=<tmp_path>/data and SHUTDOWN_DRAIN_SECONDS=0
    (a test that pins the drain sets its own). No database is made."""
    return build_backend_env(PIXSIM7_DATA_DIR=str(tmp_path / "data"), SHUTDOWN_DRAIN_SECONDS="0")


@pytest.fixture
def backend_services_env(request: pytest.FixtureRequest, kit_tier: str,
                         backend_env: dict[str, str]) -> dict[str, str]:
    """`backend_env` plus DATABASE_URL, REDIS_URL and REDIS_KEY_PREFIX of this test."""
    if kit_tier == "rollback":
        raise refuse("a backend process (backend_services_env) connects on its own, so it "
                     "would never see what the test's transaction holds")
    test_database: IsolatedDatabase = request.getfixturevalue("test_database")
    redis_namespace: RedisNamespace = request.getfixturevalue("redis_namespace")
    return {
        **backend_env,
        "DATABASE_URL": test_database.url,
        "REDIS_URL": redis_namespace.url,
        "REDIS_KEY_PREFIX": redis_namespace.prefix,
    }


@pytest.fixture
def servers_data_dir() -> Iterator[Path]:
    """A PIXSIM7_DATA_DIR for the backend's embedded servers, private to them, removed after
    the test. Not under pytest's tmp_path: pytest keeps its temp root 0700, and under root the
    servers run as an unprivileged user that must reach their folder."""
    folder = private_folder(Path(tempfile.mkdtemp(prefix="pixsim7-data-")))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def backend_processes(tmp_path: Path) -> Iterator[Callable[..., BackendProcess]]:
    """`backend_processes(command, env, **kw)`: a started `pixsim7-backend` command, `arq` for
    the worker through arq's command line, or `uvicorn` for the module-level app under plain
    uvicorn (see `pixsim7_testing.processes.start_backend`; cwd
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
