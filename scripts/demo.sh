#!/usr/bin/env bash
# Install cryoplan into .venv/ and run the main job on the built-in intercostal demo case:
# describe the demo anatomy, then solve its freeze-thaw-freeze plan and write the results.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow
.venv/bin/planner demo intercostal
.venv/bin/planner info demo:intercostal
.venv/bin/planner simulate data/plans/intercostal_demo.json --out out/intercostal_demo
