#!/usr/bin/env bash
# Install cryoplan into .venv/ and open the browser viewer on the intercostal T7 case (built-in demo anatomy).
# Then browse to http://127.0.0.1:8080/ (extra arguments go to `planner serve`, e.g. --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow
mkdir -p workspace
exec .venv/bin/planner serve intercostal_t7 --data workspace "$@"
