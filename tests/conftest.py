"""Suite-wide settings: headless VTK, and no data downloads."""

import os

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
# pyvista must never try to fetch example data during tests.
os.environ.setdefault("PYVISTA_OFF_SCREEN", "true")
