"""The admin surface and what public bodies, logs and the CLI give away.

Every route under /api/v1/admin (found on the running app, plugin routes included) refuses
anything but `Authorization: Bearer <ADMIN_TOKEN>`; public bodies and logs never carry hosts,
ports, URLs, paths, tracebacks or passwords; the default SECRET_KEY stops a production process.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
import re
import textwrap
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from pixsim7_testing.apps import started
from pixsim7_testing.plugins import bundled_with_plugin
from pixsim7_testing.processes import run_backend

from pixsim7.backend.main.api import security
from pixsim7.backend.main.startup import StartupAborted

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # FastAPI versions that copy included routes into the app's list
    iter_route_contexts = None

# The admin-surface tests share a started app (rollback_db); the body-hygiene test cuts
# services with a fault proxy, so it starts on a template clone of its own; the logs test keeps
# an empty database because it pins the masked URL that creating the schema logs.
pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN_PREFIX = "/api/v1/admin"
TOKEN = "kit-admin-token"
PLUGIN_PATH = f"{ADMIN_PREFIX}/extra/status"
PRESET = {"name": "hardening-preset", "provider_id": "pixverse",
          "operation": "text_to_video", "params": {"duration": 5}}

# Every way of presenting the wrong credentials; each must get the same 401.
REFUSED_HEADERS = {
    "no header": {},
    "empty header": {"Authorization": ""},
    "bearer without token": {"Authorization": "Bearer "},
    "wrong token, same length": {"Authorization": "Bearer " + "x" * len(TOKEN)},
    "wrong token, one character off": {"Authorization": f"Bearer {TOKEN[:-1]}X"},
    "token prefix, shorter": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "token plus suffix, longer": {"Authorization": f"Bearer {TOKEN}-and-more"},
    "right token, Basic scheme": {"Authorization": f"Basic {TOKEN}"},
    "right token, Token scheme": {"Authorization": f"Token {TOKEN}"},
    "right token, no scheme": {"Authorization": TOKEN},
    "right token, other header": {"X-Admin-Token": TOKEN},
}

ADMIN_PLUGIN_MANIFEST = """\
id = "admin_extra"
name = "Admin extra"
version = "1.0.0"
kind = "feature"
prefix = "/admin/extra"
description = "Mounts a route under the admin prefix."
"""

ADMIN_PLUGIN_INIT = '''\
from fastapi import APIRouter

router = APIRouter()


@router.get("/status")
async def status() -> dict:
    return {"extra": "ok"}
'''


def feature_plugins_with_admin_route(tmp_path: Path) -> Path:
    """The package's feature plugins plus one whose manifest prefix lands under the admin API."""
    return bundled_with_plugin(tmp_path / "feature_plugins", "plugins", "admin_extra",
                               ADMIN_PLUGIN_INIT, manifest_text=ADMIN_PLUGIN_MANIFEST)


def served_routes(app: FastAPI) -> Iterable[Any]:
    routes = app.routes
    return iter_route_contexts(routes) if iter_route_contexts is not None else routes


def admin_operations(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every HTTP route the running app serves under the admin prefix."""
    found = set()
    for route in served_routes(app):
        path = getattr(route, "path", None) or ""
        if path != ADMIN_PREFIX and not path.startswith(ADMIN_PREFIX + "/"):
            continue
        for method in getattr(route, "methods", None) or ():
            if method != "HEAD":
                found.add((method, path))
    return sorted(found)


@pytest.fixture(scope="session")
def admin_plugins_dir(tmp_path_factory) -> Path:
    """One folder for the session: the same settings, so rollback tests share their app."""
    return feature_plugins_with_admin_route(tmp_path_factory.mktemp("admin-plugins"))


@pytest.fixture
async def admin_app(app_factory, make_settings, admin_plugins_dir) -> Any:
    """A started app whose feature plugins include one with a route under the admin prefix."""
    return await started(app_factory, make_settings(feature_plugins_dir=admin_plugins_dir))


# --- admin authentication ----------------------------------------------------------------------


@pytest.mark.rollback_db
async def test_admin_routes_are_enumerated_from_the_app_including_a_plugin_route(
    admin_app,
) -> None:
    operations = admin_operations(admin_app.app)
    assert {("GET", f"{ADMIN_PREFIX}/plugins"), ("GET", f"{ADMIN_PREFIX}/startup"),
            ("GET", PLUGIN_PATH)} <= set(operations)
    assert admin_app.app.state.plugin_manager.get("admin_extra").status == "enabled"


@pytest.mark.rollback_db
@pytest.mark.parametrize("case", sorted(REFUSED_HEADERS))
async def test_every_admin_route_refuses_bad_credentials_with_one_401(admin_app, case) -> None:
    headers = REFUSED_HEADERS[case]
    answers = []
    for method, path in admin_operations(admin_app.app):
        response = await admin_app.client.request(method, path, headers=headers)
        answers.append((method, path, response.status_code, response.json(),
                        response.headers.get("www-authenticate")))
    assert len(answers) >= 3
    assert [a for a in answers if a[2:] != (
        401, {"detail": "admin authentication required"}, "Bearer")] == []


@pytest.mark.rollback_db
async def test_every_admin_route_answers_the_bearer_token(admin_app) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    statuses = {(method, path): (await admin_app.client.request(method, path, headers=headers))
                .status_code for method, path in admin_operations(admin_app.app)}
    assert statuses and set(statuses.values()) == {200}


@pytest.mark.rollback_db
async def test_plugin_route_under_the_admin_prefix_needs_the_token(admin_app) -> None:
    refused = await admin_app.get(PLUGIN_PATH)
    allowed = await admin_app.get(PLUGIN_PATH, headers={"Authorization": f"Bearer {TOKEN}"})
    assert refused.status_code == 401
    assert (allowed.status_code, allowed.json()) == (200, {"extra": "ok"})


@pytest.mark.parametrize("path", [
    f"{ADMIN_PREFIX}/plugins/",
    "/api/v1//admin/plugins",
    "/api/v1/%61dmin/plugins",
    "/api/v1/admin/%70lugins",
    "/API/V1/ADMIN/PLUGINS",
    "/api/v1/admin/./plugins",
    "/api/v1/x/../admin/plugins",
])
@pytest.mark.rollback_db
async def test_spellings_of_an_admin_path_never_answer_without_the_token(
    admin_app, path
) -> None:
    # Send the raw path: httpx would otherwise normalise dot segments before sending.
    request = admin_app.client.build_request("GET", path)
    request.url = request.url.copy_with(raw_path=path.encode())
    response = await admin_app.client.send(request)
    assert response.status_code in (307, 401, 404)
    assert "lifecycle" not in response.text and "behavior_registry" not in response.text


def test_admin_and_jobs_tokens_are_compared_with_hmac_compare_digest() -> None:
    tree = ast.parse(textwrap.dedent(inspect.getsource(security.require_bearer)))
    calls = [ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)]
    token_equality = [
        ast.unparse(node) for node in ast.walk(tree)
        if isinstance(node, ast.Compare)
        and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops)
        and {"expected", "credentials"} & {n.id for n in ast.walk(node)
                                           if isinstance(n, ast.Name)}
    ]
    assert "hmac.compare_digest" in calls
    assert token_equality == []


# --- public bodies -------------------------------------------------------------------------


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}").geturl()


def password_for(kit_services: Any) -> str:
    # The kit's PostgreSQL trusts any password; one it was given must be the one sent.
    return kit_services.postgres.password or f"s3cret-{uuid.uuid4().hex[:12]}"


def forbidden_words(kit_services: Any, tmp_path: Path, password: str) -> list[str]:
    words = ["postgresql", "asyncpg", "redis://", "Traceback", "/tmp", "/work",
             str(REPO_ROOT), str(tmp_path), kit_services.postgres.host,
             kit_services.redis.host, password, f":{password}@"]
    if kit_services.redis.password:
        words.append(kit_services.redis.password)
    return [w for w in words if w]


def forbidden_ports(kit_services: Any, proxies: Iterable[Any]) -> list[int]:
    return [kit_services.postgres.port, kit_services.redis.port, *(p.port for p in proxies)]


def leaks(text: str, words: list[str], ports: list[int]) -> list[str]:
    found = [word for word in words if word in text]
    found += [str(port) for port in ports if re.search(rf"(?<!\d){port}(?!\d)", text)]
    return found


def response_text(response: httpx.Response) -> str:
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    return f"{headers}\n{response.text}"


@pytest.mark.template_db
async def test_public_bodies_carry_no_hosts_ports_urls_paths_or_passwords(
    app_factory, make_settings, fault_proxy, kit_services, test_database, redis_namespace,
    tmp_path,
) -> None:
    password = password_for(kit_services)
    db_proxy = fault_proxy("postgres")
    database_url = db_proxy.rewrite_url(with_password(test_database.sqlalchemy_url, password))
    running = await started(app_factory, make_settings(
        database_url=database_url, ready_cache_ttl=0, ready_check_timeout=0.5,
        database_connect_timeout=1.0))
    client = running.client
    exchanges = [
        ("GET /", 200, await client.get("/")),
        ("GET /ready", 200, await client.get("/ready")),
        ("GET /health", 200, await client.get("/health")),
        ("GET unknown", 404, await client.get("/api/v1/no-such-thing")),
        ("DELETE /ready", 405, await client.delete("/ready")),
        ("POST /", 405, await client.post("/")),
        ("POST presets, bad fields", 422, await client.post(
            "/api/v1/presets", json={"name": "", "provider_id": 7, "extra": True})),
        ("POST presets, unknown provider", 422, await client.post(
            "/api/v1/presets", json={**PRESET, "provider_id": "nope"})),
        ("POST presets, not JSON", 422, await client.post(
            "/api/v1/presets", content=b"{not json", headers={"Content-Type": "application/json"})),
        ("POST jobs, bad kind", 422, await client.post(
            "/api/v1/jobs", json={"kind": "Not A Kind!", "payload": []})),
        ("POST jobs, no body", 422, await client.post("/api/v1/jobs")),
    ]
    db_proxy.cut()
    try:
        exchanges += [
            ("GET /ready, database cut", 503, await client.get("/ready")),
            ("GET /health, database cut", 200, await client.get("/health")),
            ("GET presets, database cut", 503, await client.get("/api/v1/presets")),
            ("POST presets, database cut", 503, await client.post("/api/v1/presets", json=PRESET)),
        ]
    finally:
        db_proxy.restore()
    words = forbidden_words(kit_services, tmp_path, password)
    ports = forbidden_ports(kit_services, [db_proxy])
    assert [(name, response.status_code) for name, _, response in exchanges] == [
        (name, status) for name, status, _ in exchanges]
    found = {name: leaks(response_text(response), words, ports)
             for name, _, response in exchanges}
    assert {name: words for name, words in found.items() if words} == {}


# --- logs --------------------------------------------------------------------------------------


async def test_logs_never_carry_a_password_from_a_url(
    app_factory, make_settings, fault_proxy, kit_services, test_database, redis_namespace,
    caplog,
) -> None:
    caplog.set_level(logging.DEBUG, logger="")
    db_password = password_for(kit_services)
    redis_password = f"r3dis-{uuid.uuid4().hex[:12]}"
    database_url = with_password(test_database.sqlalchemy_url, db_password)
    redis_url = with_password(redis_namespace.url, redis_password)
    # Whether Redis takes the password or refuses it (degraded), startup goes on.
    db_proxy = fault_proxy("postgres")
    running = await started(app_factory, make_settings(
        database_url=db_proxy.rewrite_url(database_url), redis_url=redis_url,
        ready_cache_ttl=0, ready_check_timeout=0.5, database_connect_timeout=1.0,
        redis_connect_timeout=0.5))
    statuses = [(await running.get(path)).status_code for path in ("/ready", "/api/v1/presets")]
    statuses.append((await running.client.post("/api/v1/jobs", json={"kind": "noop"})).status_code)
    db_proxy.cut()
    statuses += [(await running.get(path)).status_code for path in ("/ready", "/api/v1/presets")]
    await running.stop()
    # And a startup that fails: the database is unreachable from the first connection.
    failed = await app_factory(make_settings(
        database_url=db_proxy.rewrite_url(database_url), redis_url=redis_url,
        database_connect_timeout=1.0, redis_connect_timeout=0.5))
    db_proxy.restore()
    formatter = logging.Formatter()
    texts = [record.getMessage() + (formatter.formatException(record.exc_info)
                                    if record.exc_info else "")
             for record in caplog.records]
    assert statuses[:2] == [200, 200] and statuses[3:] == [503, 503]
    assert statuses[2] in (202, 503)  # 503 when Redis refused the password
    assert isinstance(failed.startup_error, StartupAborted)
    # The URL itself is logged (masked), and so are the outage and the failed startup.
    assert any(":***@" in text for text in texts)
    assert any(r.name == "pixsim7.errors" and r.levelno == logging.WARNING
               for r in caplog.records)
    assert any(r.name == "pixsim7.startup" and r.levelno >= logging.ERROR
               for r in caplog.records)
    assert [t for t in texts if db_password in t or redis_password in t] == []


# --- SECRET_KEY in production ------------------------------------------------------------------


async def test_check_command_refuses_the_default_secret_key_without_debug(
    test_database, redis_namespace, backend_env, tmp_path
) -> None:
    password = f"s3cret-{uuid.uuid4().hex[:12]}"
    env = {**backend_env, "DEBUG": "false",
           "DATABASE_URL": with_password(test_database.url, password),
           "REDIS_URL": redis_namespace.url}
    run = await asyncio.to_thread(run_backend, ["check"], env, tmp_path, 60)
    output = run.output
    assert run.returncode == 1, output
    assert "startup failed at step 'settings'" in output
    assert "SECRET_KEY" in run.stderr
    assert password not in output
