"""The real `pixsim7-backend serve`, ready to be attacked over its socket."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from testing.processes import BackendProcess

ADMIN_TOKEN = "hardening-admin-token"
READY_DEADLINE_S = 60.0


def wait_ready(serve: BackendProcess, deadline_s: float = READY_DEADLINE_S) -> None:
    """Poll /ready until it answers 200; fail with the process's log if it never does."""
    end = time.monotonic() + deadline_s
    while True:
        assert serve.proc.poll() is None, "serve died while starting:\n" + serve.describe()
        try:
            if httpx.get(f"{serve.base_url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < end, "serve not ready in time:\n" + serve.describe()
        time.sleep(0.1)


def client_input_failures(serve: BackendProcess) -> list[str]:
    """Log lines that client input must never cause: tracebacks and ERROR records."""
    return [line for line in serve.output().splitlines()
            if "Traceback" in line or " ERROR " in line or "Exception in ASGI" in line]


def rss_mib(pid: int) -> float:
    """The resident size of process `pid` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture
def served_api(backend_processes, backend_services_env) -> Callable[..., BackendProcess]:
    """`served_api(**settings)`: a ready `pixsim7-backend serve` on this test's database and
    Redis, with ADMIN_TOKEN set and any extra settings given as environment variables."""

    def start(**settings: str) -> BackendProcess:
        env = {**backend_services_env, "ADMIN_TOKEN": ADMIN_TOKEN, **settings}
        serve = backend_processes("serve", env)
        wait_ready(serve)
        return serve

    return start

