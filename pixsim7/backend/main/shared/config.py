"""Backend settings, read from the environment and a `.env` file (names: fields upper-cased)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_SECRET_KEY = "change-this-in-production"

# The directories discovered at startup, as (setting, default folder inside the package).
DISCOVERY_DIRS: dict[str, str] = {
    "domain_models_dir": "domain_models",
    "feature_plugins_dir": "plugins",
    "route_plugins_dir": "routes",
    "middleware_dir": "middleware",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", validate_default=True
    )

    app_name: str = "PixSim7"
    app_version: str = "0.7.0"
    debug: bool = True
    database_url: str | None = None
    redis_url: str | None = None
    redis_key_prefix: str = "pixsim7:"
    secret_key: str = DEFAULT_SECRET_KEY
    admin_token: str | None = None

    domain_models_dir: Path = PACKAGE_DIR / "domain_models"
    feature_plugins_dir: Path = PACKAGE_DIR / "plugins"
    route_plugins_dir: Path = PACKAGE_DIR / "routes"
    middleware_dir: Path = PACKAGE_DIR / "middleware"

    plugin_fail_fast: bool | None = None
    data_dir: Path = Field(
        default=Path(".pixsim7"),
        validation_alias=AliasChoices("PIXSIM7_DATA_DIR", "data_dir"),
    )

    ready_check_timeout: float = Field(default=1.0, gt=0)
    ready_cache_ttl: float = Field(default=1.0, ge=0)
    shutdown_drain_seconds: float = Field(default=2.0, ge=0)
    job_timeout_seconds: float = Field(default=300.0, gt=0)
    job_max_tries: int = Field(default=5, ge=1)
    job_retry_backoff_seconds: float = Field(default=1.0, ge=0)
    worker_health_interval_seconds: float = Field(default=10.0, gt=0)
    # How long an idle worker waits between two looks at the queue: the longest a queued job
    # waits for a free worker (arq's own default is 0.5 s).
    job_poll_delay_seconds: float = Field(default=0.05, gt=0, le=5)
    database_connect_timeout: float = Field(default=5.0, gt=0)
    redis_connect_timeout: float = Field(default=2.0, gt=0)
    cors_origins: list[str] = ["http://localhost:5173"]
    # Where `serve` writes its startup and shutdown trace when it exits (unset: nowhere).
    startup_trace_file: Path | None = None
    # And where it writes the same as one self-contained HTML page (unset: nowhere).
    startup_page_file: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    # Whether GET /metrics is open to any scraper or needs the admin token.
    metrics: Literal["public", "admin"] = "public"

    # The API boundary: what a client may send and how long it may take (GETTING_STARTED).
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    database_statement_timeout: float = Field(default=5.0, gt=0)
    request_read_timeout: float = Field(default=10.0, gt=0)
    keep_alive_timeout: int = Field(default=5, gt=0)
    max_connections: int = Field(default=1000, gt=0)
    max_header_bytes: int = Field(default=16 * 1024, gt=0)
    events_token: str | None = None
    # Startup inserts the default generation presets that are missing; false leaves the table
    # as it is (a database that already holds them, or whose presets are managed elsewhere).
    seed_default_presets: bool = True
    # Who may queue jobs and how much may wait for a worker (GETTING_STARTED, "Background jobs").
    jobs_token: str | None = None
    jobs_max_queued: int = Field(default=1000, gt=0)
    job_max_payload_bytes: int = Field(default=64 * 1024, gt=0)
    # A finished job's result: its largest stored size, and how long it is kept (at most
    # JOBS_MAX_QUEUED results are kept at once, the newest).
    job_max_result_bytes: int = Field(default=64 * 1024, gt=0)
    job_result_ttl_seconds: float = Field(default=3600.0, gt=0)
    ws_max_message_bytes: int = Field(default=4096, gt=0)
    ws_max_connections: int = Field(default=100, gt=0)
    ws_ping_interval: float = Field(default=20.0, gt=0)
    ws_ping_timeout: float = Field(default=20.0, gt=0)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The usual order (arguments, environment, .env, secrets). A .env that is absent or
        # empty gives nothing, yet its source would still go through every field: 0.9 ms of
        # the 2.1 a Settings() costs, paid by every app a test builds. It is left out then.
        dotenv = (dotenv_settings,) if getattr(dotenv_settings, "env_vars", True) else ()
        return (init_settings, env_settings, *dotenv, file_secret_settings)

    @field_validator(*DISCOVERY_DIRS, "data_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Relative overrides resolve against the working directory, once.
        return value.expanduser().resolve()

    @field_validator("database_url", "redis_url", "admin_token", "events_token", "jobs_token",
                     "startup_trace_file", "startup_page_file", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", "log_format", "metrics", mode="before")
    @classmethod
    def _log_case(cls, value: Any, info: ValidationInfo) -> Any:
        # LOG_LEVEL=debug, LOG_FORMAT=JSON and METRICS=Admin mean what they say.
        if not isinstance(value, str):
            return value
        return value.strip().upper() if info.field_name == "log_level" else value.strip().lower()

    @model_validator(mode="after")
    def _fail_fast_follows_debug(self) -> Settings:
        if self.plugin_fail_fast is None:
            self.plugin_fail_fast = self.debug
        return self

    def ws_listener_limit(self) -> int:
        """Event listeners at once: WS_MAX_CONNECTIONS, and never more than half of
        MAX_CONNECTIONS, so that plain HTTP keeps the other half."""
        return max(1, min(self.ws_max_connections, self.max_connections // 2))

    def secret_values(self) -> list[str]:
        """What no log line may show: the tokens, the secret key and the URLs' passwords."""
        parts = [urlsplit(url) for url in (self.database_url, self.redis_url) if url]
        # A Redis URL's user alone is its password (`redis://SECRET@host`, as some write it).
        passwords = [part.password or (part.username if part.scheme.startswith("redis")
                                       else None) for part in parts]
        return [value for value in (self.admin_token, self.events_token, self.jobs_token,
                                    self.secret_key, *passwords) if value]

    def discovery_dirs(self) -> dict[str, Path]:
        """The four discovery directories by setting name."""
        return {name: getattr(self, name) for name in DISCOVERY_DIRS}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()


def __getattr__(name: str) -> Any:
    # `settings` is read lazily so that importing this module never parses the environment.
    if name == "settings":
        return get_settings()
    raise AttributeError(name)
