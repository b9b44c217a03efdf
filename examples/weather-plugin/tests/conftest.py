from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


@pytest.fixture
def weather_settings(make_settings):
    """Settings with this repository's plugin folder as FEATURE_PLUGINS_DIR."""

    def make(**overrides):
        return make_settings(feature_plugins_dir=PLUGINS, **overrides)

    return make
