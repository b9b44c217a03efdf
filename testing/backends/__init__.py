"""The kit's service backends, one module each: `external`, `containers` (testcontainers),
`embedded`. Each is a class with `name`, `start()` and `describe()`; `pixsim7_testing.services`
chooses one."""

from __future__ import annotations

from typing import Protocol

from pixsim7_testing.endpoints import ServiceSet

ENV_BACKEND = "PIXSIM7_TEST_SERVICES"
ENV_DATABASE_URL = "PIXSIM7_TEST_DATABASE_URL"
ENV_REDIS_URL = "PIXSIM7_TEST_REDIS_URL"
ENV_POSTGRES_IMAGE = "PIXSIM7_TEST_POSTGRES_IMAGE"
ENV_REDIS_IMAGE = "PIXSIM7_TEST_REDIS_IMAGE"


class Backend(Protocol):
    name: str

    def start(self) -> ServiceSet:
        """Start (or find) the servers; a ServiceStartError saying what was tried if not."""
        ...

    def describe(self) -> str:
        """One line for pytest's header: the servers this backend will give, unstarted."""
        ...
