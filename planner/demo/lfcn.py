"""Demo case "lfcn": the lateral femoral cutaneous nerve below the right ASIS.

Local frame (mm) = world axes (x to the patient's left, which is medial here; y
posterior, i.e. deeper; z superior), with the origin on the tip of the anterior superior
iliac spine (ASIS). The CT grid is axis-aligned (the intercostal case is the oblique one).

Drawn: skin; subcutaneous fat, thin over the ASIS and thicker away from it; the ilium
(iliac crest running back from the ASIS, the wing as a plate, the anterior inferior
iliac spine) with cortex and cancellous bone; the abdominal wall above the inguinal
ligament with bowel behind it and the iliacus lining the iliac fossa; the inguinal
ligament running down and medially from the ASIS; in the thigh the fascia lata, the
sartorius (running down and medially from the ASIS) and the tensor fasciae latae
(laterally) over the deeper muscles. The LFCN (2.5 mm) crosses the iliacus, passes under
the inguinal ligament about 15 mm medial to and 10 mm below the ASIS, then runs down
and laterally just under the fascia lata on the front of the sartorius. The superficial
circumflex iliac artery and vein run in the fat below the ligament towards the ASIS.
"""

from __future__ import annotations

import numpy as np

from planner.demo import _shapes as shapes
from planner.demo._assemble import CaseModel, Centreline, UltrasoundView
from planner.demo._materials import Material

NAME = "lfcn"
TITLE = "Lateral femoral cutaneous nerve below the right ASIS"
DESCRIPTION = (
    "The lateral femoral cutaneous nerve (L2-L3) is purely sensory: it leaves the pelvis under "
    "the inguinal ligament about 1-2 cm medial to the anterior superior iliac spine (ASIS), then "
    "crosses the front of the sartorius to supply the skin of the lateral thigh. Its entrapment "
    "causes meralgia paresthetica, and freezing it can relieve burning thigh pain that resists "
    "other treatment. Aim 1-3 cm below and medial to the ASIS, where the nerve lies just under the "
    "fascia lata on the sartorius; spare the superficial circumflex iliac vessels and the skin."
)

SKIN_MM = 2.0
NERVE_RADIUS_MM = 1.25
FASCIA_MM = 0.8

# Iliac wing: a plate through PLATE_POINT facing PLATE_NORMAL (medially, a little
# backwards and, as the wing flares, upwards).
PLATE_POINT = (0.0, 8.0, -5.0)
PLATE_NORMAL = (1.0, 0.3, 0.25)
PLATE_HALF_MM = 2.5
BONE_CORTEX_MM = 1.2
CREST = [(0.0, 5.0, 0.0), (-5.0, 12.0, 5.0), (-11.0, 24.0, 10.0), (-18.0, 40.0, 14.0)]
CREST_RADIUS_MM = 5.0  # the crest's front end is the ASIS: its tip is the local origin
AIIS_CENTRE = (3.0, 17.0, -33.0)
AIIS_RADII = (5.0, 5.0, 6.0)
# Front edge of the ilium below the ASIS: (height z, depth y) pairs, the notch between
# the two spines, then the hip joint deeper down.
ANTERIOR_BORDER = ([-60.0, -40.0, -33.0, -26.0, -15.0, -5.0, 0.0, 20.0], [30.0, 24.0, 15.0, 15.0, 14.0, 6.0, 4.0, 4.0])
CREST_TOP = ([0.0, 12.0, 24.0, 40.0, 60.0], [2.0, 5.0, 10.0, 14.0, 17.0])  # (depth y, height z)

LIGAMENT_START = (2.0, 1.1, -3.0)
LIGAMENT_END = (46.0, 4.6, -28.1)

BOX_LOW = (-28.0, -15.0, -50.0)
BOX_HIGH = (46.0, 36.0, 14.0)


def fascia_depth(x, z):
    """Depth (local y, mm) of the deep fascia: just in front of the ASIS, receding 3.5 mm
    away from it."""
    rho_sq = x * x + z * z
    return (-0.5 + 3.5 * (1.0 - np.exp(-rho_sq / (2 * 14.0**2)))).astype(np.float32)


def fat_thickness(x, z):
    """Subcutaneous fat, mm: 6 over the ASIS, about 12 away from it."""
    rho_sq = x * x + z * z
    return (6.0 + 6.0 * (1.0 - np.exp(-rho_sq / (2 * 20.0**2)))).astype(np.float32)


def skin_depth(x, z):
    """Local y (mm) of the skin surface."""
    return fascia_depth(x, z) - fat_thickness(x, z) - SKIN_MM


def ligament_height(x):
    """Height (local z, mm) of the inguinal ligament's line at a medial position x."""
    (x0, _, z0), (x1, _, z1) = LIGAMENT_START, LIGAMENT_END
    return (z0 + (np.asarray(x) - x0) * (z1 - z0) / (x1 - x0)).astype(np.float32)


def _plate_offset(x, y, z):
    return shapes.half_space(x, y, z, point=PLATE_POINT, normal=PLATE_NORMAL)


def _on_fascia(x, z, below_mm):
    return (float(x), float(fascia_depth(np.float32(x), np.float32(z)) + below_mm), float(z))


# The nerve, from the iliac fossa to the thigh (control points of a smooth curve).
LFCN_CONTROL = [
    (44.0, 21.0, 16.0),
    (30.0, 14.5, 4.0),
    (15.0, 7.5, -9.0),  # under the inguinal ligament, ~15 mm medial and ~9 mm below the ASIS
    _on_fascia(11.5, -20.0, FASCIA_MM + NERVE_RADIUS_MM + 0.2),  # on the sartorius
    _on_fascia(6.5, -33.0, FASCIA_MM + NERVE_RADIUS_MM + 0.2),
    _on_fascia(0.5, -52.0, FASCIA_MM + NERVE_RADIUS_MM + 0.2),
]
TARGET_Z_MM = -20.0

SARTORIUS = {"start": (4.0, 9.5, -7.0), "end": (20.0, 12.5, -54.0), "half_width_mm": 10.0, "half_thickness_mm": 4.5}
TFL = {"start": (-7.0, 10.0, -5.0), "end": (-17.0, 15.0, -54.0), "half_width_mm": 8.0, "half_thickness_mm": 5.5}


def _in_fat(x, z, fraction=0.5):
    return (float(x), float(fascia_depth(np.float32(x), np.float32(z)) - fraction * fat_thickness(np.float32(x), np.float32(z))), float(z))


# The superficial circumflex iliac vessels cross over the nerve ~8 mm below the target.
SCIA_CONTROL = [_in_fat(x, z) for x, z in [(48, -47), (32, -39), (18, -32), (6, -26.5), (-8, -20.5), (-30, -14)]]
SCIV_CONTROL = [_in_fat(x, z, 0.45) for x, z in [(48, -50.5), (32, -42.5), (18, -35.5), (6, -30), (-8, -24), (-30, -17.5)]]


def paint(x, y, z) -> np.ndarray:
    """Materials at local points (float32 arrays of one shape, mm)."""
    fascia = fascia_depth(x, z)
    skin = fascia - fat_thickness(x, z) - SKIN_MM
    offset = _plate_offset(x, y, z)  # > 0 medial to the iliac wing
    above_ligament = z > ligament_height(x)
    materials = np.full(np.shape(x), Material.AIR, dtype=np.uint8)
    materials[y >= skin] = Material.FAT

    # Abdomen above the ligament, medial to the wing: aponeurosis, muscles, bowel.
    abdomen = above_ligament & (offset > -PLATE_HALF_MM)
    wall_front = fascia + FASCIA_MM
    wall_back = wall_front + 9.0
    iliacus_front = 9.0 + 0.35 * np.maximum(offset - PLATE_HALF_MM, 0.0)
    materials[abdomen & (y >= fascia)] = Material.FASCIA
    materials[abdomen & (y >= wall_front)] = Material.MUSCLE
    materials[abdomen & (offset > PLATE_HALF_MM) & (y >= wall_back)] = Material.VISCERA
    materials[abdomen & (offset > PLATE_HALF_MM) & (y >= np.maximum(wall_back, iliacus_front - 3.0))] = Material.FAT
    # Iliacus in the iliac fossa, continuing under the ligament as iliopsoas.
    materials[(offset > PLATE_HALF_MM) & (y >= np.maximum(iliacus_front, wall_back))] = Material.MUSCLE

    # Thigh below the ligament: fascia lata, then the deep muscles behind the sartorius.
    thigh = ~above_ligament
    materials[thigh & (y >= fascia) & (y < fascia + FASCIA_MM)] = Material.FASCIA
    materials[thigh & (y >= fascia + 11.0)] = Material.MUSCLE
    # Gluteal muscles lateral to the wing (under the fascia above the ASIS, deep below it).
    lateral = (offset < -PLATE_HALF_MM) & (y >= fascia + FASCIA_MM) & ((z > -6.0) | (y >= fascia + 11.0))
    materials[lateral] = Material.MUSCLE
    for muscle in (SARTORIUS, TFL):
        band = shapes.ribbon(x, y, z, width_direction=(1.0, 0.0, 0.0), **muscle)
        materials[band <= 0.0] = Material.MUSCLE

    ligament = shapes.ribbon(
        x, y, z, start=LIGAMENT_START, end=LIGAMENT_END, width_direction=(0.0, 0.3, 1.0),
        half_width_mm=3.5, half_thickness_mm=1.5,
    )
    materials[ligament <= 0.0] = Material.LIGAMENT

    border_y = np.interp(z, *ANTERIOR_BORDER).astype(np.float32)
    top_z = np.interp(y, *CREST_TOP).astype(np.float32)
    # The wing thickens backwards into the body of the ilium above the hip joint.
    half_thickness = PLATE_HALF_MM + 0.18 * np.maximum(y - 12.0, 0.0)
    plate = np.maximum(np.maximum(np.abs(offset) - half_thickness, border_y - y), z - top_z)
    crest = shapes.tube(x, y, z, polyline=CREST, radius_mm=CREST_RADIUS_MM)
    aiis = shapes.ellipsoid(x, y, z, centre=AIIS_CENTRE, radii=AIIS_RADII)
    bone = shapes.smooth_union(shapes.smooth_union(plate, crest, blend_mm=3.0), aiis, blend_mm=3.0)
    materials[bone <= 0.0] = Material.CORTICAL_BONE
    materials[bone <= -BONE_CORTEX_MM] = Material.CANCELLOUS_BONE

    for control, material, radius in ((SCIV_CONTROL, Material.VEIN, 1.2), (SCIA_CONTROL, Material.ARTERY, 1.0)):
        vessel = shapes.tube(x, y, z, polyline=shapes.smooth_path(control), radius_mm=radius)
        materials[vessel <= 0.0] = material
    nerve = shapes.tube(x, y, z, polyline=shapes.smooth_path(LFCN_CONTROL), radius_mm=NERVE_RADIUS_MM)
    materials[nerve <= 0.0] = Material.NERVE
    materials[(y >= skin) & (y < skin + SKIN_MM)] = Material.SKIN
    return materials


def model() -> CaseModel:
    """The LFCN case's geometry."""
    nerve_path = shapes.smooth_path(LFCN_CONTROL)
    ligament_axis = np.subtract(LIGAMENT_END, LIGAMENT_START)
    ligament_axis /= np.linalg.norm(ligament_axis)
    from_start = nerve_path - np.asarray(LIGAMENT_START)
    off_ligament = from_start - np.outer(from_start @ ligament_axis, ligament_axis)
    crossing = nerve_path[np.argmin(np.linalg.norm(off_ligament, axis=1))]
    target = nerve_path[np.argmin(np.abs(nerve_path[:, 2] - TARGET_Z_MM))]
    skin_above_target = (target[0], float(skin_depth(np.float32(target[0]), np.float32(target[2]))), target[2])
    centrelines = [
        Centreline("lateral_femoral_cutaneous_nerve", nerve_path, NERVE_RADIUS_MM, "nerve", target=True),
        Centreline("superficial_circumflex_iliac_artery", shapes.smooth_path(SCIA_CONTROL), 1.0, "artery"),
        Centreline("superficial_circumflex_iliac_vein", shapes.smooth_path(SCIV_CONTROL), 1.2, "vein"),
    ]
    landmarks = {
        "asis": (0.0, 0.0, 0.0),
        "aiis": (AIIS_CENTRE[0], AIIS_CENTRE[1] - AIIS_RADII[1], AIIS_CENTRE[2]),
        "lfcn_at_inguinal_ligament": tuple(crossing),
        "target_nerve_point": tuple(target),
        "skin_entry_suggestion": skin_above_target,
        "inguinal_ligament_point": tuple(np.add(LIGAMENT_START, LIGAMENT_END) / 2),
    }
    # Transverse view through the target, probe laid on the most anterior skin.
    columns_x = np.linspace(-18.0, 30.0, 97, dtype=np.float32)
    probe_y = float(skin_depth(columns_x, np.float32(TARGET_Z_MM)).min())
    ultrasound = UltrasoundView(
        probe_centre=(6.0, probe_y, TARGET_Z_MM),
        lateral=(1.0, 0.0, 0.0),
        depth=(0.0, 1.0, 0.0),
        width_mm=48.0,
        depth_mm=40.0,
        view="transverse 2 cm below the ASIS, patient's right on the left of the image",
    )
    return CaseModel(
        name=NAME,
        title=TITLE,
        description=DESCRIPTION,
        seed=2204,
        box_low=BOX_LOW,
        box_high=BOX_HIGH,
        paint=paint,
        translation=(-121.0, -68.0, -92.0),
        centrelines=centrelines,
        landmarks=landmarks,
        ultrasound=ultrasound,
    )
