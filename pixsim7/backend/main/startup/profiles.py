"""The shipped profiles: what an app is for, as a plan of the steps in `steps`. The API serves
HTTP; the worker runs background jobs and serves none. `check --graph` draws them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from pixsim7.backend.main.startup.plugin_steps import plugins_step, setup_plugins
from pixsim7.backend.main.startup.runner import Plan, Policy
from pixsim7.backend.main.startup.steps import (
    seed_presets,
    setup_behavior_registry_lock,
    setup_database,
    setup_domain_registry,
    setup_ecs_components,
    setup_embedded_services,
    setup_event_handlers,
    setup_middleware_lifecycle,
    setup_providers,
    setup_redis,
    validate_settings,
)

# What the worker cannot run without: arq connects to Redis before anything else.
WORKER_REQUIRED = MappingProxyType(
    {"redis_url": "the worker takes its jobs from the Redis the API enqueues to"})


# A worker serves no HTTP, so it loads no route plugins.
WORKER_PLUGIN_KINDS = ("feature",)


@dataclass(frozen=True)
class Profile:
    """What an app is for: its plan, whether it serves HTTP and whether it runs background
    jobs. The plugin kinds it loads and the settings it cannot start without are its plan's
    `plugins` and `settings` steps' options, so each is written once."""

    name: str
    plan: Plan
    serves_http: bool
    runs_jobs: bool

    @property
    def plugin_kinds(self) -> tuple[str, ...]:
        return self.plan.step("plugins").options["kinds"]

    @property
    def required_settings(self) -> Mapping[str, str]:
        """Each setting it refuses to start without outside debug, with why."""
        return self.plan.step("settings").options.get("required", MappingProxyType({}))


API = Profile(
    "api",
    Plan((
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
    ), given=("app", "settings", "middleware_manager")),
    serves_http=True, runs_jobs=False)

# A background worker: no HTTP surface, so no route plugins, no middleware and no routes;
# Redis is required (it carries the jobs). Feature plugins load as in the API, since their job
# kinds run here, with the registries they fill. No seeding: the default presets are the API's
# to offer, and no job reads them.
WORKER = Profile(
    "worker",
    Plan((
        validate_settings.with_options(required=WORKER_REQUIRED, admin_api=False),
        setup_embedded_services,
        setup_domain_registry,
        setup_database,
        setup_redis.with_policy(Policy.REQUIRED),
        setup_providers,
        setup_event_handlers,
        setup_ecs_components,
        plugins_step(WORKER_PLUGIN_KINDS, mount_routes=False),
        setup_behavior_registry_lock,
    )),
    serves_http=False, runs_jobs=True)

PROFILES = {profile.name: profile for profile in (API, WORKER)}
API_PLAN, WORKER_PLAN = API.plan, WORKER.plan
