"""The startup steps and the profiles whose plans order them.

Each step is one `@step`-decorated setup function: its parameters are the resources it needs,
it returns what it provides, so a test can call it alone with what it builds itself
(`await setup_redis(settings)`). The runner publishes what each step provides on `app.state`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit

from fastapi import FastAPI

from pixsim7.backend.main.infrastructure.adapters.database import (
    Database,
    connect_failure,
    parse_database_url,
)
from pixsim7.backend.main.infrastructure.adapters.redis import (
    RedisStatus,
    check_redis_url,
    close_redis,
    connect_redis,
)
from pixsim7.backend.main.infrastructure.adapters.shared_servers import SharedServers
from pixsim7.backend.main.infrastructure.discovery.domain_registry import (
    DomainModelRegistry,
    init_domain_registry,
)
from pixsim7.backend.main.infrastructure.discovery.manifests import (
    ManifestFolderError,
    check_folder,
)
from pixsim7.backend.main.infrastructure.discovery.middleware.manager import (
    MiddlewareManager,
)
from pixsim7.backend.main.infrastructure.registries.behavior_registry import BehaviorRegistry
from pixsim7.backend.main.infrastructure.registries.ecs import (
    ComponentRegistry,
    register_core_components,
)
from pixsim7.backend.main.infrastructure.registries.events import EventBus
from pixsim7.backend.main.infrastructure.registries.events.handlers import (
    MetricsHandler,
    WebSocketHub,
    register_core_handlers,
)
from pixsim7.backend.main.infrastructure.registries.jobs import JobRegistry
from pixsim7.backend.main.infrastructure.registries.providers import (
    ProviderRegistry,
    default_providers,
)
from pixsim7.backend.main.presets import MODEL_NAME, seed_default_presets
from pixsim7.backend.main.shared.config import DEFAULT_SECRET_KEY, DISCOVERY_DIRS, Settings
from pixsim7.backend.main.shared.logs import redact_also
from pixsim7.backend.main.startup.runner import Policy, StepOutcome, step
from pixsim7.backend.main.startup.trace import TraceFileError, check_trace_path

logger = logging.getLogger("pixsim7.startup")
EMBEDDED_DATABASE = "pixsim7"


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names the environment variable."""


def resolve_directory(settings: Settings, name: str) -> Path:
    """A discovery directory setting as an existing folder, or a SettingsError naming it."""
    try:
        return check_folder(Path(getattr(settings, name)), name)
    except ManifestFolderError as exc:
        raise SettingsError(str(exc)) from None


def check_required(settings: Settings, required: Mapping[str, str]) -> None:
    """Refuse settings a profile needs that are unset outside debug (in debug the embedded
    servers fill the URLs in); `required` maps each setting to why it is needed."""
    for name, why in required.items():
        if not settings.debug and not getattr(settings, name):
            raise SettingsError(f"{name.upper()} is not set; {why}: set {name.upper()}, or "
                                "DEBUG=true to use an embedded server")


@step("settings", Policy.REQUIRED, provides="admin_token",
      report=lambda settings: StepOutcome(counts={"debug": settings.debug}))
async def validate_settings(settings: Settings, *,
                            required: Mapping[str, str] = MappingProxyType({}),
                            admin_api: bool = True) -> str | None:
    """Refuse unsafe production settings, settings the profile needs (`required`) left unset,
    and missing discovery directories; the admin API's token (None: the admin API is off, or
    the profile has none: `admin_api` false, and no token is made or logged)."""
    check_required(settings, required)
    if not settings.debug and settings.secret_key == DEFAULT_SECRET_KEY:
        raise SettingsError("SECRET_KEY is left at its default; set SECRET_KEY when DEBUG=false")
    if not settings.debug and not settings.database_url:
        raise SettingsError("DATABASE_URL is not set; it is required when DEBUG=false")
    # Malformed URLs stop startup here, naming the variable, rather than as an outage later.
    if settings.database_url:
        parse_database_url(settings.database_url)
    if settings.redis_url:
        check_redis_url(settings.redis_url)
    for name in ("startup_trace_file", "startup_page_file"):  # found now, not at the stop
        if getattr(settings, name) is not None:
            try:
                check_trace_path(getattr(settings, name))
            except TraceFileError as exc:
                raise SettingsError(f"{name.upper()}: {exc}") from None
    for name in DISCOVERY_DIRS:
        logger.info("%s = %s", name.upper(), resolve_directory(settings, name))
    if not admin_api:
        return None
    if settings.admin_token:
        return settings.admin_token
    if settings.debug:
        token = secrets.token_urlsafe(32)
        logging.getLogger("pixsim7.admin").warning(
            "ADMIN_TOKEN is not set; this run's admin token is %s", token)
        return token
    # A generated token would land in every log pipeline: the admin API stays off.
    logging.getLogger("pixsim7.admin").warning(
        "ADMIN_TOKEN is not set, so the admin API is off (503); set ADMIN_TOKEN to use it")
    return None


async def teardown_embedded_services(embedded: SharedServers) -> None:
    await asyncio.to_thread(embedded.release)


def _embedded_outcome(embedded: SharedServers) -> StepOutcome:
    if not embedded.urls:
        return StepOutcome(status="skipped")
    return StepOutcome(counts={"started": sorted(embedded.started),
                               "shared": sorted(set(embedded.urls) - set(embedded.started))})


@step("embedded_services", Policy.REQUIRED, provides="embedded", updates="settings",
      teardown=teardown_embedded_services, report=_embedded_outcome)
async def setup_embedded_services(settings: Settings) -> tuple[SharedServers, Settings]:
    """In debug, embedded PostgreSQL / Redis for whichever URL is unset: those of the data
    folder if another process runs them, else started here. The servers used, and the settings
    with their URLs filled in, which every later reader sees."""
    embedded = SharedServers(Path(settings.data_dir))
    needed = [service for service, url in (("postgres", settings.database_url),
                                           ("redis", settings.redis_url)) if not url]
    if not settings.debug or not needed:
        return embedded, settings
    # Starting blocks (initdb, waiting for ports), so it runs off the loop. Cancelled meanwhile
    # (Ctrl-C while PostgreSQL starts), it still lets go of what the thread went on to start.
    acquiring = asyncio.ensure_future(asyncio.to_thread(embedded.acquire, needed))
    resolved = {}
    try:
        urls = await asyncio.shield(acquiring)
        redact_also(urlsplit(url).password for url in urls.values())
        embedded.supervise()  # what this process started is started again should it die
        if "postgres" in urls:
            await _ensure_database(urls["postgres"], EMBEDDED_DATABASE)
            resolved["database_url"] = f"{urls['postgres'].rsplit('/', 1)[0]}/{EMBEDDED_DATABASE}"
    except BaseException:
        with contextlib.suppress(BaseException):
            await acquiring
        await teardown_embedded_services(embedded)
        raise
    if "redis" in urls:
        resolved["redis_url"] = urls["redis"]
    return embedded, settings.model_copy(update=resolved)


async def _ensure_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            # Another process sharing the server may create it at the same moment: PostgreSQL
            # then reports the duplicate name either way.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError,
                                     asyncpg.UniqueViolationError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@step("domain_registry", Policy.REQUIRED, provides="domain_registry",
      report=lambda domain_registry: StepOutcome(counts={
          "packages": len(domain_registry.packages), "models": len(domain_registry.models)}))
async def setup_domain_registry(settings: Settings) -> DomainModelRegistry:
    """Discover the domain model packages in DOMAIN_MODELS_DIR."""
    return init_domain_registry(Path(settings.domain_models_dir))


async def teardown_database(db: Database) -> None:
    await db.dispose()


@step("database", Policy.REQUIRED, provides="db", teardown=teardown_database,
      report=lambda db, domain_registry: StepOutcome(counts={
          "tables": len(domain_registry.tables), "created": len(db.created_tables)}))
async def setup_database(settings: Settings, domain_registry: DomainModelRegistry) -> Database:
    """Connect to DATABASE_URL and create the registry's tables (safe across replicas)."""
    db = Database(settings.database_url, connect_timeout=settings.database_connect_timeout,
                  statement_timeout=settings.database_statement_timeout)
    try:
        try:
            await db.ping(settings.database_connect_timeout)
        except Exception as exc:
            raise connect_failure(db.url, exc) from exc
        await db.create_schema(domain_registry.tables)
    except BaseException:
        await db.dispose()
        raise
    return db


def _seed_outcome(result: int | None) -> StepOutcome:
    if result is None:
        return StepOutcome(status="skipped")
    return StepOutcome(counts={"inserted": result})


@step("seed", Policy.OPTIONAL, report=_seed_outcome)
async def seed_presets(settings: Settings, db: Database,
                       domain_registry: DomainModelRegistry) -> int | None:
    """Insert the default generation presets that are missing (idempotent); how many it did.
    None, and nothing read, with SEED_DEFAULT_PRESETS=false (the database holds them)."""
    if not settings.seed_default_presets:
        return None
    return await seed_default_presets(db, domain_registry.model(MODEL_NAME))


async def setup_database_and_seed(settings: Settings,
                                  domain_registry: DomainModelRegistry) -> Database:
    """The `database` and `seed` steps in one call; a seeding failure is logged, as in a plan."""
    db = await setup_database(settings, domain_registry)
    try:
        await seed_presets(settings, db, domain_registry)
    except Exception as exc:
        logger.warning("default preset seeding failed: %s", type(exc).__name__)
    return db


def _redis_outcome(redis: RedisStatus) -> StepOutcome:
    if not redis.configured:
        return StepOutcome(status="degraded", counts={"redis": "disabled"})
    if not redis.available:
        return StepOutcome(status="degraded", counts={"redis": "disconnected"})
    return StepOutcome(counts={"redis": "connected"})


async def teardown_redis(redis: RedisStatus) -> None:
    await close_redis(redis.client)


@step("redis", Policy.DEGRADING, provides="redis", teardown=teardown_redis,
      report=_redis_outcome)
async def setup_redis(settings: Settings) -> RedisStatus:
    """Connect to REDIS_URL; without it, or when it does not answer, background jobs are off."""
    if not settings.redis_url:
        return RedisStatus(client=None, available=False)
    return await connect_redis(settings.redis_url, timeout=settings.redis_connect_timeout)


@step("providers", Policy.REQUIRED, provides="providers",
      report=lambda providers: StepOutcome(counts={"providers": len(providers.ids())}))
async def setup_providers() -> ProviderRegistry:
    registry = ProviderRegistry()
    for provider in default_providers():
        registry.register(provider)
    return registry


async def teardown_event_handlers(event_bus: EventBus, ws_hub: WebSocketHub) -> None:
    await ws_hub.close_all()
    await event_bus.close()


@step("event_handlers", Policy.REQUIRED, provides=("event_bus", "ws_hub", "event_metrics"),
      teardown=teardown_event_handlers,
      report=lambda event_bus: StepOutcome(counts={"handlers": len(event_bus.handler_names())}))
async def setup_event_handlers() -> tuple[EventBus, WebSocketHub, MetricsHandler]:
    """The event bus with the core handlers: metrics and the WebSocket broadcast."""
    bus, hub, metrics = EventBus(), WebSocketHub(), MetricsHandler()
    register_core_handlers(bus, hub, metrics=metrics)
    return bus, hub, metrics


@step("ecs_components", Policy.REQUIRED, provides="ecs_registry",
      report=lambda ecs_registry: StepOutcome(counts={"components": len(ecs_registry)}))
async def setup_ecs_components() -> ComponentRegistry:
    """Core ECS components, registered before plugins so plugins can see and extend them."""
    registry = ComponentRegistry()
    register_core_components(registry)
    return registry


def _locked_outcome(behavior_registry: BehaviorRegistry,
                    job_registry: JobRegistry) -> StepOutcome:
    counts = {k: v for k, v in behavior_registry.summary().items() if isinstance(v, int)}
    counts["job_kinds"] = len(job_registry.names())
    return StepOutcome(counts=counts)


@step("behavior_registry_lock", Policy.REQUIRED, report=_locked_outcome)
async def setup_behavior_registry_lock(behavior_registry: BehaviorRegistry,
                                       job_registry: JobRegistry) -> None:
    """Lock the behavior and job registries: after plugins load, nothing may register."""
    behavior_registry.lock()
    job_registry.lock()


async def teardown_middleware_lifecycle(app: FastAPI,
                                        middleware_manager: MiddlewareManager) -> None:
    await middleware_manager.shutdown(app)


@step("middleware_lifecycle", Policy.REQUIRED, teardown=teardown_middleware_lifecycle,
      report=lambda middleware_manager: StepOutcome(
          counts={"middleware": len(middleware_manager.installed_ids())}))
async def setup_middleware_lifecycle(app: FastAPI, middleware_manager: MiddlewareManager) -> None:
    """Run the startup hooks of the middleware installed when the app was built."""
    await middleware_manager.startup(app)
