#!/usr/bin/env bash
# Install cryoplan into .venv/ and run the main job on the built-in intercostal demo case.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow
.venv/bin/planner demo intercostal
.venv/bin/planner info demo:intercostal
