"""The startup page in a real browser: headless Chromium (Debian's `chromium`), network off,
renders what `check --html` wrote; the test reads the DOM the browser built and looks at its
screenshot. `PIXSIM7_UPDATE_SCREENSHOT=1` also writes the screenshot GETTING_STARTED shows
(docs/startup-page.png)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from pixsim7_testing.processes import run_backend

from tests.backend.test_startup_page import read_page

pytestmark = pytest.mark.integration

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "startup-page.png"
DEGRADED_AMBER = (0xEF, 0x8F, 0x00)  # startup.page.STATUS_COLOURS["degraded"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("Chromium is not installed: `apt-get install chromium` (Debian's package; "
                    ".ci/run installs it)")
    return found


def browse(page: Path, profile: Path, *what: str) -> subprocess.CompletedProcess[str]:
    """Chromium, headless, offline: every host resolves to nothing and every request goes to
    a proxy nobody runs, so a page that tried to load anything would show it."""
    sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses root otherwise
    return subprocess.run(
        [chromium(), "--headless", *sandbox, "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={profile}", "--proxy-server=http://127.0.0.1:9",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1280,1100", *what,
         page.as_uri()], capture_output=True, text=True, timeout=60, check=True)


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit PNG, as the PNG standard decodes it."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks, position = {}, 8
    idat = b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        if kind == b"IDAT":
            idat += body
        chunks.setdefault(kind, body)
        position += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    step = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * step
    rows, previous = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for x in range(stride):
            left = line[x - step] if x >= step else 0
            up, corner = previous[x], previous[x - step] if x >= step else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                guess = left + up - corner
                near = min((abs(guess - left), 0, left), (abs(guess - up), 1, up),
                           (abs(guess - corner), 2, corner))[2]
                line[x] = (line[x] + near) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, step, rows


def test_headless_chromium_offline_renders_the_page_and_a_degraded_step_stands_out(
    backend_services_env, tmp_path
) -> None:
    page = tmp_path / "startup.html"
    # Redis nobody answers: the `redis` step (degrading) is degraded, the rest ok.
    env = {**backend_services_env, "REDIS_URL": "redis://127.0.0.1:9/0"}
    run = run_backend(["check", "--html", str(page)], env, tmp_path)
    assert run.returncode == 0, run.output

    dom = browse(page, tmp_path / "profile-dom", "--dump-dom").stdout
    steps = read_page(dom).steps
    assert ("startup", "redis", "degraded") in steps
    assert ("startup", "database", "ok") in steps and ("build", "middleware", "ok") in steps
    assert [s for s in steps if s[2] not in ("ok", "skipped")] == [
        ("startup", "redis", "degraded"), ("startup", "complete", "degraded")]
    assert "startup <b>redis</b>: degraded" in dom

    shot = tmp_path / "startup.png"
    browse(page, tmp_path / "profile-shot", f"--screenshot={shot}")
    width, step, rows = png_pixels(shot.read_bytes())
    assert width == 1280 and len(rows) == 1100
    amber = sum(1 for row in rows for x in range(0, len(row), step)
                if tuple(row[x:x + 3]) == DEGRADED_AMBER)
    assert amber > 500, f"{amber} amber pixels: the degraded bars did not render"
    if os.environ.get("PIXSIM7_UPDATE_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
