"""The startup steps and the plans that order them.

Each step is one `@step`-decorated setup function of the app with its name, policy, teardown
and report: it reads its inputs from `app.state`, stores what it builds there and returns it,
so a test can call it alone against a bare FastAPI app (`await setup_redis(app)`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path

from fastapi import FastAPI

from pixsim7.backend.main.infrastructure.core_jobs import job_registry
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
from pixsim7.backend.main.infrastructure.jobs import JobRegistry
from pixsim7.backend.main.infrastructure.manifests import ManifestFolderError, check_folder
from pixsim7.backend.main.infrastructure.middleware.manager import MiddlewareManager
from pixsim7.backend.main.infrastructure.plugins.behavior_registry import BehaviorRegistry
from pixsim7.backend.main.infrastructure.plugins.context import context_factory_from_app
from pixsim7.backend.main.infrastructure.plugins.dependencies import (
    set_plugin_manager,
    set_routes_manager,
)
from pixsim7.backend.main.infrastructure.plugins.manager import DIRECTORY_SETTINGS, PluginManager
from pixsim7.backend.main.infrastructure.providers import ProviderRegistry, default_providers
from pixsim7.backend.main.infrastructure.redis import (
    RedisStatus,
    check_redis_url,
    close_redis,
    connect_redis,
)
from pixsim7.backend.main.shared.config import DEFAULT_SECRET_KEY, DISCOVERY_DIRS, Settings
from pixsim7.backend.main.startup.runner import Policy, Step, StepOutcome, step

logger = logging.getLogger("pixsim7.startup")
EMBEDDED_DATABASE = "pixsim7"


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names the environment variable."""


def _settings(app: FastAPI) -> Settings:
    """The app's settings, with the URLs of the embedded servers it started filled in."""
    settings = getattr(app.state, "settings", None)
    if settings is None:
        raise SettingsError("app.state.settings is not set; build the app with create_app()")
    embedded = getattr(app.state, "embedded", {})
    urls = {}
    if "postgres" in embedded:
        urls["database_url"] = embedded["postgres"].url(EMBEDDED_DATABASE)
    if "redis" in embedded:
        urls["redis_url"] = embedded["redis"].url()
    return settings.model_copy(update=urls) if urls else settings


def resolve_directory(settings: Settings, name: str) -> Path:
    """A discovery directory setting as an existing folder, or a SettingsError naming it."""
    try:
        return check_folder(Path(getattr(settings, name)), name)
    except ManifestFolderError as exc:
        raise SettingsError(str(exc)) from None


def install_middleware(app: FastAPI) -> StepOutcome:
    """Discover MIDDLEWARE_DIR and install its middleware (only possible while building)."""
    settings = _settings(app)
    middleware = MiddlewareManager(Path(settings.middleware_dir))
    middleware.discover()
    installed = middleware.install(app, settings)
    app.state.middleware_manager = middleware
    return StepOutcome(counts={"middleware": len(installed)})


@step("settings", Policy.REQUIRED)
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
    elif settings.debug:
        app.state.admin_token = secrets.token_urlsafe(32)
        logging.getLogger("pixsim7.admin").warning(
            "ADMIN_TOKEN is not set; this run's admin token is %s", app.state.admin_token
        )
    else:
        # A generated token would land in every log pipeline: the admin API stays off.
        app.state.admin_token = None
        logging.getLogger("pixsim7.admin").warning(
            "ADMIN_TOKEN is not set, so the admin API is off (503); set ADMIN_TOKEN to use it")
    return StepOutcome(counts={"debug": settings.debug})


async def teardown_embedded_services(app: FastAPI) -> None:
    for server in reversed(list(getattr(app.state, "embedded", {}).values())):
        await asyncio.to_thread(server.stop)
    app.state.embedded = {}


@step("embedded_services", Policy.REQUIRED, teardown=teardown_embedded_services)
async def setup_embedded_services(app: FastAPI) -> StepOutcome:
    """In debug, start embedded PostgreSQL / Redis for whichever URL is unset."""
    app.state.embedded = {}
    settings = _settings(app)
    if not settings.debug or (settings.database_url and settings.redis_url):
        return StepOutcome(status="skipped")
    data_dir = Path(settings.data_dir)
    try:
        if not settings.database_url:
            # Registered before starting, so a failure or cancellation mid-start still stops it;
            # start and stop block (initdb, waiting for ports), so they run off the loop.
            postgres = app.state.embedded["postgres"] = EmbeddedPostgres(data_dir / "postgres")
            await asyncio.to_thread(postgres.start)
            await _ensure_database(postgres.url(), EMBEDDED_DATABASE)
        if not settings.redis_url:
            redis_server = app.state.embedded["redis"] = EmbeddedRedis(
                data_dir / "redis", persist=True)
            await asyncio.to_thread(redis_server.start)
    except BaseException:
        await teardown_embedded_services(app)
        raise
    # The later steps read these servers' URLs through _settings(app).
    return StepOutcome(counts={"started": sorted(app.state.embedded)})


async def _ensure_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@step("domain_registry", Policy.REQUIRED, report=lambda app, registry: StepOutcome(
    counts={"packages": len(registry.packages), "models": len(registry.models)}))
async def setup_domain_registry(app: FastAPI) -> DomainModelRegistry:
    """Discover the domain model packages in DOMAIN_MODELS_DIR."""
    settings = _settings(app)
    registry = init_domain_registry(Path(settings.domain_models_dir))
    app.state.domain_registry = registry
    return registry


async def teardown_database(app: FastAPI) -> None:
    db = getattr(app.state, "db", None)
    if db is not None:
        await db.dispose()


@step("database", Policy.REQUIRED, teardown=teardown_database, report=lambda app, db: StepOutcome(
    counts={"tables": len(app.state.domain_registry.tables), "created": len(db.created_tables)}))
async def setup_database(app: FastAPI) -> Database:
    """Connect to DATABASE_URL and create the registry's tables (safe across replicas)."""
    settings = _settings(app)
    db = Database(settings.database_url, connect_timeout=settings.database_connect_timeout,
                  statement_timeout=settings.database_statement_timeout)
    try:
        await db.ping(settings.database_connect_timeout)
        await db.create_schema(app.state.domain_registry.tables)
    except BaseException:
        await db.dispose()
        raise
    app.state.db = db
    return db


@step("seed", Policy.OPTIONAL, report=lambda app, inserted: StepOutcome(
    counts={"inserted": inserted}))
async def seed_presets(app: FastAPI) -> int:
    """Insert the default generation presets that are missing (idempotent); how many it did."""
    preset_model = app.state.domain_registry.model("GenerationPreset")
    return await seed_default_presets(app.state.db, preset_model)


async def setup_database_and_seed(app: FastAPI) -> Database:
    """The `database` and `seed` steps in one call; a seeding failure is logged, as in a plan."""
    db = await setup_database(app)
    try:
        await seed_presets(app)
    except Exception as exc:
        logger.warning("default preset seeding failed: %s", type(exc).__name__)
    return db


def _redis_outcome(app: FastAPI, redis: RedisStatus) -> StepOutcome:
    if not redis.configured:
        return StepOutcome(status="degraded", counts={"redis": "disabled"})
    if not redis.available:
        return StepOutcome(status="degraded", counts={"redis": "disconnected"})
    return StepOutcome(counts={"redis": "connected"})


async def teardown_redis(app: FastAPI) -> None:
    redis = getattr(app.state, "redis", None)
    await close_redis(redis.client if redis is not None else None)


@step("redis", Policy.DEGRADING, teardown=teardown_redis, report=_redis_outcome)
async def setup_redis(app: FastAPI) -> RedisStatus:
    """Connect to REDIS_URL; without it, or when it does not answer, background jobs are off."""
    settings = _settings(app)
    if not settings.redis_url:
        redis = RedisStatus(client=None, available=False)
    else:
        redis = await connect_redis(settings.redis_url, timeout=settings.redis_connect_timeout)
    app.state.redis = redis
    return redis


@step("providers", Policy.REQUIRED, report=lambda app, registry: StepOutcome(
    counts={"providers": len(registry.ids())}))
async def setup_providers(app: FastAPI) -> ProviderRegistry:
    registry = ProviderRegistry()
    for provider in default_providers():
        registry.register(provider)
    app.state.providers = registry
    return registry


async def teardown_event_handlers(app: FastAPI) -> None:
    hub = getattr(app.state, "ws_hub", None)
    if hub is not None:
        await hub.close_all()
    bus = getattr(app.state, "event_bus", None)
    if bus is not None:
        await bus.close()


@step("event_handlers", Policy.REQUIRED, teardown=teardown_event_handlers,
      report=lambda app, bus: StepOutcome(counts={"handlers": len(bus.handler_names())}))
async def setup_event_handlers(app: FastAPI) -> EventBus:
    """The event bus with the core handlers: metrics and the WebSocket broadcast."""
    bus, hub, metrics = EventBus(), WebSocketHub(), MetricsHandler()
    register_core_handlers(bus, hub, metrics=metrics)
    app.state.event_bus, app.state.ws_hub, app.state.event_metrics = bus, hub, metrics
    return bus


@step("ecs_components", Policy.REQUIRED, report=lambda app, count: StepOutcome(
    counts={"components": count}))
async def setup_ecs_components(app: FastAPI) -> int:
    """Core ECS components, registered before plugins so plugins can see and extend them."""
    registry = ComponentRegistry()
    count = register_core_components(registry)
    app.state.ecs_registry = registry
    return count


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


def _plugins_outcome(app: FastAPI, managers: tuple[PluginManager, ...]) -> StepOutcome:
    failed = [pid for manager in managers for pid in manager.failed_ids()]
    enabled = sum(len(manager.enabled_ids()) for manager in managers)
    return StepOutcome(status="degraded" if failed else "ok",
                       counts={"enabled": enabled, "failed": failed})


# The plugin kinds each profile loads: a worker has no HTTP surface, so no route plugins.
PLUGIN_KINDS_BY_PROFILE = {"api": ("feature", "route"), "worker": ("feature",)}


@step("plugins", Policy.PER_PLUGIN, teardown=teardown_plugins, report=_plugins_outcome)
async def setup_plugins(app: FastAPI) -> tuple[PluginManager, ...]:
    """Feature plugins, then route plugins (the API only): discovered, loaded in dependency
    order, enabled. Enabling a feature plugin registers the job kinds its manifest declares."""
    settings = _settings(app)
    if not isinstance(getattr(app.state, "behavior_registry", None), BehaviorRegistry):
        app.state.behavior_registry = BehaviorRegistry()
    if not isinstance(getattr(app.state, "job_registry", None), JobRegistry):
        app.state.job_registry = job_registry()
    context_factory = context_factory_from_app(app)
    managers: list[PluginManager] = []
    try:
        for kind in PLUGIN_KINDS_BY_PROFILE[getattr(app.state, "profile", "api")]:
            manager = PluginManager(kind, Path(getattr(settings, DIRECTORY_SETTINGS[kind])),
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
    return tuple(managers)


def _locked_outcome(app: FastAPI, registry: BehaviorRegistry) -> StepOutcome:
    counts = {k: v for k, v in registry.summary().items() if isinstance(v, int)}
    jobs = getattr(app.state, "job_registry", None)
    if jobs is not None:
        counts["job_kinds"] = len(jobs.names())
    return StepOutcome(counts=counts)


@step("behavior_registry_lock", Policy.REQUIRED, report=_locked_outcome)
async def setup_behavior_registry_lock(app: FastAPI) -> BehaviorRegistry:
    """Lock the behavior and job registries: after plugins load, nothing may register."""
    registry = app.state.behavior_registry
    registry.lock()
    jobs = getattr(app.state, "job_registry", None)
    if jobs is not None:
        jobs.lock()
    return registry


async def teardown_middleware_lifecycle(app: FastAPI) -> None:
    await app.state.middleware_manager.shutdown(app)


@step("middleware_lifecycle", Policy.REQUIRED, teardown=teardown_middleware_lifecycle,
      report=lambda app, _: StepOutcome(
          counts={"middleware": len(app.state.middleware_manager.installed_ids())}))
async def setup_middleware_lifecycle(app: FastAPI) -> None:
    """Run the startup hooks of the middleware installed when the app was built."""
    await app.state.middleware_manager.startup(app)


API_PLAN: tuple[Step, ...] = (
    validate_settings,
    setup_embedded_services,
    setup_domain_registry,
    setup_database,
    seed_presets,
    setup_redis,
    setup_providers,
    setup_event_handlers,
    setup_ecs_components,
    setup_plugins,
    setup_behavior_registry_lock,
    setup_middleware_lifecycle,
)

# A background worker: no HTTP surface, so no route plugins and no middleware; Redis is
# required (it carries the jobs). Feature plugins load as in the API, since their job kinds
# run here, with the registries they fill.
WORKER_PLAN: tuple[Step, ...] = (
    validate_settings,
    setup_embedded_services,
    setup_domain_registry,
    setup_database,
    seed_presets,
    setup_redis.with_policy(Policy.REQUIRED),
    setup_providers,
    setup_event_handlers,
    setup_ecs_components,
    setup_plugins,
    setup_behavior_registry_lock,
)

PLANS = {"api": API_PLAN, "worker": WORKER_PLAN}
