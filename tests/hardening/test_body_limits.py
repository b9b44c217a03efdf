"""MAX_BODY_BYTES: larger bodies get 413 before they are read whole, however they are sent.

Sent over raw sockets to the real `pixsim7-backend serve`, the way a hostile client would:
an honest Content-Length, chunked encoding with no length at all, and a lying length.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from pixsim7_testing.polling import wait_until

from pixsim7.backend.main.api.observing import CLIENT_CLOSED_REQUEST

from .conftest import client_input_failures, rss_mib

pytestmark = pytest.mark.integration

LIMIT = 64 * 1024
HUGE = 50 * 1024 * 1024
CHUNK = 64 * 1024
ROUTES = ["/api/v1/presets", "/api/v1/jobs", "/api/v1/admin/plugins", "/ready", "/nowhere"]


def request_head(path: str, port: int, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
             "Content-Type: application/json", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


def send_streaming(port: int, head: bytes, chunked: bool, total: int = HUGE,
                   deadline_s: float = 20.0) -> tuple[bytes, int]:
    """Send `head`, then up to `total` body bytes until the server answers.

    Returns (the answer so far, how many body bytes were sent before it came).
    """
    piece = b"x" * CHUNK
    frame = f"{CHUNK:x}\r\n".encode() + piece + b"\r\n" if chunked else piece
    sent, answer = 0, b""
    end = time.monotonic() + deadline_s
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        while time.monotonic() < end:
            readable, writable, _ = select.select([sock], [sock] if sent < total else [], [],
                                                  0.5)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                answer += data
                if b"\r\n\r\n" in answer:
                    break
            elif writable:
                try:
                    sent += sock.send(frame)
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    continue
    return answer, sent


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (5 s at most per read)."""
    answer = b""
    while data := sock.recv(65536):
        answer += data
    return answer


def test_an_announced_huge_body_gets_413_on_every_route_without_being_read(served_api) -> None:
    serve = served_api(MAX_BODY_BYTES=str(LIMIT))
    for path in ROUTES:
        # Only the head is sent: the answer must come before any of the 50 MB.
        with socket.create_connection(("127.0.0.1", serve.port), timeout=5) as sock:
            sock.sendall(request_head(path, serve.port, f"Content-Length: {HUGE}"))
            answer = read_until_closed(sock)
        assert status_of(answer) == 413, (path, answer)
        assert b"MAX_BODY_BYTES" in answer
    assert client_input_failures(serve) == [], serve.describe()


def test_a_chunked_body_is_cut_off_at_the_limit(served_api) -> None:
    serve = served_api(MAX_BODY_BYTES=str(LIMIT))
    for path in ["/api/v1/presets", "/api/v1/jobs"]:
        answer, sent = send_streaming(
            serve.port, request_head(path, serve.port, "Transfer-Encoding: chunked"),
            chunked=True)
        assert status_of(answer) == 413, (path, answer[:300])
        # Socket buffers hold a few MB at most; the rest of the 50 MB was never sent.
        assert sent < HUGE // 4, (path, sent)
    assert httpx.get(f"{serve.base_url}/api/v1/jobs/status").json()["queued"] == 0
    assert client_input_failures(serve) == [], serve.describe()


def test_concurrent_huge_uploads_do_not_grow_the_process(served_api) -> None:
    serve = served_api()  # the default limit, 1 MiB
    before = rss_mib(serve.proc.pid)
    head = request_head("/api/v1/presets", serve.port, "Transfer-Encoding: chunked")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: send_streaming(serve.port, head, chunked=True),
                                range(4)))
    after = rss_mib(serve.proc.pid)
    assert [status_of(answer) for answer, _ in results] == [413] * 4
    assert after - before < 40, (before, after)
    assert client_input_failures(serve) == [], serve.describe()


def test_a_lying_content_length_stores_nothing_and_breaks_nothing(served_api) -> None:
    serve = served_api(MAX_BODY_BYTES=str(LIMIT))
    body = b'{"kind": "render", "payload": {"blob": "' + b"y" * (2 * LIMIT) + b'"}}'
    # Claims 20 bytes, sends far more: the rest is garbage where the next request should be.
    with socket.create_connection(("127.0.0.1", serve.port), timeout=5) as sock:
        sock.sendall(request_head("/api/v1/jobs", serve.port, "Content-Length: 20"))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(body)
        answer = sock.recv(65536)
    assert 400 <= status_of(answer) < 500, answer[:300]
    # Claims both a length and chunked encoding: refused outright.
    with socket.create_connection(("127.0.0.1", serve.port), timeout=5) as sock:
        sock.sendall(request_head("/api/v1/jobs", serve.port, "Content-Length: 20",
                                  "Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n\r\n")
        answer = sock.recv(65536)
    assert 400 <= status_of(answer) < 500, answer[:300]
    assert httpx.get(f"{serve.base_url}/api/v1/jobs/status").json()["queued"] == 0
    assert client_input_failures(serve) == [], serve.describe()


def test_a_client_that_leaves_mid_upload_is_counted_as_gone_not_as_a_server_error(
    served_api
) -> None:
    serve = served_api(LOG_FORMAT="json")
    body = b'{"name": "half", "provider_id": "pixverse", "operation": "text_to_video"}'
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", serve.port), timeout=5) as sock:
            sock.sendall(request_head("/api/v1/presets", serve.port,
                                      f"Content-Length: {len(body) * 4}") + body)
    # The server notices each close; then the access lines and the counter say what happened.
    wait_until(lambda: len([r for r in serve.records() if r.get("path") == "/api/v1/presets"])
               >= 5, timeout=10, message=serve.describe)
    access = [r for r in serve.records() if r.get("path") == "/api/v1/presets"]
    assert {r["status_code"] for r in access} == {CLIENT_CLOSED_REQUEST}, access
    assert all(r["level"] == "INFO" for r in access), access
    metrics = httpx.get(f"{serve.base_url}/metrics").text
    # The body was still being read, before routing: no route matched yet.
    assert (f'pixsim7_http_requests_total{{method="POST",route="unmatched",'
            f'status="{CLIENT_CLOSED_REQUEST}"}} 5.0') in metrics, metrics
    assert 'status="500"' not in metrics
    assert client_input_failures(serve) == [], serve.describe()


def test_a_client_that_sends_its_whole_body_before_reading_gets_the_413(served_api) -> None:
    # Python's urllib sends all of a body, then reads: closed at once with its data unread,
    # the server's socket would answer with a reset, and the client would see that instead.
    serve = served_api()  # the default limit, 1 MiB
    body = b"x" * (20 * 1024 * 1024)
    answers = []
    for _ in range(5):
        request = urllib.request.Request(f"{serve.base_url}/api/v1/presets", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=20)
        except urllib.error.HTTPError as exc:
            answers.append((exc.code, json.loads(exc.read())["detail"]))
    assert [code for code, _ in answers] == [413] * 5, answers
    assert "MAX_BODY_BYTES" in answers[0][1]
    # The connections were closed after their lingering: the server still answers at once.
    assert httpx.get(f"{serve.base_url}/ready").status_code == 200
    assert client_input_failures(serve) == [], serve.describe()
