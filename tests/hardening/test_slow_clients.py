"""Slow and idle clients are cut off: a request head, and then its body, must arrive within
REQUEST_READ_TIMEOUT, and an idle keep-alive connection lasts KEEP_ALIVE_TIMEOUT.

Raw sockets against the real `pixsim7-backend serve`, the way slowloris works.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time

import httpx
import pytest

from .conftest import client_input_failures

pytestmark = pytest.mark.integration

READ_TIMEOUT = 2.0
SLOW_CLIENTS = 300


def closed_by_server(sock: socket.socket, within_s: float) -> tuple[bool, bytes]:
    """Whether the server closed `sock` within `within_s` seconds, and what it sent first."""
    received = b""
    end = time.monotonic() + within_s
    while (left := end - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            break
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            return True, received
        if not data:
            return True, received
        received += data
    return False, received


def test_half_request_lines_are_dropped_after_the_read_timeout(served_api) -> None:
    serve = served_api(REQUEST_READ_TIMEOUT=str(READ_TIMEOUT))
    with contextlib.ExitStack() as stack:
        slow = []
        for _ in range(SLOW_CLIENTS):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", serve.port)))
            sock.sendall(b"GET /ready HT")
            slow.append(sock)
        # While they hang on, everyone else is still served.
        assert httpx.get(f"{serve.base_url}/ready", timeout=5).status_code == 200
        deadline = time.monotonic() + READ_TIMEOUT + 3
        still_open = [sock for sock in slow if not closed_by_server(
            sock, max(0.1, deadline - time.monotonic()))[0]]
    assert still_open == [], f"{len(still_open)} of {SLOW_CLIENTS} slow clients still connected"
    assert client_input_failures(serve) == [], serve.describe()


def test_a_trickled_head_and_a_silent_connection_are_dropped(served_api) -> None:
    serve = served_api(REQUEST_READ_TIMEOUT=str(READ_TIMEOUT))
    with socket.create_connection(("127.0.0.1", serve.port)) as silent, \
            socket.create_connection(("127.0.0.1", serve.port)) as trickle:
        began = time.monotonic()
        head = b"GET /ready HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 100
        cut = False
        for byte in head:
            try:
                trickle.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            if closed_by_server(trickle, 0.1)[0]:
                cut = True
                break
        trickle_s = time.monotonic() - began
        assert cut, "a client trickling its head one byte at a time was never cut off"
        assert trickle_s < READ_TIMEOUT + 1.5, trickle_s
        assert closed_by_server(silent, 1.0)[0], "a silent connection outlived the read timeout"


def test_a_stalled_body_gets_408(served_api) -> None:
    serve = served_api(REQUEST_READ_TIMEOUT=str(READ_TIMEOUT))
    with socket.create_connection(("127.0.0.1", serve.port)) as sock:
        sock.sendall(b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 100\r\n\r\n{\"kind\": ")
        began = time.monotonic()
        closed, answer = closed_by_server(sock, READ_TIMEOUT + 3)
    assert closed and answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - began < READ_TIMEOUT + 1.5
    assert client_input_failures(serve) == [], serve.describe()


def test_an_idle_keep_alive_connection_is_closed(served_api) -> None:
    serve = served_api(KEEP_ALIVE_TIMEOUT="1")
    with socket.create_connection(("127.0.0.1", serve.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        closed, answer = closed_by_server(sock, 4)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert closed
