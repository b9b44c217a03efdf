"""The startup steps and the plans that order them.

Each `setup_*` step is a plain async function of the app: it reads its inputs from `app.state`,
stores what it builds there, and returns it, so a test can call one step against a bare
FastAPI app. `run_plan` runs a plan (the steps in order, each with its failure policy) and, on
the way out, the teardowns of the steps that completed, in reverse, also after a failure.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from pixsim7.backend.main.infrastructure.database import Database, parse_database_url
from pixsim7.backend.main.infrastructure.database.seed import seed_default_presets
from pixsim7.backend.main.infrastructure.domain_registry import (
    DomainModelRegistry,
    init_domain_registry,
)
from pixsim7.backend.main.infrastructure.ecs import ComponentRegistry, register_core_components
from pixsim7.backend.main.infrastructure.embedded import EmbeddedPostgres, EmbeddedRedis
from pixsim7.backend.main.infrastructure.events import EventBus
from pixsim7.backend.main.infrastructure.events.handlers import (
    MetricsHandler,
    WebSocketHub,
    register_core_handlers,
)
from pixsim7.backend.main.infrastructure.plugins.behavior_registry import BehaviorRegistry
from pixsim7.backend.main.infrastructure.plugins.context import context_factory_from_app
from pixsim7.backend.main.infrastructure.plugins.dependencies import (
    set_plugin_manager,
    set_routes_manager,
)
from pixsim7.backend.main.infrastructure.plugins.manager import PluginManager
from pixsim7.backend.main.infrastructure.providers import ProviderRegistry, default_providers
from pixsim7.backend.main.infrastructure.redis import (
    RedisStatus,
    check_redis_url,
    close_redis,
    connect_redis,
)
from pixsim7.backend.main.shared import app_context
from pixsim7.backend.main.shared.config import DEFAULT_SECRET_KEY, DISCOVERY_DIRS, Settings

logger = logging.getLogger("pixsim7.startup")
EMBEDDED_DATABASE = "pixsim7"


class Policy(enum.StrEnum):
    """What a step's failure means (see GETTING_STARTED.md, 'Startup failure policy')."""

    REQUIRED = "required"  # startup aborts
    OPTIONAL = "optional"  # logged; startup goes on
    DEGRADING = "degrading"  # startup goes on; readiness says degraded
    PER_PLUGIN = "per_plugin"  # each plugin's manifest and PLUGIN_FAIL_FAST decide


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names the environment variable."""


class StartupAborted(RuntimeError):
    """A required step failed; what had started has been torn down."""

    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"startup step '{step}' failed: {type(cause).__name__}: {cause}")
        self.step = step
        self.cause = cause


@dataclass
class StepOutcome:
    """What a step reports: its status and a few counts for the milestone."""

    status: str = "ok"
    counts: dict[str, Any] = field(default_factory=dict)


StepFunction = Callable[[FastAPI], Awaitable[Any]]


@dataclass(frozen=True)
class Step:
    name: str
    run: StepFunction
    policy: Policy
    teardown: StepFunction | None = None


@dataclass
class StepRecord:
    phase: str
    step: str
    policy: str
    status: str
    duration_ms: float
    counts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def milestone(self) -> dict[str, Any]:
        data = {"phase": self.phase, "step": self.step, "status": self.status,
                "policy": self.policy, **self.counts}
        if self.error is not None:
            data["error"] = self.error.split(":", 1)[0]  # the class name: no message, no URL
        return data


class StartupTimeline:
    """The steps an app ran, up and down, with status and timing (`app.state.startup`)."""

    def __init__(self) -> None:
        self.records: list[StepRecord] = []
        self.profile: str | None = None
        self.app_id: str | None = None  # set by run_plan; tags each record as its app's

    def add(self, record: StepRecord) -> None:
        self.records.append(record)
        message = f"{record.phase} {record.step}: {record.status} ({record.duration_ms:.0f} ms)"
        if record.error:
            message += f" - {record.error}"
        level = logging.ERROR if record.status == "failed" else (
            logging.WARNING if record.status == "degraded" else logging.INFO)
        logger.log(level, message, extra={"milestone": record.milestone(), "app_id": self.app_id})

    def status(self, step: str, phase: str = "startup") -> str | None:
        found = [r.status for r in self.records if r.step == step and r.phase == phase]
        return found[-1] if found else None

    def summary(self) -> dict[str, Any]:
        return {"profile": self.profile, "steps": [
            {"phase": r.phase, "step": r.step, "policy": r.policy, "status": r.status,
             "duration_ms": round(r.duration_ms, 1), "error": r.error, **r.counts}
            for r in self.records
        ]}


def app_id(app: FastAPI) -> str:
    """The id that `app`'s milestone records carry (`app.state.app_id`), made on first use."""
    if not isinstance(getattr(app.state, "app_id", None), str):
        app.state.app_id = uuid.uuid4().hex
    return app.state.app_id


def _timeline(app: FastAPI) -> StartupTimeline:
    if not isinstance(getattr(app.state, "startup", None), StartupTimeline):
        app.state.startup = StartupTimeline()
    return app.state.startup


def _settings(app: FastAPI) -> Settings:
    settings = getattr(app.state, "settings", None)
    if settings is None:
        raise SettingsError("app.state.settings is not set; build the app with create_app()")
    return settings


def resolve_directory(settings: Settings, name: str) -> Path:
    """A discovery directory setting as an existing folder, or a SettingsError naming it."""
    path = Path(getattr(settings, name))
    env = name.upper()
    if not path.exists():
        raise SettingsError(f"{env}={path} does not exist; point {env} at a folder")
    if not path.is_dir():
        raise SettingsError(f"{env}={path} is not a folder; point {env} at a folder")
    return path


async def validate_settings(app: FastAPI) -> StepOutcome:
    """Refuse unsafe production settings; check the discovery directories; set the admin token."""
    settings = _settings(app)
    if not settings.debug and settings.secret_key == DEFAULT_SECRET_KEY:
        raise SettingsError("SECRET_KEY is left at its default; set SECRET_KEY when DEBUG=false")
    if not settings.debug and not settings.database_url:
        raise SettingsError("DATABASE_URL is not set; it is required when DEBUG=false")
    # Malformed URLs stop startup here, naming the variable, rather than as an outage later.
    if settings.database_url:
        parse_database_url(settings.database_url)
    if settings.redis_url:
        check_redis_url(settings.redis_url)
    for name in DISCOVERY_DIRS:
        logger.info("%s = %s", name.upper(), resolve_directory(settings, name))
    if settings.admin_token:
        app.state.admin_token = settings.admin_token
    else:
        app.state.admin_token = secrets.token_urlsafe(32)
        logging.getLogger("pixsim7.admin").warning(
            "ADMIN_TOKEN is not set; this run's admin token is %s", app.state.admin_token
        )
    return StepOutcome(counts={"debug": settings.debug})


async def setup_embedded_services(app: FastAPI) -> StepOutcome:
    """In debug, start embedded PostgreSQL / Redis for whichever URL is unset."""
    settings = _settings(app)
    app.state.embedded = {}
    if not settings.debug or (settings.database_url and settings.redis_url):
        return StepOutcome(status="skipped")
    updates: dict[str, str] = {}
    data_dir = Path(settings.data_dir)
    try:
        if not settings.database_url:
            # Registered before starting, so a failure or cancellation mid-start still stops it;
            # start and stop block (initdb, waiting for ports), so they run off the loop.
            postgres = app.state.embedded["postgres"] = EmbeddedPostgres(data_dir / "postgres")
            await asyncio.to_thread(postgres.start)
            await _ensure_database(postgres.url(), EMBEDDED_DATABASE)
            updates["database_url"] = postgres.url(EMBEDDED_DATABASE)
        if not settings.redis_url:
            redis_server = app.state.embedded["redis"] = EmbeddedRedis(
                data_dir / "redis", persist=True)
            await asyncio.to_thread(redis_server.start)
            updates["redis_url"] = redis_server.url()
    except BaseException:
        await teardown_embedded_services(app)
        raise
    app.state.settings = settings.model_copy(update=updates)
    return StepOutcome(counts={"started": sorted(app.state.embedded)})


async def _ensure_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def teardown_embedded_services(app: FastAPI) -> None:
    for server in reversed(list(getattr(app.state, "embedded", {}).values())):
        await asyncio.to_thread(server.stop)
    app.state.embedded = {}


async def setup_domain_registry(app: FastAPI) -> DomainModelRegistry:
    """Discover the domain model packages in DOMAIN_MODELS_DIR."""
    settings = _settings(app)
    registry = init_domain_registry(resolve_directory(settings, "domain_models_dir"))
    app.state.domain_registry = registry
    return registry


async def setup_database(app: FastAPI) -> Database:
    """Connect to DATABASE_URL and create the registry's tables (safe across replicas)."""
    settings = _settings(app)
    db = Database(settings.database_url, connect_timeout=settings.database_connect_timeout,
                  statement_timeout=settings.database_statement_timeout)
    try:
        await db.ping(settings.database_connect_timeout)
        created = await db.create_schema(app.state.domain_registry.tables)
    except BaseException:
        await db.dispose()
        raise
    app.state.db = db
    app.state.tables_created = len(created)
    return db


async def teardown_database(app: FastAPI) -> None:
    db = getattr(app.state, "db", None)
    if db is not None:
        await db.dispose()


async def seed_presets(app: FastAPI) -> int:
    """Insert the default generation presets that are missing (idempotent)."""
    preset_model = app.state.domain_registry.model("GenerationPreset")
    inserted = await seed_default_presets(app.state.db, preset_model)
    app.state.presets_seeded = True
    return inserted


async def setup_database_and_seed(app: FastAPI) -> Database:
    """Database, then seeding; a seeding failure is logged and does not fail the database."""
    db = await setup_database(app)
    try:
        await seed_presets(app)
    except Exception as exc:
        app.state.presets_seeded = False
        logger.warning("default preset seeding failed: %s", type(exc).__name__)
    return db


async def setup_redis(app: FastAPI) -> RedisStatus:
    """Connect to REDIS_URL; without it, or when it does not answer, background jobs are off."""
    settings = _settings(app)
    if not settings.redis_url:
        status = RedisStatus(client=None, available=False, error=None)
        app.state.redis_configured = False
    else:
        status = await connect_redis(settings.redis_url, timeout=settings.redis_connect_timeout)
        app.state.redis_configured = True
    app.state.redis = status.client
    app.state.redis_available = status.available
    return status


async def teardown_redis(app: FastAPI) -> None:
    await close_redis(getattr(app.state, "redis", None))


async def setup_providers(app: FastAPI) -> ProviderRegistry:
    registry = ProviderRegistry()
    for provider in default_providers():
        registry.register(provider)
    app.state.providers = registry
    return registry


async def setup_event_handlers(app: FastAPI) -> EventBus:
    """The event bus with the core handlers: metrics and the WebSocket broadcast."""
    bus, hub, metrics = EventBus(), WebSocketHub(), MetricsHandler()
    register_core_handlers(bus, hub, metrics=metrics)
    app.state.event_bus, app.state.ws_hub, app.state.event_metrics = bus, hub, metrics
    return bus


async def teardown_event_handlers(app: FastAPI) -> None:
    hub = getattr(app.state, "ws_hub", None)
    if hub is not None:
        await hub.close_all()
    bus = getattr(app.state, "event_bus", None)
    if bus is not None:
        await bus.close()


async def setup_ecs_components(app: FastAPI) -> int:
    """Core ECS components, registered before plugins so plugins can see and extend them."""
    registry = ComponentRegistry()
    count = register_core_components(registry)
    app.state.ecs_registry = registry
    return count


async def setup_plugins(app: FastAPI) -> tuple[PluginManager, PluginManager]:
    """Feature plugins, then route plugins: discovered, loaded in dependency order, enabled."""
    settings = _settings(app)
    if not isinstance(getattr(app.state, "behavior_registry", None), BehaviorRegistry):
        app.state.behavior_registry = BehaviorRegistry()
    context_factory = context_factory_from_app(app)
    managers: list[PluginManager] = []
    try:
        for kind, setting in (("feature", "feature_plugins_dir"),
                              ("route", "route_plugins_dir")):
            manager = PluginManager(kind, resolve_directory(settings, setting),
                                    fail_fast=bool(settings.plugin_fail_fast))
            (set_plugin_manager if kind == "feature" else set_routes_manager)(manager, app)
            managers.append(manager)
            manager.discover()
            await manager.load_all(context_factory)
            await manager.enable_all(app)
    except BaseException:
        # A failed step tears down its own partial work: disable what was enabled.
        for manager in reversed(managers):
            await manager.disable_all()
        raise
    return managers[0], managers[1]


class PluginTeardownError(RuntimeError):
    """One or more plugins' on_disable raised; the others were still disabled."""


async def teardown_plugins(app: FastAPI) -> None:
    """Disable route plugins, then feature plugins; report hooks that raised once all ran."""
    raised: list[str] = []
    for name in ("routes_manager", "plugin_manager"):
        manager = getattr(app.state, name, None)
        if manager is not None:
            await manager.disable_all()
            raised += [pid for pid, state in manager.plugins.items()
                       if state.status == "disabled" and state.error]
    if raised:
        raise PluginTeardownError(f"on_disable raised in plugin(s): {', '.join(raised)}")


async def setup_behavior_registry_lock(app: FastAPI) -> BehaviorRegistry:
    """Lock the behavior registry: after plugins load, nothing may register into it."""
    registry = app.state.behavior_registry
    registry.lock()
    return registry


async def setup_middleware_lifecycle(app: FastAPI) -> None:
    """Run the startup hooks of the middleware installed when the app was built."""
    await app.state.middleware_manager.startup(app)


async def teardown_middleware_lifecycle(app: FastAPI) -> None:
    await app.state.middleware_manager.shutdown(app)


def _plugins_outcome(result: tuple[PluginManager, PluginManager]) -> StepOutcome:
    failed = [pid for manager in result for pid in manager.failed_ids()]
    enabled = sum(len(manager.enabled_ids()) for manager in result)
    return StepOutcome(status="degraded" if failed else "ok",
                       counts={"enabled": enabled, "failed": failed})


async def _step_domain_registry(app: FastAPI) -> StepOutcome:
    registry = await setup_domain_registry(app)
    return StepOutcome(counts={"packages": len(registry.packages), "models": len(registry.models)})


async def _step_database(app: FastAPI) -> StepOutcome:
    await setup_database(app)
    return StepOutcome(counts={"tables": len(app.state.domain_registry.tables)})


async def _step_seed(app: FastAPI) -> StepOutcome:
    app.state.presets_seeded = False
    return StepOutcome(counts={"inserted": await seed_presets(app)})


async def _step_redis(app: FastAPI) -> StepOutcome:
    status = await setup_redis(app)
    if not app.state.redis_configured:
        return StepOutcome(status="degraded", counts={"redis": "disabled"})
    if not status.available:
        return StepOutcome(status="degraded", counts={"redis": "disconnected"})
    return StepOutcome(counts={"redis": "connected"})


async def _step_redis_required(app: FastAPI) -> StepOutcome:
    status = await setup_redis(app)
    if not status.available:
        raise ConnectionError(f"Redis is required by this profile ({status.error or 'not set'})")
    return StepOutcome(counts={"redis": "connected"})


async def _step_providers(app: FastAPI) -> StepOutcome:
    return StepOutcome(counts={"providers": len((await setup_providers(app)).ids())})


async def _step_event_handlers(app: FastAPI) -> StepOutcome:
    bus = await setup_event_handlers(app)
    return StepOutcome(counts={"handlers": len(bus.handler_names())})


async def _step_ecs_components(app: FastAPI) -> StepOutcome:
    return StepOutcome(counts={"components": await setup_ecs_components(app)})


async def _step_plugins(app: FastAPI) -> StepOutcome:
    return _plugins_outcome(await setup_plugins(app))


async def _step_behavior_lock(app: FastAPI) -> StepOutcome:
    registry = await setup_behavior_registry_lock(app)
    summary = registry.summary()
    return StepOutcome(counts={k: v for k, v in summary.items() if isinstance(v, int)})


async def _step_middleware(app: FastAPI) -> StepOutcome:
    await setup_middleware_lifecycle(app)
    return StepOutcome(counts={"middleware": len(app.state.middleware_manager.installed_ids())})


_SETTINGS = Step("settings", validate_settings, Policy.REQUIRED)
_EMBEDDED = Step("embedded_services", setup_embedded_services, Policy.REQUIRED,
                 teardown_embedded_services)
_DOMAIN = Step("domain_registry", _step_domain_registry, Policy.REQUIRED)
_DATABASE = Step("database", _step_database, Policy.REQUIRED, teardown_database)
_SEED = Step("seed", _step_seed, Policy.OPTIONAL)
_PROVIDERS = Step("providers", _step_providers, Policy.REQUIRED)
_EVENTS = Step("event_handlers", _step_event_handlers, Policy.REQUIRED, teardown_event_handlers)

API_PLAN: tuple[Step, ...] = (
    _SETTINGS, _EMBEDDED, _DOMAIN, _DATABASE, _SEED,
    Step("redis", _step_redis, Policy.DEGRADING, teardown_redis),
    _PROVIDERS, _EVENTS,
    Step("ecs_components", _step_ecs_components, Policy.REQUIRED),
    Step("plugins", _step_plugins, Policy.PER_PLUGIN, teardown_plugins),
    Step("behavior_registry_lock", _step_behavior_lock, Policy.REQUIRED),
    Step("middleware_lifecycle", _step_middleware, Policy.REQUIRED,
         teardown_middleware_lifecycle),
)

# A background worker: no HTTP surface, no plugins; Redis is required (it carries the jobs).
WORKER_PLAN: tuple[Step, ...] = (
    _SETTINGS, _EMBEDDED, _DOMAIN, _DATABASE, _SEED,
    Step("redis", _step_redis_required, Policy.REQUIRED, teardown_redis),
    _PROVIDERS, _EVENTS,
)

PLANS = {"api": API_PLAN, "worker": WORKER_PLAN}


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def _teardown(app: FastAPI, completed: list[Step], timeline: StartupTimeline) -> None:
    for step in reversed(completed):
        assert step.teardown is not None
        started = time.perf_counter()
        try:
            await step.teardown(app)
        except Exception as exc:  # one failing teardown must not stop the others
            timeline.add(StepRecord("shutdown", step.name, step.policy, "failed",
                                    _elapsed(started), error=_error_text(exc)))
        else:
            timeline.add(StepRecord("shutdown", step.name, step.policy, "ok",
                                    _elapsed(started)))


def _elapsed(started: float) -> float:
    return (time.perf_counter() - started) * 1000


@asynccontextmanager
async def run_plan(app: FastAPI, plan: tuple[Step, ...] = API_PLAN,
                   profile: str = "api") -> AsyncIterator[StartupTimeline]:
    """Run `plan` on `app`; yield once started; tear down what started on the way out."""
    timeline = _timeline(app)
    timeline.profile = profile
    timeline.app_id = app_id(app)
    app.state.lifecycle = "starting"
    completed: list[Step] = []
    app_context.activate(app)
    try:
        for step in plan:
            started = time.perf_counter()
            try:
                outcome = await step.run(app)
            except Exception as exc:
                record = StepRecord("startup", step.name, step.policy, "failed",
                                    _elapsed(started), error=_error_text(exc))
                timeline.add(record)
                if step.policy in (Policy.REQUIRED, Policy.PER_PLUGIN):
                    raise StartupAborted(step.name, exc) from exc
                continue
            outcome = outcome if isinstance(outcome, StepOutcome) else StepOutcome()
            timeline.add(StepRecord("startup", step.name, step.policy, outcome.status,
                                    _elapsed(started), outcome.counts))
            if step.teardown is not None:
                completed.append(step)
        # An optional step that failed (seeding) shows in /health, not in readiness.
        degraded = any(r.status == "degraded" for r in timeline.records if r.phase == "startup")
        timeline.add(StepRecord("startup", "complete", "required",
                                "degraded" if degraded else "ok", 0.0))
        app.state.lifecycle = "ready"
        yield timeline
    finally:
        app.state.lifecycle = "stopping"
        try:
            await _teardown(app, completed, timeline)
        finally:
            app.state.lifecycle = "stopped"
            app_context.deactivate(app)
