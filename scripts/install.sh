#!/usr/bin/env bash
# Create .venv at the repository root (if missing) and install cryoplan into it.
# Usage: scripts/install.sh [test]   ("test" adds the test extras)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
extras=""
[ "${1:-}" = "test" ] && extras="[test]"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet --editable ".${extras}"
