"""Bad input at startup: every mistake gets an error naming the culprit, and the failure policy
decides whether startup goes on.

Each case runs through the real app (`app_factory`) with the discovery directories pointed at a
temporary copy of the bundled folder plus the broken piece. Plugin cases run over the policy
matrix: an optional plugin in production with PLUGIN_FAIL_FAST=false (startup goes on,
degraded), a plugin whose manifest says `required = true` (startup aborts), and an optional
plugin under fail-fast (startup aborts). Startup stories are pinned as JSON snapshots.
"""

from __future__ import annotations

import logging
import textwrap
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pixsim7_testing.plugins import copy_bundled
from pixsim7_testing.plugins import write_plugin as kit_write_plugin
from pixsim7_testing.processes import run_backend

from pixsim7.backend.main.infrastructure.discovery.manifests import ManifestFolderError
from pixsim7.backend.main.startup import SettingsError, StartupAborted

pytestmark = pytest.mark.integration

ADMIN_HEADERS = {"Authorization": "Bearer kit-admin-token"}
PRODUCTION = {"debug": False, "secret_key": "production-secret"}
BUNDLED = {
    "feature_plugins_dir": "plugins",
    "route_plugins_dir": "routes",
    "middleware_dir": "middleware",
    "domain_models_dir": "domain_models",
}


# --- helpers ---------------------------------------------------------------------------------


def bundled_copy(tmp_path: Path, setting: str) -> Path:
    """A fresh copy of the bundled folder behind `setting`, without byte-code caches."""
    return copy_bundled(BUNDLED[setting], tmp_path / setting)


def write_plugin(root: Path, folder: str, *, manifest: str, body: str = "") -> Path:
    """A plugin folder with the given manifest text and `__init__.py` body."""
    return kit_write_plugin(root, folder, textwrap.dedent(body).lstrip(),
                            manifest_text=textwrap.dedent(manifest).lstrip())


def manifest_text(plugin_id: str, *, kind: str, required: bool, extra: str = "",
                  skip: tuple[str, ...] = ()) -> str:
    fields = {
        "id": f'"{plugin_id}"',
        "name": f'"{plugin_id}"',
        "version": '"0.1.0"',
        "kind": f'"{kind}"',
        "required": str(required).lower(),
    }
    lines = [f"{key} = {value}" for key, value in fields.items() if key not in skip]
    return "\n".join(lines) + "\n" + textwrap.dedent(extra).lstrip()


async def admin_plugins(running: Any) -> dict[str, Any]:
    response = await running.get("/api/v1/admin/plugins", headers=ADMIN_HEADERS)
    assert response.status_code == 200, response.text
    return response.json()


def all_log_text(records: list[logging.LogRecord]) -> str:
    """Every captured record as a handler would write it, tracebacks included."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(record) for record in records)


# --- the policy matrix ----------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    settings: dict[str, Any]
    required: bool  # what the broken plugin's manifest says
    aborts: bool
    hint: str  # what the abort message tells the operator to change


POLICIES = {
    "optional": Policy({**PRODUCTION, "plugin_fail_fast": False}, required=False,
                       aborts=False, hint=""),
    "required": Policy({**PRODUCTION, "plugin_fail_fast": False}, required=True,
                       aborts=True, hint="set required = false in its manifest"),
    "fail_fast": Policy({"debug": True, "plugin_fail_fast": True}, required=False,
                        aborts=True, hint="PLUGIN_FAIL_FAST=false"),
}


@dataclass(frozen=True)
class Broken:
    """What a case wrote: the culprit, the ids that fail, and text the error must carry."""

    culprit: str
    failed: list[str]
    fragments: list[str]


PluginCase = Callable[[Path, str, bool], Broken]


def case_toml_syntax_error(root: Path, kind: str, required: bool) -> Broken:
    folder = write_plugin(root, "weather", manifest=(
        'id = "weather"\nname = "Weather\nversion = "0.1.0"\n'
        f'kind = "{kind}"\nrequired = {str(required).lower()}\n'))
    return Broken("weather", ["weather"],
                  [str(folder / "manifest.toml"), "invalid TOML", "line 2"])


def case_missing_field(root: Path, kind: str, required: bool) -> Broken:
    folder = write_plugin(root, "weather", manifest=manifest_text(
        "weather", kind=kind, required=required, skip=("version",)))
    return Broken("weather", ["weather"],
                  [str(folder / "manifest.toml"), "field 'version' is required but missing"])


def case_wrong_type(root: Path, kind: str, required: bool) -> Broken:
    folder = write_plugin(root, "weather", manifest=manifest_text(
        "weather", kind=kind, required=required, skip=("version",), extra="version = 1\n"))
    return Broken("weather", ["weather"],
                  [str(folder / "manifest.toml"), "field 'version'", "valid string"])


def case_import_raises(root: Path, kind: str, required: bool) -> Broken:
    write_plugin(root, "weather", manifest=manifest_text("weather", kind=kind, required=required),
                 body='raise RuntimeError("weather station offline")\n')
    return Broken("weather", ["weather"], ["RuntimeError: weather station offline"])


def case_on_enable_raises(root: Path, kind: str, required: bool) -> Broken:
    write_plugin(root, "weather", manifest=manifest_text("weather", kind=kind, required=required),
                 body="""
                     def on_enable(ctx):
                         raise RuntimeError("forecast cache not ready")
                 """)
    return Broken("weather", ["weather"], ["RuntimeError: forecast cache not ready"])


def case_missing_dependency(root: Path, kind: str, required: bool) -> Broken:
    write_plugin(root, "weather", manifest=manifest_text(
        "weather", kind=kind, required=required, extra='dependencies = ["ghost"]\n'))
    return Broken("weather", ["weather"],
                  ["PluginDependencyError", "depends on 'ghost', which is not installed"])


def case_dependency_cycle(root: Path, kind: str, required: bool) -> Broken:
    write_plugin(root, "alpha", manifest=manifest_text(
        "alpha", kind=kind, required=required, extra='dependencies = ["beta"]\n'))
    write_plugin(root, "beta", manifest=manifest_text(
        "beta", kind=kind, required=False, extra='dependencies = ["alpha"]\n'))
    return Broken("alpha", ["alpha", "beta"],
                  ["PluginDependencyError", "dependency cycle among plugins alpha, beta"])


def case_duplicate_id(root: Path, kind: str, required: bool) -> Broken:
    first = write_plugin(root, "weather", manifest=manifest_text(
        "weather", kind=kind, required=False))
    second = write_plugin(root, "weather_copy", manifest=manifest_text(
        "weather", kind=kind, required=required))
    return Broken("weather", ["weather"],
                  [str(second / "manifest.toml"),
                   f"plugin id 'weather' is declared by both {first} and {second}"])


PLUGIN_CASES: dict[str, PluginCase] = {
    "toml_syntax_error": case_toml_syntax_error,
    "missing_field": case_missing_field,
    "wrong_type": case_wrong_type,
    "import_raises": case_import_raises,
    "on_enable_raises": case_on_enable_raises,
    "missing_dependency": case_missing_dependency,
    "dependency_cycle": case_dependency_cycle,
    "duplicate_id": case_duplicate_id,
}
# A manifest that is not even TOML cannot say it is required, so that case has no "required".
MATRIX = [
    pytest.param(case, policy, id=f"{case}-{policy}")
    for case in PLUGIN_CASES
    for policy in POLICIES
    if not (case == "toml_syntax_error" and policy == "required")
]


async def run_plugin_case(app_factory, make_settings, tmp_path: Path, case: str,
                          policy_name: str, kind: str) -> tuple[Any, Broken, dict[str, Any]]:
    policy = POLICIES[policy_name]
    setting = f"{kind}_plugins_dir"
    root = bundled_copy(tmp_path, setting)
    broken = PLUGIN_CASES[case](root, kind, policy.required)
    running = await app_factory(make_settings(**policy.settings, **{setting: root}))
    admin = None
    if policy.aborts:
        error = running.startup_error
        assert isinstance(error, StartupAborted), error
        assert error.step == "plugins"
        text = str(error)
        assert f"{kind} plugin {broken.culprit!r}" in text
        assert ("required" if policy.required else "optional") in text
        assert policy.hint in text
        for fragment in broken.fragments:
            assert fragment in text
        # What had started is torn down, and nothing from the plugins step is left enabled.
        assert running.recorder.steps("startup")[-1] == ("plugins", "failed")
    else:
        assert running.started, running.startup_error
        admin = await admin_plugins(running)
    data = await running.story(probe_paths="/ready", inventory=False)
    if not policy.aborts:
        ready = data["ready"]
        assert ready["status"] == 200
        assert ready["body"]["status"] == "degraded"
        assert ready["body"]["plugins"]["failed"] == sorted(broken.failed)
        assert ready["body"]["plugins_loaded"] is True
        entries = {p["id"]: p for p in admin[kind]["plugins"]}
        for plugin_id in broken.failed:
            assert entries[plugin_id]["status"] == "failed"
        culprit = entries[broken.culprit]
        for fragment in broken.fragments:
            assert fragment in culprit["error"]
        others = [p for p in admin[kind]["plugins"] if p["id"] not in broken.failed]
        assert others and all(p["status"] == "enabled" for p in others)
        assert ("plugins", "degraded") in running.recorder.steps("startup")
    return running, broken, data


# --- plugin cases ---------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "policy"), MATRIX)
async def test_broken_feature_plugin(app_factory, make_settings, tmp_path, snapshot_json,
                                     case: str, policy: str) -> None:
    _, _, data = await run_plugin_case(app_factory, make_settings, tmp_path, case, policy,
                                       "feature")
    assert data == snapshot_json


@pytest.mark.parametrize("policy", list(POLICIES))
async def test_route_plugin_whose_import_raises(app_factory, make_settings, tmp_path,
                                                snapshot_json, policy: str) -> None:
    _, _, data = await run_plugin_case(app_factory, make_settings, tmp_path, "import_raises",
                                       policy, "route")
    assert data == snapshot_json


async def test_unparseable_manifest_is_optional_in_production(app_factory, make_settings,
                                                              tmp_path) -> None:
    """A manifest that is not TOML cannot declare `required`; production starts degraded."""
    root = bundled_copy(tmp_path, "feature_plugins_dir")
    case_toml_syntax_error(root, "feature", required=True)
    running = await app_factory(make_settings(**POLICIES["required"].settings,
                                              feature_plugins_dir=root))
    assert running.started, running.startup_error
    ready = (await running.probe(["/ready"]))["/ready"]
    assert (ready["status"], ready["body"]["status"]) == (200, "degraded")
    assert ready["body"]["plugins"]["failed"] == ["weather"]


async def test_failed_optional_plugin_serves_no_routes(app_factory, make_settings,
                                                       tmp_path) -> None:
    """A plugin whose on_enable raised has its routes taken back out."""
    root = bundled_copy(tmp_path, "feature_plugins_dir")
    write_plugin(root, "weather", manifest=manifest_text("weather", kind="feature",
                                                         required=False), body="""
        from fastapi import APIRouter

        router = APIRouter()

        @router.get("/forecast")
        def forecast():
            return {"sky": "clear"}

        def on_enable(ctx):
            raise RuntimeError("forecast cache not ready")
    """)
    running = await app_factory(make_settings(**POLICIES["optional"].settings,
                                              feature_plugins_dir=root))
    assert running.started, running.startup_error
    response = await running.get("/api/v1/plugins/weather/forecast")
    assert response.status_code == 404


# --- directory settings ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["missing", "file"])
@pytest.mark.parametrize("setting", list(BUNDLED))
async def test_directory_setting_that_is_not_a_folder(app_factory, make_settings, tmp_path,
                                                      setting: str, shape: str) -> None:
    bad = tmp_path / f"not_{setting}"
    if shape == "file":
        bad.write_text("a file where a folder is expected\n")
    running = await app_factory(make_settings(**{setting: bad}))
    assert not running.started
    error = running.startup_error
    env = setting.upper()
    if setting == "middleware_dir":
        # Middleware is discovered when the app is built, so create_app itself refuses.
        assert isinstance(error, StartupAborted), error
        assert (error.step, type(error.cause)) == ("middleware", ManifestFolderError)
        assert error.timeline.status("middleware", phase="build") == "failed"
        assert running.recorder.steps("startup") == []
    else:
        assert isinstance(error, StartupAborted), error
        assert error.step == "settings"
        assert isinstance(error.cause, SettingsError)
        assert running.recorder.steps("startup") == [("settings", "failed")]
    text = str(error)
    assert f"{env}={bad}" in text
    assert ("does not exist" if shape == "missing" else "is not a folder") in text


# --- domain model packages ------------------------------------------------------------------

DOMAIN_BREAKAGES = {
    "toml_syntax_error": ('name = "game"\nmodels = ["World", "GameSession"\n', "invalid TOML"),
    "missing_models": ('name = "game"\ndepends_on = ["core"]\n',
                       "field 'models' is required but missing"),
    "wrong_type": ('name = "game"\ndepends_on = "core"\nmodels = ["World", "GameSession"]\n',
                   "field 'depends_on': Input should be a valid list"),
}


@pytest.mark.parametrize("breakage", list(DOMAIN_BREAKAGES))
async def test_broken_domain_package_manifest_aborts(app_factory, make_settings, tmp_path,
                                                     snapshot_json, breakage: str) -> None:
    root = bundled_copy(tmp_path, "domain_models_dir")
    text, fragment = DOMAIN_BREAKAGES[breakage]
    manifest = root / "game" / "manifest.toml"
    manifest.write_text(text)
    # Production with PLUGIN_FAIL_FAST=false: the domain registry is required all the same.
    running = await app_factory(make_settings(**PRODUCTION, plugin_fail_fast=False,
                                              domain_models_dir=root))
    error = running.startup_error
    assert isinstance(error, StartupAborted), error
    assert error.step == "domain_registry"
    assert str(manifest) in str(error)
    assert fragment in str(error)
    data = await running.story(probe_paths="/ready", inventory=False)
    assert [m["step"] for m in data["milestones"] if m["phase"] == "startup"][-1] == (
        "domain_registry")
    assert data == snapshot_json


# --- connection URLs ------------------------------------------------------------------------

PASSWORD = "Sup3rSecretPw9"
BAD_URLS = [
    pytest.param("database_url", "postgresql://user:pw@host:notaport/db", "pw",
                 "not a valid database URL", id="database-port-not-a-number"),
    pytest.param("database_url", f"postgresql://user:{PASSWORD}@host:notaport/db", PASSWORD,
                 "not a valid database URL", id="database-port-not-a-number-secret"),
    pytest.param("database_url", "mysql://x@y/z", None, "scheme 'mysql'", id="database-mysql"),
    pytest.param("database_url", f"mysql://x:{PASSWORD}@y/z", PASSWORD, "scheme 'mysql'",
                 id="database-mysql-secret"),
    pytest.param("redis_url", "redis://h:port/x", None, "not a valid URL",
                 id="redis-port-not-a-number"),
    pytest.param("redis_url", f"redis://:{PASSWORD}@h:port/x", PASSWORD, "not a valid URL",
                 id="redis-port-not-a-number-secret"),
    pytest.param("redis_url", "http://h", None, "scheme 'http'", id="redis-http"),
    pytest.param("redis_url", f"http://u:{PASSWORD}@h/0", PASSWORD, "scheme 'http'",
                 id="redis-http-secret"),
]


@pytest.mark.parametrize(("setting", "url", "password", "fragment"), BAD_URLS)
async def test_malformed_url_aborts_at_settings(app_factory, make_settings, caplog,
                                                snapshot_json, setting: str, url: str,
                                                password: str | None, fragment: str) -> None:
    caplog.set_level(logging.DEBUG)
    running = await app_factory(make_settings(**{setting: url}))
    error = running.startup_error
    assert isinstance(error, StartupAborted), error
    assert error.step == "settings"
    text = str(error)
    assert setting.upper() in text
    assert fragment in text
    data = await running.story(probe_paths="/ready", inventory=False)
    assert data["milestones"][1:] == [{"phase": "startup", "step": "settings",
                                       "status": "failed", "policy": "required",
                                       "error": error.cause.__class__.__name__}]
    assert data["milestones"][0]["phase"] == "build"  # the app was built, then startup failed
    if password is not None:
        # Neither the error (with its chain) nor anything logged carries the password.
        def leaks(output: str) -> bool:
            # A short password is only looked for where a URL would carry it.
            return f":{password}@" in output or (len(password) > 6 and password in output)

        assert not leaks("".join(traceback.format_exception(error)))
        assert not leaks(all_log_text(caplog.records))
        assert not leaks(repr(data))
    assert caplog.records, "startup logged nothing"
    assert data == snapshot_json


# --- a non-boolean DEBUG through the command line -------------------------------------------


def test_non_boolean_debug_is_refused_by_check(kit_services, backend_env, tmp_path) -> None:
    env = {**backend_env, "DEBUG": "maybe", "DATABASE_URL": kit_services.postgres.url(),
           "REDIS_URL": kit_services.redis.url()}
    result = run_backend(["check"], env, tmp_path, timeout=60)
    output = result.output
    assert result.returncode != 0, output
    assert "DEBUG" in output, output
    assert "maybe" in output, output
    assert "Traceback" not in output, output
