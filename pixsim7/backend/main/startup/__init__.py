"""Startup: the runner (`runner`: policies, the step unit, the checked plan, `run_plan`), the
resources steps hand each other (`resources`), the timeline it records (`timeline`), its trace
and its page (`trace`, `page`), the steps (`steps`; the plugins step in `plugin_steps`) and the
shipped profiles, plans of those steps (`profiles`). Everything is importable from here."""

from pixsim7.backend.main.startup.plugin_steps import (
    PluginTeardownError,
    disable_plugins,
    load_plugins,
    plugins_step,
    setup_plugins,
)
from pixsim7.backend.main.startup.profiles import (
    API,
    API_PLAN,
    PROFILES,
    WORKER,
    WORKER_PLAN,
    Profile,
)
from pixsim7.backend.main.startup.resources import RESOURCES, Resource
from pixsim7.backend.main.startup.runner import (
    MissingInput,
    Plan,
    PlanError,
    Policy,
    StartupAborted,
    Step,
    StepDegraded,
    StepOutcome,
    begin_shutdown,
    run_build_step,
    run_plan,
    step,
)
from pixsim7.backend.main.startup.steps import (
    EMBEDDED_DATABASE,
    SettingsError,
    check_required,
    resolve_directory,
    seed_presets,
    setup_behavior_registry_lock,
    setup_database,
    setup_database_and_seed,
    setup_domain_registry,
    setup_ecs_components,
    setup_embedded_services,
    setup_event_handlers,
    setup_middleware_lifecycle,
    setup_providers,
    setup_redis,
    teardown_database,
    teardown_embedded_services,
    teardown_event_handlers,
    teardown_middleware_lifecycle,
    teardown_redis,
    validate_settings,
)
from pixsim7.backend.main.startup.timeline import (
    StartupTimeline,
    StepRecord,
    app_id,
    startup_timeline,
)
from pixsim7.backend.main.startup.trace import (
    TraceFileError,
    check_trace_path,
    trace_events,
    write_trace,
)

__all__ = [
    "API", "API_PLAN", "EMBEDDED_DATABASE", "PROFILES", "RESOURCES", "WORKER", "WORKER_PLAN",
    "MissingInput", "Plan", "PlanError", "Policy", "PluginTeardownError", "Profile", "Resource",
    "SettingsError", "StartupAborted", "StartupTimeline", "Step", "StepDegraded", "StepOutcome",
    "StepRecord", "app_id", "begin_shutdown", "check_required", "disable_plugins",
    "load_plugins", "plugins_step", "resolve_directory", "run_build_step",
    "run_plan", "seed_presets", "setup_behavior_registry_lock", "setup_database",
    "setup_database_and_seed", "setup_domain_registry", "setup_ecs_components",
    "setup_embedded_services", "setup_event_handlers", "setup_middleware_lifecycle",
    "setup_plugins", "setup_providers", "setup_redis", "startup_timeline", "step",
    "teardown_database", "teardown_embedded_services", "teardown_event_handlers",
    "teardown_middleware_lifecycle", "teardown_redis", "trace_events", "validate_settings",
    "write_trace",
    "TraceFileError",
    "check_trace_path",
]
