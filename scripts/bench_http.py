"""Requests per second of the real `pixsim7-backend serve` against a bare FastAPI app, with wrk.

Both run on the same uvicorn settings (`serving.server_config`); the bare app answers `/` with
the same JSON. Each is loaded at 50 connections; the lines printed are `/` against the bare
app, `/ready` against `/`, and the database transactions per readiness cache window during the
`/ready` storm. Needs wrk (Debian: `apt-get install wrk`) and a PostgreSQL where it may create
and drop a database of its own (default: the local server, user postgres).

    .venv/bin/python scripts/bench_http.py [--duration 10] [--admin-url postgresql://...]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin" / "pixsim7-backend"
BARE_APP = """
import sys, uvicorn
from fastapi import FastAPI
from pixsim7.backend.main.serving import server_config
from pixsim7.backend.main.shared.config import Settings

settings = Settings()
app = FastAPI()
app.state.settings = settings
body = {"name": settings.app_name, "version": settings.app_version, "status": "running"}

@app.get("/")
async def root():
    return body

uvicorn.Server(server_config(app, "127.0.0.1", int(sys.argv[1]))).run()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer 200 within {timeout:g}s")


def wrk(url: str, duration: int, connections: int) -> float:
    """Requests per second that wrk measured (non-2xx answers make the run fail)."""
    run = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", url],
                         capture_output=True, text=True, check=True)
    if "Non-2xx" in run.stdout:
        raise SystemExit(f"{url} answered errors under load:\n{run.stdout}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", run.stdout).group(1))


def database_checks(base_url: str) -> float:
    """`pixsim7_check_runs_total{check="database"}` from /metrics."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(r'^pixsim7_check_runs_total\{check="database"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(argv, env=env, cwd=log.parent, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (Debian/Ubuntu)")

    workdir = Path(tempfile.mkdtemp(prefix="pixsim7-bench-http-"))
    procs: list[subprocess.Popen] = []
    try:
        env = {key: value for key, value in os.environ.items()
               if key not in ("DATABASE_URL", "REDIS_URL")}
        env.update(PIXSIM7_DATA_DIR=str(workdir / "data"), SHUTDOWN_DRAIN_SECONDS="0")
        serve_port, bare_port = free_port(), free_port()
        procs.append(start([str(BIN), "serve", "--port", str(serve_port)], env,
                           workdir / "serve.log"))
        procs.append(start([sys.executable, "-c", BARE_APP, str(bare_port)], env,
                           workdir / "bare.log"))
        serve, bare = f"http://127.0.0.1:{serve_port}", f"http://127.0.0.1:{bare_port}"
        wait_for(serve + "/ready")
        wait_for(bare + "/")

        rates = {"bare /": wrk(bare + "/", args.duration, args.connections),
                 "serve /": wrk(serve + "/", args.duration, args.connections)}
        before = database_checks(serve)
        began = time.monotonic()
        rates["serve /ready"] = wrk(serve + "/ready", args.duration, args.connections)
        elapsed = time.monotonic() - began
        checks = database_checks(serve) - before  # the second scrape may add one
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)

    ttl = 1.0  # READY_CACHE_TTL's default, which serve runs with here
    print(f"load average {os.getloadavg()[0]:.2f}; wrk -t2 -c{args.connections} "
          f"-d{args.duration}s; req/s: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))
    print(f"/ vs bare FastAPI: {rates['serve /'] / rates['bare /']:.2f}x")
    print(f"/ready vs /: {rates['serve /ready'] / rates['serve /']:.2f}x")
    print(f"/ready storm: {checks / (elapsed / ttl):.2f} database checks per "
          f"{ttl:g}s cache window")


if __name__ == "__main__":
    main()
