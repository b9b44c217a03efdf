"""The events WebSocket under the real `pixsim7-backend serve`: it works, and it has limits.

A real client (the `websockets` library) and raw frames over a socket; the served process's
log must show no ERROR or traceback for anything a client sends.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from .conftest import ADMIN_TOKEN, client_input_failures, rss_mib

pytestmark = pytest.mark.integration

EVENTS_PATH = "/api/v1/ws/events"
EVENTS_TOKEN = "events-listener-token"
AUTH = {"Authorization": f"Bearer {EVENTS_TOKEN}"}
PRESET = {"provider_id": "pixverse", "operation": "text_to_video"}


def events_url(serve) -> str:
    return f"ws://127.0.0.1:{serve.port}{EVENTS_PATH}"


def create_preset(serve, name: str) -> None:
    created = httpx.post(f"{serve.base_url}/api/v1/presets", json={"name": name, **PRESET})
    assert created.status_code == 201, created.text


def next_event(ws: ClientConnection) -> dict:
    import json

    return json.loads(ws.recv(timeout=10))


def refused_status(serve, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as refused, connect(events_url(serve), **kwargs):
        pass
    return refused.value.response.status_code


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One client frame (clients must mask), with a short payload."""
    assert len(payload) < 126
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


def test_the_handshake_is_upgraded_by_the_served_app(served_api) -> None:
    serve = served_api(EVENTS_TOKEN=EVENTS_TOKEN)
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", serve.port), timeout=5) as sock:
        sock.sendall((f"GET {EVENTS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                      f"Authorization: Bearer {EVENTS_TOKEN}\r\n\r\n").encode())
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    assert "No supported WebSocket library" not in serve.output()


def test_a_listener_with_the_token_receives_events(served_api) -> None:
    serve = served_api(EVENTS_TOKEN=EVENTS_TOKEN)
    with connect(events_url(serve), additional_headers=AUTH) as ws:
        create_preset(serve, "heard")
        event = next_event(ws)
    assert event["type"] == "preset.created"
    assert event["payload"]["name"] == "heard"
    # A browser cannot set headers: it offers the token as a subprotocol instead.
    with connect(events_url(serve), origin="http://localhost:5173",
                 subprotocols=["pixsim7.events", f"bearer.{EVENTS_TOKEN}"]) as ws:
        assert ws.subprotocol == "pixsim7.events"
        create_preset(serve, "heard-by-browser")
        assert next_event(ws)["payload"]["name"] == "heard-by-browser"
    assert EVENTS_TOKEN not in serve.output()


def test_anonymous_wrong_token_and_foreign_origin_listeners_are_refused(served_api) -> None:
    serve = served_api(EVENTS_TOKEN=EVENTS_TOKEN)
    assert refused_status(serve) == 403
    assert refused_status(serve, additional_headers={"Authorization": "Bearer nope"}) == 403
    assert refused_status(serve, additional_headers=AUTH, origin="http://evil.example") == 403
    assert refused_status(serve, subprotocols=["pixsim7.events", "bearer.nope"]) == 403
    assert client_input_failures(serve) == [], serve.describe()


def test_without_events_token_the_admin_token_lets_a_client_listen(served_api) -> None:
    serve = served_api()
    with connect(events_url(serve),
                 additional_headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as ws:
        create_preset(serve, "admin-heard")
        assert next_event(ws)["payload"]["name"] == "admin-heard"
    assert refused_status(serve) == 403


def test_a_client_message_over_the_limit_closes_1009_and_the_socket_still_serves(
    served_api,
) -> None:
    serve = served_api(EVENTS_TOKEN=EVENTS_TOKEN, WS_MAX_MESSAGE_BYTES="1024")
    with connect(events_url(serve), additional_headers=AUTH) as ws:
        ws.send("x" * 512)  # under the limit: ignored, the socket stays open
        ws.send("x" * 4096)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    # 25 clients sending 10 MB each are cut off at the limit: nothing piles up in the server.
    before = rss_mib(serve.proc.pid)
    for _ in range(25):
        with connect(events_url(serve), additional_headers=AUTH) as ws, \
                contextlib.suppress(ConnectionClosed):
            ws.send("x" * 10 * 1024 * 1024)
            ws.recv(timeout=10)
    assert rss_mib(serve.proc.pid) - before < 40
    with connect(events_url(serve), additional_headers=AUTH) as ws:
        create_preset(serve, "after-1009")
        assert next_event(ws)["payload"]["name"] == "after-1009"
    assert client_input_failures(serve) == [], serve.describe()


def test_an_invalid_utf8_text_frame_closes_1007_without_a_traceback(served_api) -> None:
    serve = served_api(EVENTS_TOKEN=EVENTS_TOKEN)
    with connect(events_url(serve), additional_headers=AUTH) as ws:
        ws.socket.sendall(masked_frame(0x1, b"\xff\xfe not utf-8"))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
    assert client_input_failures(serve) == [], serve.describe()


def test_listeners_beyond_their_bound_are_closed_1013_while_http_keeps_answering(
    served_api
) -> None:
    # Half of MAX_CONNECTIONS at most: 10 here, below WS_MAX_CONNECTIONS' 100.
    serve = served_api(EVENTS_TOKEN=EVENTS_TOKEN, MAX_CONNECTIONS="20")
    with contextlib.ExitStack() as listeners:
        for _ in range(10):
            listeners.enter_context(connect(events_url(serve), additional_headers=AUTH))
        with (connect(events_url(serve), additional_headers=AUTH) as extra,
              pytest.raises(ConnectionClosed) as closed):
            extra.recv(timeout=10)
        assert closed.value.rcvd.code == 1013
        assert "WS_MAX_CONNECTIONS" in closed.value.rcvd.reason
        assert httpx.get(f"{serve.base_url}/").status_code == 200
        admin = httpx.get(f"{serve.base_url}/api/v1/admin/plugins",
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert admin.status_code == 200
        create_preset(serve, "heard-by-ten")
    # The places come back once listeners leave.
    with connect(events_url(serve), additional_headers=AUTH) as again:
        create_preset(serve, "heard-again")
        assert next_event(again)["payload"]["name"] == "heard-again"
    assert client_input_failures(serve) == [], serve.describe()
