"""Colours, window/level presets and volume-rendering presets: one place for all of them.

Every picture the planner makes (the browser viewer, batch screenshots, reports) takes
its colours from here, so an isotherm is the same colour in 3D, on a slice and in the
legend. Colours are ``(r, g, b)`` tuples of floats in 0..1.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner import NOT_FOR_CLINICAL_USE
from planner.labels import Tissue

NOTE = NOT_FOR_CLINICAL_USE
"""The text every view shows."""

NERVE_COLOR = (1.0, 0.85, 0.0)
"""Nerves: yellow."""
VESSEL_COLOR = (0.85, 0.1, 0.1)
"""Blood vessels: red."""
PROBE_SHAFT_COLOR = (0.62, 0.62, 0.66)
"""Probe shafts: grey."""
PROBE_ACTIVE_COLOR = (0.0, 0.75, 1.0)
"""The active (freezing) segment of a probe: cyan-blue."""
PROBE_SELECTED_COLOR = (1.0, 0.55, 0.0)
"""Outline of the selected probe on slices: orange."""
CROSSHAIR_COLOR = (0.2, 0.9, 0.3)
"""Crosshair lines on slices: green."""

ISOTHERM_COLORS: dict[float, tuple[float, float, float]] = {
    0.0: (0.80, 0.93, 1.00),  # 0 degC: very light blue (drawn translucent in 3D)
    -20.0: (0.00, 0.45, 1.00),  # -20 degC: strong blue (the lethal-for-nerve line)
    -40.0: (0.85, 0.00, 0.85),  # -40 degC: magenta
}
"""Fixed colours of the standard isotherms, degC -> colour."""

ISOTHERM_OPACITY: dict[float, float] = {0.0: 0.30, -20.0: 0.55, -40.0: 0.9}
"""3D opacity of the standard isotherm surfaces: outer shells translucent so the inner ones show."""

TISSUE_COLORS: dict[int, tuple[float, float, float]] = {
    Tissue.SKIN: (0.93, 0.76, 0.65),
    Tissue.FAT: (0.98, 0.90, 0.55),
    Tissue.MUSCLE: (0.75, 0.35, 0.32),
    Tissue.BONE: (0.95, 0.94, 0.88),
    Tissue.NERVE: NERVE_COLOR,
    Tissue.VESSEL: VESSEL_COLOR,
    Tissue.SOFT_TISSUE: (0.85, 0.55, 0.50),
    Tissue.LUNG: (0.70, 0.80, 0.90),
}
"""Colours of the tissue classes' surfaces."""

TISSUE_OPACITY: dict[int, float] = {
    Tissue.SKIN: 0.15,
    Tissue.FAT: 0.12,
    Tissue.MUSCLE: 0.25,
    Tissue.BONE: 1.0,
    Tissue.NERVE: 1.0,
    Tissue.VESSEL: 1.0,
    Tissue.SOFT_TISSUE: 0.2,
    Tissue.LUNG: 0.3,
}
"""3D opacity of tissue surfaces: outer layers translucent so the nerve and the probe show."""


def isotherm_color(level_c: float) -> tuple[float, float, float]:
    """Colour of the ``level_c`` degC isotherm.

    The standard levels (0, -20, -40 degC) have fixed colours; other levels get the
    colour of the nearest standard level, mixed halfway with white for levels above 0
    degC so they read as "warmer than the freezing line".
    """
    level = float(level_c)
    if level in ISOTHERM_COLORS:
        return ISOTHERM_COLORS[level]
    nearest = min(ISOTHERM_COLORS, key=lambda known: abs(known - level))
    color = ISOTHERM_COLORS[nearest]
    if level > 0:
        return tuple(0.5 * (c + 1.0) for c in color)
    return color


def isotherm_opacity(level_c: float) -> float:
    """3D opacity of the ``level_c`` degC isotherm (standard levels fixed, others 0.5)."""
    return ISOTHERM_OPACITY.get(float(level_c), 0.5)


def legend_entries(levels_c=(0.0, -20.0, -40.0)) -> list[tuple[str, tuple[float, float, float]]]:
    """``(text, colour)`` pairs for a legend: the isotherms, then nerve, vessel and probe."""
    entries = [(f"{level:g} \N{DEGREE SIGN}C", isotherm_color(level)) for level in levels_c]
    entries += [
        ("nerve", NERVE_COLOR),
        ("vessel", VESSEL_COLOR),
        ("probe", PROBE_SHAFT_COLOR),
        ("active segment", PROBE_ACTIVE_COLOR),
    ]
    return entries


def to_rgb255(color) -> tuple[int, int, int]:
    """A 0..1 colour as 0..255 integers."""
    return tuple(int(round(255 * float(c))) for c in color[:3])


def to_hex(color) -> str:
    """A 0..1 colour as ``"#rrggbb"``."""
    return "#{:02x}{:02x}{:02x}".format(*to_rgb255(color))


# ---------------------------------------------------------------- window / level
@dataclass(frozen=True)
class WindowPreset:
    """A grey-level window: values ``level - width/2`` .. ``level + width/2`` map to black .. white."""

    name: str
    width: float
    level: float
    modality: str


WINDOW_PRESETS: dict[str, WindowPreset] = {
    preset.name: preset
    for preset in (
        WindowPreset("soft tissue", 400.0, 40.0, "CT"),
        WindowPreset("bone", 2000.0, 400.0, "CT"),
        WindowPreset("lung", 1500.0, -600.0, "CT"),
        WindowPreset("nerve / muscle", 250.0, 50.0, "CT"),
        WindowPreset("ultrasound", 255.0, 127.5, "US"),
    )
}
"""Window/level presets, HU for CT and grey values for ultrasound."""


def default_window(modality: str, value_range=None) -> WindowPreset:
    """The preset to start with for a modality: soft tissue for CT, ultrasound for US,
    the full value range otherwise."""
    if modality == "CT":
        return WINDOW_PRESETS["soft tissue"]
    if modality == "US":
        return WINDOW_PRESETS["ultrasound"]
    low, high = value_range if value_range is not None else (0.0, 255.0)
    width = max(float(high) - float(low), 1e-6)
    return WindowPreset("full range", width, float(low) + width / 2, modality)


# ---------------------------------------------------------------- volume rendering
@dataclass(frozen=True)
class VolumePreset:
    """Transfer functions for volume rendering.

    ``colors``: ``(value, (r, g, b))`` points; ``opacity``: ``(value, opacity)`` points;
    values in the volume's units (HU for CT, grey 0..255 for ultrasound).
    """

    name: str
    modality: str
    colors: tuple[tuple[float, tuple[float, float, float]], ...]
    opacity: tuple[tuple[float, float], ...]
    shade: bool = True


VOLUME_PRESETS: dict[str, VolumePreset] = {
    preset.name: preset
    for preset in (
        VolumePreset(
            "CT soft tissue",
            "CT",
            colors=((-1000, (0, 0, 0)), (-150, (0.55, 0.25, 0.15)), (40, (0.85, 0.5, 0.4)),
                    (200, (0.95, 0.8, 0.65)), (1500, (1, 1, 0.95))),
            opacity=((-1000, 0.0), (-300, 0.0), (-100, 0.02), (40, 0.08), (150, 0.15), (400, 0.6), (1500, 0.8)),
        ),
        VolumePreset(
            "CT bone",
            "CT",
            colors=((-1000, (0, 0, 0)), (150, (0.7, 0.55, 0.4)), (400, (0.95, 0.9, 0.8)), (2000, (1, 1, 1))),
            opacity=((-1000, 0.0), (150, 0.0), (300, 0.3), (800, 0.85), (2000, 0.95)),
        ),
        VolumePreset(
            "ultrasound",
            "US",
            colors=((0, (0, 0, 0)), (128, (0.6, 0.6, 0.6)), (255, (1, 1, 1))),
            opacity=((0, 0.0), (40, 0.0), (120, 0.3), (255, 0.8)),
            shade=False,
        ),
    )
}
"""Volume-rendering presets: two for CT (soft tissue, bone) and one for ultrasound."""


def default_volume_preset(modality: str) -> str | None:
    """Name of the volume-rendering preset for a modality (None: no preset fits)."""
    if modality == "CT":
        return "CT soft tissue"
    if modality == "US":
        return "ultrasound"
    return None
