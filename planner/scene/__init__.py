"""The scene: the one place that turns planner data into pictures.

- :mod:`planner.scene.palette`: colours (isotherms, nerves, vessels, probes, tissues),
  window/level and volume-rendering presets, the legend and the not-for-clinical-use note.
- :mod:`planner.scene.slices`: world-oriented slice planes (axial, coronal, sagittal,
  along a probe), resampling and overlays painted with numpy (no OpenGL needed).
- :mod:`planner.scene.view3d`: ``pyvista.Plotter`` content (volume rendering, tissue
  surfaces, tubes, probes, isotherm surfaces, legend, note).

Used by the browser viewer (``web/``) and by headless export. Importing this package
imports no rendering library; pyvista and VTK load inside the 3D functions.
"""

from planner.scene.palette import (
    ISOTHERM_COLORS,
    NERVE_COLOR,
    NOTE,
    PROBE_ACTIVE_COLOR,
    PROBE_SHAFT_COLOR,
    VESSEL_COLOR,
    VOLUME_PRESETS,
    WINDOW_PRESETS,
    WindowPreset,
    default_volume_preset,
    default_window,
    isotherm_color,
    legend_entries,
)
from planner.scene.slices import (
    ORTHOGONAL_PLANES,
    ProbeOverlay,
    SlicePlane,
    TubeOverlay,
    encode_png,
    orthogonal_plane,
    probe_overlay,
    probe_plane,
    render_slice,
    sample_plane,
    sample_temperature,
    sample_volume,
    tube_overlay,
)

__all__ = [
    "ISOTHERM_COLORS",
    "NERVE_COLOR",
    "NOTE",
    "ORTHOGONAL_PLANES",
    "PROBE_ACTIVE_COLOR",
    "PROBE_SHAFT_COLOR",
    "ProbeOverlay",
    "SlicePlane",
    "TubeOverlay",
    "VESSEL_COLOR",
    "VOLUME_PRESETS",
    "WINDOW_PRESETS",
    "WindowPreset",
    "default_volume_preset",
    "default_window",
    "encode_png",
    "isotherm_color",
    "legend_entries",
    "orthogonal_plane",
    "probe_overlay",
    "probe_plane",
    "render_slice",
    "sample_plane",
    "sample_temperature",
    "sample_volume",
    "tube_overlay",
]
