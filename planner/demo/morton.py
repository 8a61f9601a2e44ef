"""Demo case "morton": a Morton neuroma in the third web space of the right forefoot.

Local frame (mm) = world axes for a standing or supine patient with the ankle at 90
degrees: x to the patient's left (medial for the right foot), y posterior (towards the
heel; the toes point to -y), z superior (the sole faces -z, the dorsum +z). The origin
is on the plantar skin under the gap between the 3rd and 4th metatarsal heads.

Drawn: plantar skin (2.6 mm) and fat pad, dorsal skin; metatarsals 2-5 (heads 13 mm
wide with a 6 mm gap between the 3rd and 4th heads; shafts with cortex and medulla)
and the bases of the proximal phalanges; the toes beyond the web spaces; plantar
plates, the deep transverse metatarsal ligament (DTML) joining them; flexor tendons
below and extensor tendons above each ray; interosseous muscles between the shafts and
plantar intrinsic muscles behind the heads; the common plantar digital nerve of the
third web space with a fusiform neuroma (about 5 mm across, 11 mm long) just distal to
and below the DTML, splitting into proper digital nerves to the 3rd and 4th toes; the
common plantar digital artery and vein beside it.
"""

from __future__ import annotations

import numpy as np

from planner.demo import _shapes as shapes
from planner.demo._assemble import CaseModel, Centreline, UltrasoundView
from planner.demo._materials import Material

NAME = "morton"
TITLE = "Morton neuroma, third web space of the right foot"
DESCRIPTION = (
    "A Morton neuroma is a fusiform thickening of the common plantar digital nerve, most often "
    "in the third web space between the 3rd and 4th metatarsal heads, just below and distal to "
    "the deep transverse metatarsal ligament. Freezing it can relieve forefoot pain when "
    "padding, shoe changes and injections have failed. Aim at the neuroma from the dorsum "
    "between the metatarsal heads (or from the sole under ultrasound), and spare the digital "
    "artery and vein beside it and the weight-bearing plantar skin and fat pad."
)

PLANTAR_SKIN_MM = 2.6
DORSAL_SKIN_MM = 1.4
HEAD_HEIGHT_MM = 20.0  # local z of the metatarsal heads' centres
WEB_Y_MM = -22.0  # the web spaces between the toes start here
NERVE_RADIUS_MM = 1.0
NEUROMA_CENTRE_Y_MM = -5.0
NEUROMA_PEAK_RADIUS_MM = 2.55
NEUROMA_LENGTH_SCALE_MM = 3.8

# Rays 2-5: centre x of the metatarsal head (mm), head semi-axes (x, y, z), toe semi-axes (x, z).
RAYS = {
    2: {"x": 28.0, "head": (6.5, 8.5, 7.5), "toe": (9.5, 10.5)},
    3: {"x": 9.5, "head": (6.5, 8.0, 7.5), "toe": (9.0, 10.5)},
    4: {"x": -9.5, "head": (6.5, 8.0, 7.5), "toe": (9.0, 10.5)},
    5: {"x": -27.0, "head": (5.5, 7.0, 6.5), "toe": (8.0, 9.5)},
}
SHAFT_RADIUS_MM = 4.2
CORTEX_MM = 1.3
DTML = {"start": (-33.0, -1.5, 13.6), "end": (33.0, -1.5, 13.6), "half_width_mm": 4.5, "half_thickness_mm": 1.3}

NERVE_CONTROL = [(0.6, 45.0, 10.2), (0.4, 20.0, 10.4), (0.1, 5.0, 10.7), (0.0, -5.0, 10.9), (0.0, -14.0, 11.5)]
# Proper digital nerve to the lateral side of the 3rd toe (mirrored: medial side of the 4th).
BRANCH_CONTROL = [(0.0, -14.0, 11.5), (3.2, -18.0, 12.4), (5.0, -23.0, 13.4), (5.8, -45.0, 14.2)]
# The artery and vein end where they divide at the web (their digital branches are not drawn).
ARTERY_CONTROL = [(4.2, 45.0, 10.6), (3.9, 10.0, 11.0), (3.9, -5.0, 11.2), (3.4, -14.0, 11.8)]
VEIN_CONTROL = [(-4.2, 45.0, 10.6), (-3.9, 10.0, 11.0), (-3.9, -5.0, 11.2), (-3.4, -14.0, 11.8)]

BOX_LOW = (-32.0, -38.0, -4.0)
BOX_HIGH = (32.0, 30.0, 40.0)


def plantar_skin_z(x, y):
    """Height (local z, mm) of the sole: flat under the heads, rising into the arch."""
    return (0.0025 * x * x + 0.003 * np.maximum(y, 0.0) ** 2).astype(np.float32)


def dorsal_skin_z(x, y):
    """Height (local z, mm) of the dorsum: domed across, thicker towards the midfoot."""
    return (36.0 - 0.006 * x * x + 0.05 * y).astype(np.float32)


def _body(x, y, z) -> np.ndarray:
    """Signed distance-like field of the forefoot and toes (negative inside)."""
    forefoot = np.maximum(plantar_skin_z(x, y) - z, z - dorsal_skin_z(x, y))
    forefoot = np.maximum(forefoot, WEB_Y_MM - y)
    toes = [
        np.maximum(shapes.ellipse_2d(x - ray["x"], z - 18.0, radii=ray["toe"]), y - (WEB_Y_MM + 4.0))
        for ray in RAYS.values()
    ]
    return shapes.smooth_union(forefoot, shapes.union(*toes), blend_mm=4.0)


def neuroma_radius(arc_y):
    """Nerve radius (mm) along the nerve as a function of its y position: fusiform swelling."""
    offset = (np.asarray(arc_y, dtype=float) - NEUROMA_CENTRE_Y_MM) / NEUROMA_LENGTH_SCALE_MM
    return NERVE_RADIUS_MM + (NEUROMA_PEAK_RADIUS_MM - NERVE_RADIUS_MM) * np.exp(-offset * offset)


def _mirror(points):
    return [(-px, py, pz) for px, py, pz in points]


def paint(x, y, z) -> np.ndarray:
    """Materials at local points (float32 arrays of one shape, mm)."""
    body = _body(x, y, z)
    materials = np.full(np.shape(x), Material.AIR, dtype=np.uint8)
    materials[body <= 0.0] = Material.FAT
    inside = body <= 0.0
    # Interossei between the shafts (rounded off just behind the heads; the bones drawn
    # later trim them), and the transverse head of adductor hallucis across the sole
    # behind the heads.
    ray_x = sorted(ray["x"] for ray in RAYS.values())
    for left, right in zip(ray_x[:-1], ray_x[1:]):
        middle = 0.5 * (left + right)
        interosseus = shapes.tube(x, y, z, polyline=[(middle, 45.0, 22.5), (middle, 3.0, 20.5)], radius_mm=6.5)
        materials[inside & (interosseus <= 0.0)] = Material.MUSCLE
    adductor = shapes.ribbon(
        x, y, z, start=(-40.0, 17.0, 10.0), end=(40.0, 17.0, 10.0), width_direction=(0.0, 1.0, 0.0),
        half_width_mm=8.0, half_thickness_mm=3.2,
    )
    materials[inside & (adductor <= 0.0)] = Material.MUSCLE

    for ray in RAYS.values():
        rx = ray["x"]
        flexor = shapes.tube(x, y, z, polyline=[(rx, 45.0, 9.0), (rx, -40.0, 11.5)], radius_mm=2.0)
        extensor = shapes.tube(x, y, z, polyline=[(rx, 45.0, 32.0), (rx, -40.0, 27.5)], radius_mm=1.4)
        materials[(flexor <= 0.0) | (extensor <= 0.0)] = Material.TENDON
        plate = shapes.ribbon(
            x, y, z, start=(rx, -11.0, 12.0), end=(rx, 3.0, 12.5), width_direction=(1.0, 0.0, 0.0),
            half_width_mm=5.0, half_thickness_mm=1.5,
        )
        materials[plate <= 0.0] = Material.LIGAMENT
    dtml = shapes.ribbon(x, y, z, width_direction=(0.0, 1.0, 0.0), **DTML)
    materials[dtml <= 0.0] = Material.LIGAMENT

    for ray in RAYS.values():
        rx = ray["x"]
        head = shapes.ellipsoid(x, y, z, centre=(rx, 0.0, HEAD_HEIGHT_MM), radii=ray["head"])
        shaft = shapes.tube(x, y, z, polyline=[(rx, 4.0, 20.5), (0.9 * rx, 45.0, 25.0)], radius_mm=SHAFT_RADIUS_MM)
        metatarsal = shapes.smooth_union(head, shaft, blend_mm=3.0)
        base = shapes.ellipsoid(x, y, z, centre=(rx, -12.5, 19.0), radii=(6.0, 3.5, 6.0))
        phalanx_shaft = shapes.tube(x, y, z, polyline=[(rx, -11.0, 18.5), (rx, -45.0, 17.0)], radius_mm=4.3)
        phalanx = shapes.smooth_union(base, phalanx_shaft, blend_mm=2.0)
        for bone in (metatarsal, phalanx):
            materials[bone <= 0.0] = Material.CORTICAL_BONE
            materials[bone <= -CORTEX_MM] = Material.CANCELLOUS_BONE

    for control, material, radius in ((ARTERY_CONTROL, Material.ARTERY, 0.75), (VEIN_CONTROL, Material.VEIN, 0.85)):
        vessel = shapes.tube(x, y, z, polyline=shapes.smooth_path(control), radius_mm=radius)
        materials[vessel <= 0.0] = material
    trunk_path = shapes.smooth_path(NERVE_CONTROL)
    trunk = shapes.tube(x, y, z, polyline=trunk_path, radius_mm=neuroma_radius(trunk_path[:, 1]))
    # The swollen part (radius more than ~15 % above the nerve's) is the neuroma.
    swollen = np.abs(y - NEUROMA_CENTRE_Y_MM) < 1.5 * NEUROMA_LENGTH_SCALE_MM
    materials[(trunk <= 0.0) & swollen] = Material.NEUROMA
    materials[(trunk <= 0.0) & ~swollen] = Material.NERVE
    for branch in (BRANCH_CONTROL, _mirror(BRANCH_CONTROL)):
        digital = shapes.tube(x, y, z, polyline=shapes.smooth_path(branch), radius_mm=0.8)
        materials[digital <= 0.0] = Material.NERVE

    skin_mm = np.where(z < 15.0, PLANTAR_SKIN_MM, DORSAL_SKIN_MM)
    materials[(body <= 0.0) & (body > -skin_mm)] = Material.SKIN
    return materials


def model() -> CaseModel:
    """The Morton neuroma case's geometry."""
    trunk_path = shapes.smooth_path(NERVE_CONTROL)
    neuroma_index = int(np.argmin(np.abs(trunk_path[:, 1] - NEUROMA_CENTRE_Y_MM)))
    neuroma_centre = tuple(trunk_path[neuroma_index])
    nx, ny, _ = neuroma_centre
    centrelines = [
        Centreline("common_plantar_digital_nerve_3", trunk_path, NERVE_RADIUS_MM, "nerve", target=True,
                   radii_mm=neuroma_radius(trunk_path[:, 1])),
        Centreline("proper_plantar_digital_nerve_3_lateral", shapes.smooth_path(BRANCH_CONTROL), 0.8, "nerve"),
        Centreline("proper_plantar_digital_nerve_4_medial", shapes.smooth_path(_mirror(BRANCH_CONTROL)), 0.8, "nerve"),
        Centreline("common_plantar_digital_artery_3", shapes.smooth_path(ARTERY_CONTROL), 0.75, "artery"),
        Centreline("common_plantar_digital_vein_3", shapes.smooth_path(VEIN_CONTROL), 0.85, "vein"),
    ]
    landmarks = {
        "neuroma_centre": neuroma_centre,
        "target_nerve_point": neuroma_centre,
        "metatarsal_head_3": (RAYS[3]["x"], 0.0, HEAD_HEIGHT_MM),
        "metatarsal_head_4": (RAYS[4]["x"], 0.0, HEAD_HEIGHT_MM),
        "dtml_centre": (0.0, DTML["start"][1], DTML["start"][2]),
        "skin_entry_suggestion": (nx, ny, float(dorsal_skin_z(np.float32(nx), np.float32(ny)))),
        "skin_entry_plantar": (nx, ny, float(plantar_skin_z(np.float32(nx), np.float32(ny)))),
    }
    ultrasound = UltrasoundView(
        probe_centre=(0.0, NEUROMA_CENTRE_Y_MM, 0.0),
        lateral=(-1.0, 0.0, 0.0),
        depth=(0.0, 0.0, 1.0),
        width_mm=40.0,
        depth_mm=40.0,
        view="plantar short axis across the 2nd-5th metatarsal heads at the neuroma, medial (2nd ray) on the left",
    )
    return CaseModel(
        name=NAME,
        title=TITLE,
        description=DESCRIPTION,
        seed=3403,
        box_low=BOX_LOW,
        box_high=BOX_HIGH,
        paint=paint,
        translation=(-88.0, -140.0, -860.0),
        centrelines=centrelines,
        landmarks=landmarks,
        ultrasound=ultrasound,
    )
