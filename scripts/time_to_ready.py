"""Time from process start to `/ready` = 200 for `pixsim7-backend serve` on the embedded default.

Runs the command in a fresh data folder (first start: initdb included) and again on the same
folder (warm start), with no DATABASE_URL / REDIS_URL, and stops it with SIGTERM. The baseline,
measured in the same run, is `pixsim7-backend check --help`: interpreter start plus imports.

    .venv/bin/python scripts/time_to_ready.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "pixsim7-backend"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def baseline() -> float:
    started = time.monotonic()
    subprocess.run([str(BIN), "check", "--help"], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def one_run(data_dir: Path) -> tuple[float, float, int, float]:
    """(seconds to `/` 200, seconds to `/ready` 200, exit code, seconds to exit after SIGTERM)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["PIXSIM7_DATA_DIR"] = str(data_dir)
    started = time.monotonic()
    proc = subprocess.Popen([str(BIN), "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    alive = ready = None
    try:
        while time.monotonic() - started < 60 and ready is None:
            try:
                if alive is None and get(f"http://127.0.0.1:{port}/")[0] == 200:
                    alive = time.monotonic() - started
                status, body = get(f"http://127.0.0.1:{port}/ready")
                if status == 200 and body.get("status") == "ready":
                    ready = time.monotonic() - started
            except OSError:
                time.sleep(0.02)
    finally:
        stop_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        stop = time.monotonic() - stop_at
    if ready is None:
        raise SystemExit("the server never reported ready within 60 s")
    return alive or ready, ready, code, stop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    base = statistics.median(baseline() for _ in range(args.runs))
    print(f"baseline (process start + imports): {base:.2f} s")
    for label, fresh in (("first start (initdb)", True), ("warm start", False)):
        results = []
        data_dir = Path(tempfile.mkdtemp(prefix="pixsim7-ready-"))
        if not fresh:
            one_run(data_dir)
        for _ in range(args.runs):
            if fresh:
                shutil.rmtree(data_dir / "postgres", ignore_errors=True)
                shutil.rmtree(data_dir / "redis", ignore_errors=True)
            results.append(one_run(data_dir))
        shutil.rmtree(data_dir, ignore_errors=True)
        alive = statistics.median(r[0] for r in results)
        ready = statistics.median(r[1] for r in results)
        print(f"{label}: /ready 200 after {ready:.2f} s (median of {args.runs}), "
              f"/ 200 after {alive:.2f} s; ratio to baseline {ready / base:.1f}x; "
              f"exit codes {[r[2] for r in results]}, "
              f"stop {statistics.median(r[3] for r in results):.2f} s")


if __name__ == "__main__":
    main()
