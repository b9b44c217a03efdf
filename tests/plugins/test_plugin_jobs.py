"""Job kinds declared by feature plugins: the manifest's `[[jobs]]`, registration when the
plugin is enabled, and the registry locked once startup is done."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from pixsim7_testing.plugins import write_plugin

from pixsim7.backend.main.core_jobs import job_registry
from pixsim7.backend.main.infrastructure.discovery.plugins import (
    BehaviorRegistry,
    PluginManager,
    context_factory_from_app,
)
from pixsim7.backend.main.infrastructure.discovery.plugins.manifest import (
    PluginManifestError,
    load_manifest,
)
from pixsim7.backend.main.infrastructure.registries.jobs import JobKind, JobRegistryLocked
from pixsim7.backend.main.shared.config import Settings
from pixsim7.backend.main.startup import (
    disable_plugins,
    plugins_step,
    setup_behavior_registry_lock,
)

HEADER = 'id = "{id}"\nname = "N"\nversion = "1.0.0"\nkind = "{kind}"\n'

JOB_CODE = """
from fastapi import APIRouter
from pydantic import BaseModel

router = APIRouter()

@router.get("/ping")
def ping():
    return {"pong": True}

class Sum(BaseModel):
    numbers: list[int]

async def add(app, payload):
    return sum(payload.numbers)

def not_async(app, payload):
    return 0

NOT_A_MODEL = {"numbers": "list"}
"""


def job_table(kind: str, function: str = "add", payload: str = "Sum", extra: str = "") -> str:
    return (f'\n[[jobs]]\nkind = "{kind}"\nfunction = "{function}"\npayload = "{payload}"\n'
            f"{extra}")


def plugin(root: Path, plugin_id: str, *jobs: str, kind: str = "feature",
           code: str = JOB_CODE, extra: str = "") -> Path:
    text = HEADER.format(id=plugin_id, kind=kind) + extra + "".join(jobs)
    return write_plugin(root, plugin_id, code, manifest_text=text)


def load(root: Path, plugin_id: str, kind: str = "feature"):
    return load_manifest(root / plugin_id / "manifest.toml", kind)


async def enabled(root: Path, *, fail_fast: bool = False) -> tuple[FastAPI, PluginManager]:
    app = FastAPI()
    app.state.behavior_registry = BehaviorRegistry()
    app.state.job_registry = job_registry()
    manager = PluginManager("feature", root, fail_fast=fail_fast)
    manager.discover()
    await manager.load_all(context_factory_from_app(app))
    await manager.enable_all(app, app.state.job_registry)
    return app, manager


def test_a_manifest_declares_jobs_as_tables(tmp_path: Path) -> None:
    plugin(tmp_path, "sums", job_table("sums.add", extra='description = "adds"\n'),
           job_table("sums.add_again", extra="retry_on_outage = true\n"))
    manifest = load(tmp_path, "sums")
    assert [(j.kind, j.function, j.payload, j.description, j.retry_on_outage)
            for j in manifest.jobs] == [("sums.add", "add", "Sum", "adds", False),
                                        ("sums.add_again", "add", "Sum", "", True)]
    plugin(tmp_path, "bare")
    assert load(tmp_path, "bare").jobs == ()


@pytest.mark.parametrize(("jobs", "kind", "expected"), [
    (job_table("other.add"), "feature",
     "field 'jobs.0.kind': 'other.add' must start with this plugin's id, as in 'sums.add'"),
    (job_table("sums.add") + job_table("sums.add"), "feature",
     "field 'jobs.1.kind': 'sums.add' is declared twice"),
    (job_table("sums.add"), "route", "field 'jobs': only feature plugins declare jobs"),
    (job_table("sums.add", function="os.system"), "feature", "field 'jobs.0.function'"),
    (job_table("sums.add", extra="queue = 'fast'\n"), "feature",
     "field 'jobs.0.queue' is not a known manifest field"),
    (job_table("sums"), "feature", "field 'jobs.0.kind'"),
    ('\njobs = "sums.add"\n', "feature", "field 'jobs'"),
])
def test_a_wrong_job_declaration_names_the_manifest_and_field(
        tmp_path: Path, jobs: str, kind: str, expected: str) -> None:
    plugin(tmp_path, "sums", jobs, kind=kind)
    with pytest.raises(PluginManifestError) as info:
        load(tmp_path, "sums", kind)
    assert str(info.value).startswith(str(tmp_path / "sums" / "manifest.toml"))
    assert expected in str(info.value)


async def test_enabling_a_plugin_registers_its_jobs_under_its_id(tmp_path: Path) -> None:
    plugin(tmp_path, "sums", job_table("sums.add", extra='description = "adds"\n'))
    plugin(tmp_path, "off", job_table("off.add"), extra="enabled = false\n")
    app, manager = await enabled(tmp_path)
    registry = app.state.job_registry
    assert registry.summary() == {"locked": False, "kinds": {
        "noop": "core", "presets.import": "core", "sums.add": "sums"}}
    kind = registry.get("sums.add")
    assert kind.description == "adds" and kind.payload.__name__ == "Sum"
    assert await kind.run(app, kind.payload(numbers=[1, 2, 3])) == 6
    assert manager.get("sums").as_dict()["jobs"] == ["sums.add"]
    assert manager.get("off").status == "disabled" and manager.get("off").jobs == []
    await manager.disable_all()


@pytest.mark.parametrize(("function", "payload", "expected"), [
    ("missing", "Sum", "field 'jobs.0.function': 'missing' is missing in"),
    ("not_async", "Sum", "field 'jobs.0.function': 'not_async' is not an async function"),
    ("add", "NOT_A_MODEL", "field 'jobs.0.payload': 'NOT_A_MODEL' is not a pydantic model"),
    ("add", "Missing", "field 'jobs.0.payload': 'Missing' is missing in"),
])
async def test_a_job_pointing_at_nothing_fails_its_plugin_and_registers_nothing(
        tmp_path: Path, function: str, payload: str, expected: str) -> None:
    # The first kind resolves; the second does not: neither may stay registered.
    plugin(tmp_path, "sums", job_table("sums.good"), job_table("sums.bad", function, payload))
    app, manager = await enabled(tmp_path)
    state = manager.get("sums")
    assert state.status == "failed"
    assert expected.replace("jobs.0", "jobs.1") in state.error
    assert str(tmp_path / "sums" / "manifest.toml") in state.error
    assert app.state.job_registry.names() == ["noop", "presets.import"]
    assert state.routes == [] and not any(
        getattr(r, "path", "").endswith("/ping") for r in app.router.routes)


async def test_a_plugin_whose_on_enable_raises_takes_its_jobs_back(tmp_path: Path) -> None:
    plugin(tmp_path, "sums", job_table("sums.add"),
           code=JOB_CODE + "\ndef on_enable(ctx):\n    raise RuntimeError('no')\n")
    app, manager = await enabled(tmp_path)
    assert manager.get("sums").status == "failed" and manager.get("sums").jobs == []
    assert app.state.job_registry.names() == ["noop", "presets.import"]


async def test_a_kind_taken_by_the_core_fails_the_plugin_that_claims_it(tmp_path: Path) -> None:
    # A plugin whose id is "presets" may name a kind "presets.import": the core's.
    plugin(tmp_path, "presets", job_table("presets.import"))
    app, manager = await enabled(tmp_path)
    assert manager.get("presets").status == "failed"
    assert "job kind 'presets.import' is registered twice (already by core)" in (
        manager.get("presets").error)
    assert app.state.job_registry.get("presets.import").owner == "core"


async def test_after_startup_the_job_registry_is_locked(tmp_path: Path) -> None:
    plugin(tmp_path, "sums", job_table("sums.add"))
    settings = Settings(_env_file=None, feature_plugins_dir=str(tmp_path),
                        route_plugins_dir=str(tmp_path / "none"))
    # The worker's plugins step: feature plugins only, so no route folder is needed.
    behaviors, registry, *managers = await plugins_step(("feature",), mount_routes=False)(
        FastAPI(), settings, None, None, None, None)
    try:
        assert [m.kind for m in managers] == ["feature"]
        await setup_behavior_registry_lock(behaviors, registry)
        assert registry.locked and "sums.add" in registry.names()
        declared = registry.get("sums.add")
        extra = JobKind("sums.later", declared.payload, declared.run)
        with pytest.raises(JobRegistryLocked, match="'sums.later': the job registry is locked"):
            registry.register(extra)
        with pytest.raises(JobRegistryLocked):
            registry.unregister_owner("sums")
        assert registry.names() == ["noop", "presets.import", "sums.add"]
    finally:
        await disable_plugins(*managers)


def test_two_registries_share_nothing() -> None:
    first, second = job_registry(), job_registry()
    first.lock()
    second.register(JobKind("extra.kind", first.get("noop").payload, first.get("noop").run,
                            owner="extra"))
    assert "extra.kind" not in first.names() and not second.locked
