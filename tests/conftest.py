"""Suite-wide reporting; loaded by the xdist controller too, unlike deeper conftest files."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print each fuzz run's seed, case count and time, also from xdist workers."""
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            for name, value in getattr(report, "user_properties", []):
                if name == "fuzz":
                    terminalreporter.write_line(f"fuzz {outcome}: {report.nodeid}: {value}")
