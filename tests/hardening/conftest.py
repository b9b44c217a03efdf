"""The real `pixsim7-backend serve`, ready to be attacked over its socket."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pixsim7_testing.processes import BackendProcess

ADMIN_TOKEN = "hardening-admin-token"
# `served_api(**PRODUCTION)`: production mode, as an attacker meets the backend.
PRODUCTION = {"DEBUG": "false", "SECRET_KEY": "hardening-secret-key-not-the-default"}
READY_DEADLINE_S = 60.0


def client_input_failures(serve: BackendProcess) -> list[str]:
    """What client input must never cause: ERROR records, logged exceptions, and tracebacks or
    ASGI errors written outside the log format."""
    failures = [f"{r['level']} {r['logger']}: {r['message']}" for r in serve.records()
                if r["level"] in ("ERROR", "CRITICAL") or "exception" in r]
    failures += [line for line in serve.output().splitlines() if not line.startswith("{")
                 and ("Traceback" in line or "Exception in ASGI" in line)]
    return failures


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
        serve.wait_ready(timeout=READY_DEADLINE_S)
        return serve

    return start

