"""The kit's markers and the names its hooks and fixtures share."""

from __future__ import annotations

import pytest
from pixsim7_testing.rollback import MARKER as ROLLBACK_MARKER
from pixsim7_testing.session import RunServices

TEMPLATE_MARKER = "template_db"
PROCESS_MARKER = "backend_process"
TIER_BY_MARKER = {TEMPLATE_MARKER: "template", ROLLBACK_MARKER: "rollback"}
# The event loop the kit's fixtures and the tests using them run on: one per session (per xdist
# worker), where the rollback tier's shared apps live.
KIT_LOOP_SCOPE = "session"
RUN_SERVICES = pytest.StashKey[RunServices]()


def services_did_not_start(error: str) -> None:
    """Stop the run here, once, with the sentence: not once per test, and before syrupy could
    call the snapshots of tests that never ran unused."""
    pytest.exit(f"pixsim7 testing kit: {error}", returncode=pytest.ExitCode.USAGE_ERROR)
