"""What a client sends never forges a log line or carries a credential into the log, under
the real `pixsim7-backend serve` in production mode (DEBUG=false), in both log formats."""

from __future__ import annotations

import base64
import re
import socket
from urllib.parse import quote, quote_plus

import httpx
import pytest
from pixsim7_testing.plugins import bundled_with_plugin
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from .conftest import ADMIN_TOKEN, PRODUCTION

pytestmark = pytest.mark.integration

FORGED = "2026-12-01 00:00:00,000 ERROR   pixsim7.fake: FORGED"


def raw_get(port: int, target: str) -> bytes:
    """One GET with `target` sent as it is (no client-side quoting)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return sock.recv(65536)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_control_characters_a_client_sends_cannot_start_a_log_line(
    served_api, log_format
) -> None:
    serve = served_api(**PRODUCTION, LOG_FORMAT=log_format)
    target = "/x%0D%0A2026-12-01%2000:00:00,000%20ERROR%20%20%20pixsim7.fake:%20FORGED%1B[31mred"
    assert raw_get(serve.port, target).startswith(b"HTTP/1.1 404")
    assert httpx.get(f"{serve.base_url}/ready").status_code == 200  # a line after it
    output = serve.output()
    lines = output.splitlines()
    assert not [line for line in lines if line.startswith(FORGED[:23])], output[-2000:]
    assert "\x1b" not in output and "\r" not in output
    # The request is still logged, on one line, with what was sent visible.
    logged = [line for line in lines if "FORGED" in line]
    assert len(logged) == 1, logged
    if log_format == "text":
        assert "/x\\r\\n2026-12-01" in logged[0] and "\\x1b[31m" in logged[0]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_credential_a_client_sends_reaches_the_log(served_api, log_format) -> None:
    serve = served_api(**PRODUCTION, LOG_FORMAT=log_format, LOG_LEVEL="DEBUG")
    base = serve.base_url
    # The WebSocket takes its token only as a header: one in the query string is refused,
    # and uvicorn logs the refused URL.
    url = f"ws://127.0.0.1:{serve.port}/api/v1/ws/events?token={ADMIN_TOKEN}"
    with pytest.raises(InvalidStatus), connect(url):
        pass
    httpx.get(f"{base}/api/v1/admin/plugins?token={ADMIN_TOKEN}&password=hunter2-hunter2")
    httpx.get(f"{base}/api/v1/admin/plugins", headers={"X-Api-Key": ADMIN_TOKEN,
                                                       "Authorization": f"Bearer {ADMIN_TOKEN}"})
    httpx.post(f"{base}/api/v1/presets", json={"name": ADMIN_TOKEN, "provider_id": "nope",
                                                 "operation": f"token={ADMIN_TOKEN}"})
    httpx.post(f"{base}/api/v1/jobs", content=f'{{"kind": "{ADMIN_TOKEN}"'.encode(),
               headers={"Content-Type": "application/json", "Cookie": f"s={ADMIN_TOKEN}"})
    output = serve.output()
    assert "WebSocket" in output  # uvicorn did log the refused handshake...
    assert ADMIN_TOKEN not in output, [line for line in output.splitlines()
                                       if ADMIN_TOKEN in line]  # ...without the token
    assert "hunter2-hunter2" not in output
    assert re.search(r"token=\*\*\*", output), output[-3000:]


# A plugin whose route fails with what it was given in the exception: the database quoting a
# value in its error, a body with credential keys, the request's headers.
LEAKY_PLUGIN = """
from fastapi import APIRouter, Request
from sqlalchemy import text

router = APIRouter()


@router.get("/cast")
async def cast(request: Request, value: str) -> None:
    async with request.app.state.db.autocommit() as conn:
        await conn.execute(text("SELECT CAST(:value AS integer)"), {"value": value})


@router.post("/echo")
async def echo(request: Request) -> None:
    body = await request.body()
    raise RuntimeError(f"cannot use {body.decode()} with {dict(request.headers)}")
"""
# Secrets of the app's own, with characters that percent-encoding and base64 change.
APP_TOKEN = "q8Zr+3/adm1n=tok"
JOBS_TOKEN = "jobs/t0ken+abc=="


@pytest.mark.template_db
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_credential_reaches_the_log_in_any_form_tracebacks_included(
    served_api, log_format, tmp_path
) -> None:
    plugins = bundled_with_plugin(tmp_path / "plugins", "plugins", "leaky", LEAKY_PLUGIN)
    serve = served_api(**PRODUCTION, LOG_FORMAT=log_format, ADMIN_TOKEN=APP_TOKEN,
                       JOBS_TOKEN=JOBS_TOKEN, FEATURE_PLUGINS_DIR=str(plugins))
    base = f"{serve.base_url}/api/v1/plugins/leaky"
    client_secrets = ["body-pass-1234", "client-sec-5678", "api-key-9012", "token-hdr-3456",
                      "refresh-7890", "db-pass-2468"]
    # The database quotes the app's token in its error; a 500 logs the traceback.
    assert httpx.get(f"{base}/cast", params={"value": APP_TOKEN}).status_code == 500
    assert httpx.post(f"{base}/echo", json={"password": "body-pass-1234",
                                            "client_secret": "client-sec-5678"},
                      headers={"X-Api-Key": "api-key-9012",
                               "Authorization": "Token token-hdr-3456"}).status_code == 500
    # Query strings uvicorn logs (a refused WebSocket), the app's token percent-encoded.
    query = (f"admin_token={quote(APP_TOKEN, safe='')}&refresh_token=refresh-7890"
             f"&db_password=db-pass-2468")
    with pytest.raises(InvalidStatus), connect(
            f"ws://127.0.0.1:{serve.port}/api/v1/ws/events?{query}"):
        pass
    # Paths the request log repeats, holding the tokens encoded.
    for encoded in (quote(APP_TOKEN, safe=""), base64.b64encode(APP_TOKEN.encode()).decode(),
                    quote(JOBS_TOKEN, safe=""), base64.urlsafe_b64encode(
                        JOBS_TOKEN.encode()).decode()):
        raw_get(serve.port, f"/nothing/{encoded}")
    output = serve.output()
    assert "Traceback" in output and "CAST" in output  # the tracebacks were logged...
    forms = {form for secret in (APP_TOKEN, JOBS_TOKEN) for form in (
        secret, quote(secret, safe=""), quote_plus(secret),
        base64.b64encode(secret.encode()).decode(),
        base64.urlsafe_b64encode(secret.encode()).decode())}
    leaked = [(form, line[:300]) for line in output.splitlines()
              for form in [*forms, *client_secrets] if form in line]
    assert leaked == []  # ...without any credential, in any form
    assert output.count("***") >= 8, output[-3000:]
