"""Three `serve` replicas behind a real HAProxy with the configuration GETTING_STARTED shows
(`deploy/haproxy/haproxy.cfg`): a rolling restart under load fails no request and loses no
acknowledged write.

HAProxy comes from Debian's package, started by hand here (`.ci/run` installs it).
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import asyncpg
import httpx
import pytest
from pixsim7_testing.polling import wait_until
from pixsim7_testing.processes import BackendProcess

from pixsim7.backend.main.infrastructure.adapters.embedded import free_port

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "haproxy.cfg"
GUIDE = Path(__file__).resolve().parents[2] / "GETTING_STARTED.md"
REPLICAS = 3
# Longer than HAProxy's `inter` x `fall` (1 s): it takes a draining replica out first.
DRAIN_SECONDS = "2"


def haproxy() -> str:
    found = shutil.which("haproxy")
    if found is None:
        pytest.fail("haproxy is not on PATH; install it (Debian: apt-get install haproxy), as "
                    ".ci/run does")
    return found


class LoadBalancer:
    """HAProxy running the example configuration, plus a stats page for the test to read."""

    def __init__(self, folder: Path, servers: list[int]) -> None:
        self.port, self.stats_port = free_port(), free_port()
        config = folder / "haproxy.cfg"
        config.write_text(CONFIG.read_text() + (
            "\nlisten stats\n"
            f"    bind 127.0.0.1:{self.stats_port}\n"
            "    stats enable\n    stats uri /stats\n"))
        env = {**os.environ, "PIXSIM7_LB_BIND": f"127.0.0.1:{self.port}",
               **{f"PIXSIM7_API_{n + 1}": f"127.0.0.1:{port}" for n, port in enumerate(servers)}}
        self.log = folder / "haproxy.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([haproxy(), "-db", "-f", str(config)], env=env,
                                         stdout=out, stderr=subprocess.STDOUT)

    def states(self) -> dict[str, str]:
        """Each replica's status as HAProxy sees it: UP, DOWN, or a transition (UP 1/2)."""
        assert self.proc.poll() is None, self.log.read_text()
        try:
            text = httpx.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=2).text
        except httpx.TransportError:  # not listening yet
            return {}
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {row["svname"]: row["status"] for row in rows
                if row["pxname"] == "replicas" and row["svname"].startswith("api")}

    def wait_state(self, server: str, status: str, timeout: float = 30.0) -> None:
        wait_until(lambda: self.states().get(server) == status, timeout=timeout, interval=0.1,
                   message=lambda: f"{server} not {status} in HAProxy: {self.states()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)  # soft stop
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def test_the_guide_shows_the_configuration_the_test_runs() -> None:
    assert CONFIG.read_text().strip() in GUIDE.read_text()


@pytest.mark.slow(seconds=30)
async def test_a_rolling_restart_behind_haproxy_fails_no_request_and_loses_no_write(
    backend_services_env, backend_processes, test_database, tmp_path
) -> None:
    env = {**backend_services_env, "SHUTDOWN_DRAIN_SECONDS": DRAIN_SECONDS,
           "ADMIN_TOKEN": "load-balancer-admin-token"}
    ports = [free_port() for _ in range(REPLICAS)]
    replicas: list[BackendProcess] = [backend_processes("serve", env, port=port, name=f"api{n}")
                                      for n, port in enumerate(ports, 1)]
    for replica in replicas:
        await asyncio.to_thread(replica.wait_ready, 60)
    balancer = LoadBalancer(tmp_path, ports)
    try:
        for n in range(1, REPLICAS + 1):
            await asyncio.to_thread(balancer.wait_state, f"api{n}", "UP")
        failures: list[str] = []
        acknowledged: list[str] = []
        served = {"GET": 0, "POST": 0}
        restarting = asyncio.Event()

        async def reads(client: httpx.AsyncClient) -> None:
            while not restarting.is_set():
                try:
                    response = await client.get("/api/v1/presets", params={"limit": 5})
                except httpx.HTTPError as exc:
                    failures.append(f"GET: {type(exc).__name__}")
                    continue
                if response.status_code != 200:
                    failures.append(f"GET: {response.status_code} {response.text[:200]}")
                served["GET"] += 1

        async def writes(client: httpx.AsyncClient, writer: int) -> None:
            for n in itertools.count():
                if restarting.is_set():
                    return
                name = f"lb-{writer}-{n}"
                try:
                    response = await client.post("/api/v1/presets", json={
                        "name": name, "provider_id": "sora", "operation": "text_to_video"})
                except httpx.HTTPError as exc:
                    failures.append(f"POST {name}: {type(exc).__name__}")
                    continue
                if response.status_code != 201:
                    failures.append(f"POST {name}: {response.status_code} {response.text[:200]}")
                    continue
                acknowledged.append(name)
                served["POST"] += 1

        def roll() -> list[BackendProcess]:
            """Restart each replica in turn, the next once HAProxy has the new one UP."""
            started = []
            for n, (replica, port) in enumerate(zip(replicas, ports, strict=True), 1):
                replica.send(signal.SIGTERM)
                balancer.wait_state(f"api{n}", "DOWN")  # out while it drains
                assert replica.proc.wait(30) == 0, replica.describe()
                fresh = backend_processes("serve", env, port=port, name=f"api{n}-restarted")
                fresh.wait_ready(60)
                balancer.wait_state(f"api{n}", "UP")
                started.append(fresh)
            return started

        base = f"http://127.0.0.1:{balancer.port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            load = [asyncio.create_task(reads(client)) for _ in range(2)] + [
                asyncio.create_task(writes(client, writer)) for writer in range(2)]
            await asyncio.sleep(0.5)
            began = time.monotonic()
            try:
                fresh = await asyncio.to_thread(roll)
            finally:
                restarting.set()
                await asyncio.gather(*load)
            rolled = time.monotonic() - began

        assert failures == [], f"{len(failures)} failed requests: {failures[:10]}"
        # Load ran through the whole restart: several requests of each kind per second.
        assert served["GET"] > 2 * rolled and served["POST"] > 2 * rolled, (served, rolled)
        conn = await asyncpg.connect(test_database.url)
        try:
            stored = [row["name"] for row in await conn.fetch(
                "SELECT name FROM generation_presets WHERE name LIKE 'lb-%'")]
        finally:
            await conn.close()
        # Every acknowledged write is stored, once; nothing unacknowledged was stored.
        assert sorted(stored) == sorted(acknowledged)
        assert all(process.proc.poll() is None for process in fresh)
    finally:
        balancer.stop()
