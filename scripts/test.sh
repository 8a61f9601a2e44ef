#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine (run as root), then run it.
# Extra arguments go to pytest, e.g. scripts/test.sh -k dicom
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the real head CT used by the imaging tests, chromium for the browser tests.
debian_packages="invesalius-examples chromium"
missing=""
for package in $debian_packages; do
    dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $missing >/dev/null
fi

bash scripts/install.sh test

export CRYOPLAN_REQUIRE_REALDATA=1 CRYOPLAN_REQUIRE_BROWSER=1
export VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow
exec .venv/bin/python -m pytest -n 2 -p no:cacheprovider "$@"
