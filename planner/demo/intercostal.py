"""Demo case "intercostal": a patch of right posterolateral chest wall around the T7 nerve.

Local frame (mm): ``x`` across the patch (towards the patient's left before the patch is
turned), ``y`` outwards (posterior), ``z`` superior; the skin touches ``y = 0`` at
``x = 0``. The chest wall is a cylinder of radius :data:`CHEST_RADIUS_MM` about a
vertical axis, so every layer and rib follows the body's curve. The patch is then
turned 20 degrees about the vertical axis (its skin faces posterior and to the right)
and tipped 6 degrees so it faces a little upwards, as the back of the thorax does:
the CT grid is not aligned with the patient axes.

Layers from the skin in: skin 1.8 mm, subcutaneous fat 8-13 mm, deep fascia,
latissimus dorsi 5 mm, a thin fat plane, serratus anterior, then ribs 6, 7 and 8 (11 mm
tall, 7 mm thick, cortical shell 1 mm over cancellous bone, 16 mm intercostal spaces)
with the external, internal and innermost intercostal muscles between them, then the
endothoracic fascia and parietal pleura, then aerated lung. Each rib has a costal groove
on its lower inner edge holding, from top to bottom, the intercostal vein, artery and
nerve (VAN); the nerve lies just below the rib's lower edge.
"""

from __future__ import annotations

import numpy as np

from planner.demo import _shapes as shapes
from planner.demo._assemble import CaseModel, Centreline, UltrasoundView
from planner.demo._materials import Material

NAME = "intercostal"
TITLE = "Intercostal nerve T7, right posterolateral chest wall"
DESCRIPTION = (
    "The intercostal nerve runs along the lower inner edge of its rib in the costal groove, "
    "below the intercostal vein and artery, between the internal and innermost intercostal "
    "muscles. It is frozen to relieve chest-wall pain after thoracotomy, rib fractures or "
    "shingles. Aim the tip at the lower edge of the 7th rib, where the nerve lies, and stay "
    "superficial to the parietal pleura: lung lies a few millimetres deeper, and a "
    "pneumothorax is the main risk; spare the intercostal vessels just above the nerve."
)

CHEST_RADIUS_MM = 140.0
SKIN_MM = 1.8
RIB_OUTER_DEPTH_MM = 25.0
RIB_THICKNESS_MM = 7.0
RIB_HEIGHT_MM = 11.0
RIB_CORTEX_MM = 1.0
RIB_SLOPE_DEG = 7.0
"""Ribs descend laterally: the patch's ribs drop this much towards the patient's right."""
RIB_CENTRE_Z_MM = {6: 35.5, 7: 8.5, 8: -18.5}
"""Height of each rib's centre where it crosses x = 0 (27 mm apart: 11 mm rib + 16 mm space)."""
PLEURA_MM = 0.8
TARGET_RIB = 7

# Costal groove and the neurovascular bundle, in the rib's cross-section: depth below the
# skin (mm) and height above the rib's centre measured perpendicular to the rib (mm).
GROOVE = {"depth": RIB_OUTER_DEPTH_MM + 5.2, "height": -RIB_HEIGHT_MM / 2 + 2.6, "radius": 2.4}
BUNDLE = {
    "vein": {"depth": RIB_OUTER_DEPTH_MM + 5.3, "height": -RIB_HEIGHT_MM / 2 + 3.7, "radius": 1.15},
    "artery": {"depth": RIB_OUTER_DEPTH_MM + 5.3, "height": -RIB_HEIGHT_MM / 2 + 1.4, "radius": 1.05},
    "nerve": {"depth": RIB_OUTER_DEPTH_MM + 5.0, "height": -RIB_HEIGHT_MM / 2 - 1.6, "radius": 1.25},
}
BUNDLE_FAT_CUFF_MM = 0.7

BOX_LOW = (-35.0, -56.0, -36.0)
BOX_HIGH = (35.0, 4.0, 36.0)


def _rotation() -> np.ndarray:
    turn, tip = np.radians(20.0), np.radians(6.0)
    about_z = np.array([[np.cos(turn), -np.sin(turn), 0.0], [np.sin(turn), np.cos(turn), 0.0], [0.0, 0.0, 1.0]])
    about_x = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(tip), -np.sin(tip)], [0.0, np.sin(tip), np.cos(tip)]])
    return about_z @ about_x


def _slope() -> tuple[float, float]:
    angle = np.radians(RIB_SLOPE_DEG)
    return float(np.tan(angle)), float(np.cos(angle))


def _cylinder(x, y):
    """Depth below the skin and arc length across the patch (both mm) of local points."""
    from_axis_y = y + CHEST_RADIUS_MM
    depth = CHEST_RADIUS_MM - np.sqrt(x * x + from_axis_y * from_axis_y)
    arc = CHEST_RADIUS_MM * np.arctan2(x, from_axis_y)
    return depth.astype(np.float32), arc.astype(np.float32)


def _local_point(arc_mm, depth_mm, z_mm) -> np.ndarray:
    """Local ``(..., 3)`` point at an arc length, depth and height (inverse of :func:`_cylinder`)."""
    angle = np.asarray(arc_mm, dtype=float) / CHEST_RADIUS_MM
    radius = CHEST_RADIUS_MM - np.asarray(depth_mm, dtype=float)
    x = radius * np.sin(angle)
    y = radius * np.cos(angle) - CHEST_RADIUS_MM
    return np.stack(np.broadcast_arrays(x, y, np.asarray(z_mm, dtype=float)), axis=-1)


def rib_centre_z(rib: int, arc_mm):
    """Height (mm, local z) of a rib's centre at an arc length across the patch."""
    tan_slope, _ = _slope()
    return RIB_CENTRE_Z_MM[rib] + tan_slope * np.asarray(arc_mm)


def _fat_bottom(arc, z):
    """Depth of the deep fascia (bottom of subcutaneous fat), mm: gently uneven."""
    return (
        SKIN_MM
        + 10.6
        + 1.6 * np.sin(2 * np.pi * arc / 75.0 + 0.7)
        + 0.9 * np.sin(2 * np.pi * z / 95.0 + 1.9)
    ).astype(np.float32)


def paint(x, y, z) -> np.ndarray:
    """Materials at local points (float32 arrays of one shape, mm)."""
    depth, arc = _cylinder(x, y)
    tan_slope, cos_slope = _slope()
    materials = np.full(np.shape(x), Material.AIR, dtype=np.uint8)

    fat_bottom = _fat_bottom(arc, z)
    fascia_bottom = fat_bottom + 0.8
    latissimus_bottom = fascia_bottom + 5.0
    fat_plane_bottom = latissimus_bottom + 0.8
    rib_inner = RIB_OUTER_DEPTH_MM + RIB_THICKNESS_MM
    layers = [
        (0.0, Material.SKIN),
        (SKIN_MM, Material.FAT),
        (fat_bottom, Material.FASCIA),
        (fascia_bottom, Material.MUSCLE),  # latissimus dorsi
        (latissimus_bottom, Material.FAT),  # plane between latissimus and serratus
        (fat_plane_bottom, Material.MUSCLE),  # serratus anterior, then intercostal muscles
        (rib_inner, Material.PLEURA),  # endothoracic fascia and parietal pleura
        (rib_inner + PLEURA_MM, Material.LUNG),
    ]
    for top, material in layers:
        materials[depth >= top] = material

    for rib in RIB_CENTRE_Z_MM:
        # Cross-section coordinates: depth from the rib's middle, height above its centre
        # measured perpendicular to the sloping rib.
        height = (z - rib_centre_z(rib, arc)) * cos_slope
        if np.all(np.abs(height) > RIB_HEIGHT_MM):
            continue
        across = depth - (RIB_OUTER_DEPTH_MM + RIB_THICKNESS_MM / 2)
        section = shapes.ellipse_2d(across, height, radii=(RIB_THICKNESS_MM / 2, RIB_HEIGHT_MM / 2))
        groove = np.sqrt((depth - GROOVE["depth"]) ** 2 + (height - GROOVE["height"]) ** 2) - GROOVE["radius"]
        bone = shapes.subtract(section, groove)
        bundle = {
            part: np.sqrt((depth - spec["depth"]) ** 2 + (height - spec["height"]) ** 2) - spec["radius"]
            for part, spec in BUNDLE.items()
        }
        # Loose fat around the bundle, then bone, then the bundle itself.
        materials[shapes.union(*bundle.values()) <= BUNDLE_FAT_CUFF_MM] = Material.FAT
        materials[bone <= 0.0] = Material.CORTICAL_BONE
        materials[bone <= -RIB_CORTEX_MM] = Material.CANCELLOUS_BONE
        materials[bundle["vein"] <= 0.0] = Material.VEIN
        materials[bundle["artery"] <= 0.0] = Material.ARTERY
        materials[bundle["nerve"] <= 0.0] = Material.NERVE
    return materials


def _bundle_line(rib: int, part: str) -> np.ndarray:
    _, cos_slope = _slope()
    spec = BUNDLE[part]
    arc = np.arange(-45.0, 45.0 + 1e-9, 0.5)
    z = rib_centre_z(rib, arc) + spec["height"] / cos_slope
    return _local_point(arc, spec["depth"], z)


def _rib_edge_point(rib: int, *, lower: bool, depth_mm: float) -> np.ndarray:
    """Point on a rib's upper or lower edge at a depth (mm), where x = 0."""
    _, cos_slope = _slope()
    across = (depth_mm - (RIB_OUTER_DEPTH_MM + RIB_THICKNESS_MM / 2)) / (RIB_THICKNESS_MM / 2)
    half_height = RIB_HEIGHT_MM / 2 * np.sqrt(1.0 - across**2)
    sign = -1.0 if lower else 1.0
    return _local_point(0.0, depth_mm, rib_centre_z(rib, 0.0) + sign * half_height / cos_slope)


def model() -> CaseModel:
    """The intercostal case's geometry."""
    tan_slope, cos_slope = _slope()
    centrelines = []
    for rib in RIB_CENTRE_Z_MM:
        centrelines += [
            Centreline(f"intercostal_nerve_T{rib}", _bundle_line(rib, "nerve"), BUNDLE["nerve"]["radius"],
                       "nerve", target=(rib == TARGET_RIB)),
            Centreline(f"intercostal_artery_{rib}", _bundle_line(rib, "artery"), BUNDLE["artery"]["radius"], "artery"),
            Centreline(f"intercostal_vein_{rib}", _bundle_line(rib, "vein"), BUNDLE["vein"]["radius"], "vein"),
        ]
    nerve = BUNDLE["nerve"]
    target_z = rib_centre_z(TARGET_RIB, 0.0) + nerve["height"] / cos_slope
    # The lowest bone is the outer lip of the costal groove, just outside the groove.
    lip_depth = GROOVE["depth"] - GROOVE["radius"] - 0.2
    rib_mid_depth = RIB_OUTER_DEPTH_MM + RIB_THICKNESS_MM / 2
    landmarks = {
        "skin_entry_suggestion": _local_point(0.0, 0.0, target_z),
        "target_nerve_point": _local_point(0.0, nerve["depth"], target_z),
        "rib_7_lower_edge": _rib_edge_point(7, lower=True, depth_mm=lip_depth),
        "rib_7_upper_edge": _rib_edge_point(7, lower=False, depth_mm=rib_mid_depth),
        "rib_8_upper_edge": _rib_edge_point(8, lower=False, depth_mm=rib_mid_depth),
        "rib_8_lower_edge": _rib_edge_point(8, lower=True, depth_mm=lip_depth),
        "rib_7_outer_surface": _local_point(0.0, RIB_OUTER_DEPTH_MM, rib_centre_z(7, 0.0)),
        "pleura_below_target": _local_point(0.0, RIB_OUTER_DEPTH_MM + RIB_THICKNESS_MM + PLEURA_MM / 2, target_z),
    }
    space_centre_z = 0.5 * (
        rib_centre_z(7, 0.0) - RIB_HEIGHT_MM / 2 / cos_slope + rib_centre_z(8, 0.0) + RIB_HEIGHT_MM / 2 / cos_slope
    )
    # A parasagittal view across ribs 7 and 8, turned to cross them at right angles;
    # image columns run caudally, as the probe marker points cranially.
    slope = np.radians(RIB_SLOPE_DEG)
    ultrasound = UltrasoundView(
        probe_centre=(0.0, 0.0, float(space_centre_z)),
        lateral=(float(np.sin(slope)), 0.0, -float(np.cos(slope))),
        depth=(0.0, -1.0, 0.0),
        width_mm=48.0,
        depth_mm=45.0,
        view="parasagittal across ribs 7 and 8 over the 7th intercostal space, cranial to the left",
    )
    return CaseModel(
        name=NAME,
        title=TITLE,
        description=DESCRIPTION,
        seed=7107,
        box_low=BOX_LOW,
        box_high=BOX_HIGH,
        paint=paint,
        rotation=_rotation(),
        translation=(-92.0, 108.0, -155.0),
        centrelines=centrelines,
        landmarks={key: tuple(np.asarray(value, dtype=float)) for key, value in landmarks.items()},
        ultrasound=ultrasound,
    )
