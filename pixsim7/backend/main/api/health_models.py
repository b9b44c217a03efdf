"""Response models of `/`, `/ready` and `/health`, so OpenAPI documents their bodies exactly.

The fields the service has always returned keep their names and values; new ones sit beside them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ReadyStatus = Literal["ready", "degraded", "unavailable"]
Lifecycle = Literal["starting", "ready", "stopping", "stopped"]
# `error: <ExceptionClass>` names the failure's type only: never a message, host or URL.
DATABASE_STATE = Field(pattern=r"^(connected|unknown|error: \w+)$",
                       examples=["connected", "error: ConnectionRefusedError"])


class Liveness(BaseModel):
    """`GET /`: the process answers."""

    name: str = Field(examples=["PixSim7"])
    version: str = Field(examples=["0.7.0"])
    status: Literal["running"]


class PluginCounts(BaseModel):
    """How many plugins are enabled, and which failed."""

    enabled: int = Field(ge=0)
    failed: list[str]


class CheckDetail(BaseModel):
    """One dependency check in `/ready?verbose`."""

    status: str = Field(examples=["connected", "disconnected", "error: TimeoutError"])
    duration_ms: float = Field(ge=0)
    since: str = Field(description="UTC ISO 8601 time since which the check has had `status`")


class Readiness(BaseModel):
    """`GET /ready`: 200 `ready` or `degraded`, 503 `unavailable`."""

    status: ReadyStatus
    database: str = DATABASE_STATE
    redis: Literal["connected", "disconnected", "disabled", "unknown"]
    plugins_loaded: bool
    lifecycle: Lifecycle
    plugins: PluginCounts
    database_writes: str | None = Field(
        None, pattern=r"^failing: [\w /-]+$", examples=["failing: disk full"],
        description="only while the database refuses writes (disk full, read-only, ...): "
                    "`degraded` for WRITE_FAILURE_MEMORY_S (30 s) after the last refusal")
    checks: dict[str, CheckDetail] | None = Field(
        None, description="only with `?verbose`; empty before the first check")


class Health(BaseModel):
    """`GET /health`: the readiness checks for dashboards, always 200."""

    status: Literal["healthy", "degraded"]
    database: str = DATABASE_STATE
    redis: Literal["connected", "disconnected"]
    providers: list[str]
    readiness: ReadyStatus
    lifecycle: Lifecycle
    plugins_loaded: bool
    plugins: PluginCounts
    seed: str = Field(examples=["ok", "not_run"])
