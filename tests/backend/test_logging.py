"""LOG_LEVEL and LOG_FORMAT: the real CLI writes one JSON object per line, with milestone and
request fields as keys and no password from a URL."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import uuid
from urllib.parse import urlsplit

import httpx
import pytest
from pixsim7_testing.processes import parse_log, run_backend

from pixsim7.backend.main.shared.logs import JsonFormatter

pytestmark = pytest.mark.integration


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    return parts._replace(
        netloc=f"{parts.username or ''}:{password}@{parts.hostname}:{parts.port}").geturl()


async def test_serve_writes_json_lines_with_milestones_requests_and_no_password(
    backend_services_env, backend_processes, kit_services
) -> None:
    # The kit's servers take any PostgreSQL password except their own, which must then be it.
    db_password = kit_services.postgres.password or f"pg-{uuid.uuid4().hex[:12]}"
    redis_password = f"r3dis-{uuid.uuid4().hex[:12]}"
    env = {**backend_services_env, "LOG_FORMAT": "json", "SHUTDOWN_DRAIN_SECONDS": "0",
           "DATABASE_URL": with_password(backend_services_env["DATABASE_URL"], db_password),
           "REDIS_URL": with_password(backend_services_env["REDIS_URL"], redis_password)}
    serve = backend_processes("serve", env)
    await asyncio.to_thread(serve.wait_ready, 60)  # Redis may refuse the password: degraded
    async with httpx.AsyncClient(base_url=serve.base_url) as client:
        assert (await client.get("/openapi.json")).status_code == 200
    assert serve.stop() == 0, serve.describe()

    output = serve.output()
    lines = [line for line in output.splitlines() if line.strip()]
    records = parse_log(output)
    assert len(records) == len(lines), output  # every line is one JSON log object
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
    milestones = [r for r in records if r["logger"] == "pixsim7.startup" and "step" in r]
    assert {(r["phase"], r["step"]) for r in milestones} >= {
        ("startup", "settings"), ("startup", "database"), ("shutdown", "database")}
    assert all(r["policy"] and r["status"] for r in milestones)
    assert len({r["app_id"] for r in milestones}) == 1
    requests = [r for r in records if r["logger"] == "pixsim7.requests"
                and r["path"] == "/openapi.json"]
    assert [(r["method"], r["status_code"]) for r in requests] == [("GET", 200)]
    assert isinstance(requests[0]["duration_ms"], float) and requests[0]["request_id"]
    assert any(":***@" in r["message"] for r in records), output  # the URLs, masked
    assert db_password not in output and redis_password not in output


def test_log_level_setting_filters_and_log_format_is_validated(backend_services_env,
                                                               tmp_path) -> None:
    env = {**backend_services_env, "LOG_LEVEL": "warning", "LOG_FORMAT": "json"}
    run = run_backend(["check"], env, tmp_path)
    assert run.returncode == 0, run.output
    levels = [r["level"] for r in parse_log(run.stderr)]
    assert "WARNING" in levels, run.stderr  # the generated admin token is announced
    assert "INFO" not in levels, run.stderr
    bad = run_backend(["check"], {**env, "LOG_FORMAT": "xml"}, tmp_path)
    assert bad.returncode != 0
    assert "LOG_FORMAT" in bad.stderr, bad.stderr
    # The command line's --log-level overrides the setting.
    run = run_backend(["--log-level", "info", "check"], env, tmp_path)
    assert "INFO" in [r["level"] for r in parse_log(run.stderr)], run.stderr


def test_json_formatter_keeps_standard_fields_and_adds_the_traceback() -> None:
    logger = logging.getLogger("pixsim7.test")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logger.makeRecord("pixsim7.test", logging.ERROR, __file__, 1, "failed %s",
                                   ("once",), sys.exc_info(),
                                   extra={"level": "fake", "milestone": {"step": "seed"}})
    data = json.loads(JsonFormatter().format(record))
    assert (data["level"], data["logger"], data["message"]) == ("ERROR", "pixsim7.test",
                                                                "failed once")
    assert data["step"] == "seed"
    assert "RuntimeError: boom" in data["exception"]


async def test_serve_logs_one_access_line_per_request_and_probes_only_when_they_fail(
    backend_services_env, backend_processes
) -> None:
    env = {**backend_services_env, "SHUTDOWN_DRAIN_SECONDS": "3"}
    serve = backend_processes("serve", env)
    await asyncio.to_thread(serve.wait_ready, 60)
    async with httpx.AsyncClient(base_url=serve.base_url) as client:
        for path in ("/", "/ready", "/health", "/openapi.json", "/no-such-page"):
            await client.get(path)
        serve.send()  # draining: /ready answers 503, a failing probe
        failing = await client.get("/ready")
    assert failing.status_code == 503
    assert serve.stop() == 0, serve.describe()

    records = serve.records()
    assert [r for r in records if r["logger"].startswith("uvicorn.access")] == []
    access = [(r["level"], r["path"], r["status_code"]) for r in records
              if r["logger"] == "pixsim7.requests"]
    assert access == [("INFO", "/openapi.json", 200), ("INFO", "/no-such-page", 404),
                      ("INFO", "/ready", 503)]


async def test_serve_at_debug_logs_the_probes_at_debug(backend_services_env,
                                                       backend_processes) -> None:
    serve = backend_processes("serve", {**backend_services_env, "LOG_LEVEL": "DEBUG",
                                        "SHUTDOWN_DRAIN_SECONDS": "0"})
    await asyncio.to_thread(serve.wait_ready, 60)
    async with httpx.AsyncClient(base_url=serve.base_url) as client:
        await client.get("/health")
    assert serve.stop() == 0, serve.describe()
    health = [r["level"] for r in serve.records()
              if r["logger"] == "pixsim7.requests" and r["path"] == "/health"]
    assert health == ["DEBUG"]


async def test_serve_in_production_without_admin_token_makes_none_and_says_to_set_it(
    backend_services_env, backend_processes
) -> None:
    env = {**backend_services_env, "DEBUG": "false", "SECRET_KEY": "s3cret-for-this-test",
           "SHUTDOWN_DRAIN_SECONDS": "0"}
    serve = backend_processes("serve", env)
    await asyncio.to_thread(serve.wait_ready, 60)
    async with httpx.AsyncClient(base_url=serve.base_url) as client:
        responses = [await client.get(path, headers={"Authorization": "Bearer guess"})
                     for path in ("/api/v1/admin/plugins", "/api/v1/admin/startup")]
    assert serve.stop() == 0, serve.describe()
    assert [r.status_code for r in responses] == [503, 503]
    assert all("set ADMIN_TOKEN" in r.json()["detail"] for r in responses)
    assert "admin token is" not in serve.output()
    assert any(
        "ADMIN_TOKEN is not set, so the admin API is off" in r["message"]
        for r in serve.records())


def test_redaction_replaces_credentials_and_leaves_ordinary_words_alone() -> None:
    from pixsim7.backend.main.shared.logs import Redactor

    redactor = Redactor(["s3cret-value-123", "short"])
    assert redactor.redact("the admin token comparison; key rotation; basic settings") == (
        "the admin token comparison; key rotation; basic settings")
    assert redactor.redact("GET /x?a=1&access_token=abc&password=p Bearer abc.def-123 "
                           "s3cret-value-123 short") == (
        "GET /x?a=1&access_token=***&password=*** Bearer *** *** short")


@pytest.mark.parametrize(("line", "redacted"), [
    ("?admin_token=q8Zr%2B3&client_secret=a1&refresh_token=b2&db_password=c3&page=2",
     "?admin_token=***&client_secret=***&refresh_token=***&db_password=***&page=2"),
    ('{"password": "hunter22", "name": "ok"}', '{"password": "***", "name": "ok"}'),
    ("{'api_key': 'sk-12345', 'x': 1}", "{'api_key': '***', 'x': 1}"),
    ("Authorization: Token abcdef123456", "Authorization: Token ***"),
    ("X-Api-Key: zzz12345", "X-Api-Key: ***"),
    ("got q8Zr%2B3%2Fadm1n%3Dtok here", "got *** here"),  # the app's token, percent-encoded
    ("got cThaciszL2FkbTFuPXRvaw== here", "got *** here"),  # ... and base64-encoded
    ("redis_key_prefix=pixsim7: keep_alive_timeout=5", "redis_key_prefix=pixsim7: "
                                                       "keep_alive_timeout=5"),
])
def test_redaction_covers_every_form_a_credential_takes(line: str, redacted: str) -> None:
    from pixsim7.backend.main.shared.logs import Redactor

    assert Redactor(["q8Zr+3/adm1n=tok"]).redact(line) == redacted


def test_a_traceback_is_redacted_in_both_formats() -> None:
    from pixsim7.backend.main.shared.logs import JsonFormatter, Redactor, TextFormatter

    try:
        raise RuntimeError("failed with s3cret-value-123 and password=hunter22")
    except RuntimeError:
        record = logging.getLogger("t").makeRecord("t", logging.ERROR, "f", 1, "boom", (),
                                                   sys.exc_info())
    Redactor(["s3cret-value-123"]).filter(record)
    for formatter in (TextFormatter(), JsonFormatter()):
        text = formatter.format(record)
        assert "Traceback" in text and "s3cret-value-123" not in text
        assert "hunter22" not in text and "password=***" in text


async def test_plain_uvicorn_logs_as_log_level_and_log_format_say(
    backend_services_env, backend_processes
) -> None:
    # `uvicorn pixsim7.backend.main.main:app`, no logging option given to uvicorn.
    env = {**backend_services_env, "LOG_FORMAT": "json", "LOG_LEVEL": "info"}
    server = backend_processes("uvicorn", env)
    await asyncio.to_thread(server.wait_ready, 60)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        assert (await client.get("/openapi.json")).status_code == 200
    server.stop()

    output = server.output()
    lines = [line for line in output.splitlines() if line.strip()]
    records = parse_log(output)
    assert len(records) == len(lines), output  # uvicorn's own lines are JSON too
    loggers = {r["logger"] for r in records}
    assert {"pixsim7.startup", "pixsim7.requests", "uvicorn.error"} <= loggers, loggers
    assert "uvicorn.access" not in loggers  # one access line per request: the app's own
    milestones = {(r["phase"], r["step"]) for r in records if r["logger"] == "pixsim7.startup"
                  and "step" in r}
    assert {("startup", "settings"), ("startup", "complete"), ("shutdown", "database")} <= (
        milestones)
    assert [r["status_code"] for r in records if r["logger"] == "pixsim7.requests"
            and r["path"] == "/openapi.json"] == [200]


async def test_plain_uvicorn_honours_log_level_in_text(backend_services_env,
                                                       backend_processes) -> None:
    env = {**backend_services_env, "LOG_FORMAT": "text", "LOG_LEVEL": "warning"}
    server = backend_processes("uvicorn", env)
    await asyncio.to_thread(server.wait_ready, 60)
    server.stop()
    output = server.output()
    # At WARNING neither the milestones nor uvicorn's startup lines (INFO) are written.
    assert "pixsim7.startup" not in output and "Application startup complete" not in output, (
        output)
    assert not any(line.startswith("{") for line in output.splitlines())
    # What is at WARNING is written, in the text format (no ADMIN_TOKEN in debug warns).
    assert " WARNING pixsim7.admin: ADMIN_TOKEN is not set" in output, output
