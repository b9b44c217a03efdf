"""Inner pytest sessions, as a user's suite would run the kit's plugin."""

from __future__ import annotations

# Only the plugins an inner session uses, loaded by name: autoloading every installed pytest
# plugin (schemathesis and hypothesis among them, with their assertions rewritten) took about
# 2.7 of the 4 s an inner session cost.
PLUGIN_ARGS = ("-p", "xdist.plugin", "-p", "pytest_asyncio.plugin", "-p", "syrupy",
               "-p", "pixsim7_testing.plugin", "-p", "no:cacheprovider")
ENV = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
