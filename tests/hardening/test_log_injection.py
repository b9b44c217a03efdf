"""What a client sends never forges a log line or carries a credential into the log, under
the real `pixsim7-backend serve` in production mode (DEBUG=false), in both log formats."""

from __future__ import annotations

import re
import socket

import httpx
import pytest
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
