"""Suite-wide reporting; loaded by the xdist controller too, unlike deeper conftest files."""

from __future__ import annotations

import pytest

SLOW = "slow"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{SLOW}(seconds=5): takes seconds by what it proves (a time budget, a "
        "timeout that must lapse); the slowest start first, so that under xdist they run "
        "beside the rest instead of after it")


def _expected_seconds(item: pytest.Item) -> float:
    marker = item.get_closest_marker(SLOW)
    return 0.0 if marker is None else float(marker.kwargs.get("seconds", 5))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A stable sort, the same in every xdist worker, so they agree on the order.
    items.sort(key=lambda item: -_expected_seconds(item))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print each fuzz run's seed, case count and time, also from xdist workers."""
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            for name, value in getattr(report, "user_properties", []):
                if name == "fuzz":
                    terminalreporter.write_line(f"fuzz {outcome}: {report.nodeid}: {value}")
