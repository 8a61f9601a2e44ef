"""The body's outer surface (the skin) from a tissue map: where a line crosses it, its
normal, and how far a point is from it.

The body is every voxel that is not :attr:`Tissue.AIR`. Its surface is taken where a
Gaussian-smoothed body indicator (sigma two voxels, at least 1 mm) equals 0.5: on a
plane of voxels that is half-way between the last body voxel centre and the first air
voxel centre (the voxels' own faces); a surface curved with radius R moves inwards by
about sigma^2 / 2R (0.05 mm for sigma 3 mm on a head). The smoothing also gives the
surface normal (minus the gradient) free of the voxel staircase (within 1 degree on a
tilted plane).

Beyond the edges of the image the body continues as it is at the edge (a CT's field of
view cuts through the patient), except beyond a face of the array that is mostly skin:
that face is the skin itself, with air beyond (the transducer face of an ultrasound
image, see :func:`planner.anatomy.tissues.tissue_for_ultrasound`).

All work is done on small crops around the points asked about, so the cost does not grow
with the size of the scan.
"""

from __future__ import annotations

import numpy as np

from planner.labels import Tissue
from planner.volume import Volume

SMOOTHING_VOXELS = 2.0
"""Gaussian sigma of the body indicator, in voxels (at least :data:`SMOOTHING_MIN_MM`)."""
SMOOTHING_MIN_MM = 1.0
SKIN_FACE_FRACTION = 0.5
"""An array face whose voxels are more than this fraction skin is a skin surface."""
SEARCH_MM = 15.0
"""First search radius for the nearest skin point, mm (doubled until something is found)."""


def skin_faces(labels: Volume) -> frozenset[tuple[int, int]]:
    """Faces of the array that are skin, as ``(array axis, 0 or 1)`` for the low or high end.

    A face counts when more than half of its voxels are :attr:`Tissue.SKIN`.
    """
    array = np.asarray(labels.array)
    faces = set()
    for axis in range(3):
        for side in (0, 1):
            face = np.take(array, 0 if side == 0 else array.shape[axis] - 1, axis=axis)
            if face.size and np.mean(face == Tissue.SKIN) > SKIN_FACE_FRACTION:
                faces.add((axis, side))
    return frozenset(faces)


def _sigma_voxels(labels: Volume) -> np.ndarray:
    """Smoothing sigma per array axis ``(k, j, i)``, voxels."""
    spacing_kji = labels.spacing[::-1]
    sigma_mm = max(SMOOTHING_VOXELS * float(spacing_kji.max()), SMOOTHING_MIN_MM)
    return sigma_mm / spacing_kji


def _body_field(labels: Volume, low_kji, high_kji, *, faces=None):
    """Smoothed body indicator on the index box ``[low, high)`` (may reach beyond the array).

    Returns ``(field, low)``: a float32 array and the index ``(k, j, i)`` of its first voxel.
    """
    from scipy import ndimage

    faces = skin_faces(labels) if faces is None else faces
    sigma = _sigma_voxels(labels)
    margin = np.ceil(4 * sigma).astype(int) + 1
    shape = labels.array.shape
    want_low = np.asarray(low_kji, dtype=int) - margin
    want_high = np.maximum(np.asarray(high_kji, dtype=int) + margin, want_low + 1)
    # Clamped indices repeat the edge voxels beyond the array (the body goes on there)...
    ranges = [np.arange(want_low[axis], want_high[axis]) for axis in range(3)]
    clamped = [np.clip(r, 0, shape[axis] - 1) for axis, r in enumerate(ranges)]
    body = np.asarray(labels.array)[np.ix_(*clamped)] != Tissue.AIR
    # ...except beyond a skin face, where there is air.
    for axis, side in faces:
        beyond = ranges[axis] < 0 if side == 0 else ranges[axis] >= shape[axis]
        if np.any(beyond):
            index = [slice(None)] * 3
            index[axis] = beyond
            body[tuple(index)] = False
    field = ndimage.gaussian_filter(body.astype(np.float32), sigma=sigma, mode="nearest")
    return field, want_low


def inside_body(labels: Volume, points, *, faces=None) -> np.ndarray:
    """True where world points ``(..., 3)`` mm lie in a body voxel (nearest voxel).

    Points beyond the image take the class of the nearest edge voxel, or air beyond a
    skin face.
    """
    points = np.asarray(points, dtype=float)
    faces = skin_faces(labels) if faces is None else faces
    ijk = np.rint(labels.world_to_index(points.reshape(-1, 3))).astype(int)
    upper = np.array(labels.shape_xyz) - 1
    clamped = np.clip(ijk, 0, upper)
    result = np.asarray(labels.array)[clamped[:, 2], clamped[:, 1], clamped[:, 0]] != Tissue.AIR
    for axis_kji, side in faces:
        axis_ijk = 2 - axis_kji
        beyond = ijk[:, axis_ijk] < 0 if side == 0 else ijk[:, axis_ijk] > upper[axis_ijk]
        result[beyond] = False
    return result.reshape(points.shape[:-1])


def _sample(field: np.ndarray, low_kji, labels: Volume, points, *, order: int = 1) -> np.ndarray:
    from scipy import ndimage

    ijk = labels.world_to_index(np.asarray(points, dtype=float).reshape(-1, 3))
    coords = (ijk[:, ::-1] - np.asarray(low_kji)).T
    return ndimage.map_coordinates(field, coords, order=order, mode="nearest")


def _box_around(labels: Volume, points, radius_mm: float):
    ijk = labels.world_to_index(np.asarray(points, dtype=float).reshape(-1, 3))
    reach = np.ceil(radius_mm / labels.spacing)
    low = np.floor(ijk.min(axis=0) - reach).astype(int)[::-1]
    high = np.ceil(ijk.max(axis=0) + reach).astype(int)[::-1] + 1
    return low, high


def skin_crossing(labels: Volume, entry, tip, *, beyond_entry_mm: float = 50.0) -> np.ndarray | None:
    """Where the line from ``entry`` towards ``tip`` enters the body (world mm), or None.

    The line is followed from ``beyond_entry_mm`` outside the entry (so an entry placed
    inside the body still finds the skin above it) to the tip; the answer is the first
    point where it passes from air into the body, refined to the smoothed surface.
    ``None`` when the line never passes from air into the body before the tip.
    """
    entry, tip = np.asarray(entry, dtype=float), np.asarray(tip, dtype=float)
    direction = tip - entry
    length = float(np.linalg.norm(direction))
    if length < 1e-9:
        return None
    direction /= length
    step = 0.25 * float(labels.spacing.min())
    s = np.arange(-beyond_entry_mm, length + step / 2, step)
    faces = skin_faces(labels)
    body = inside_body(labels, entry + s[:, None] * direction, faces=faces)
    entering = np.flatnonzero(~body[:-1] & body[1:])
    if entering.size == 0:
        return None
    s_out, s_in = s[entering[0]], s[entering[0] + 1]
    # Refine on the smoothed indicator along a short stretch of the line.
    reach = 3 * float(labels.spacing.max()) + 4 * float(_sigma_voxels(labels).max() * labels.spacing.max())
    fine = np.linspace(s_out - reach, s_in + reach, 400)
    stretch = entry + fine[:, None] * direction
    low, high = _box_around(labels, stretch, 0.0)
    field, low = _body_field(labels, low, high, faces=faces)
    values = _sample(field, low, labels, stretch)
    rising = np.flatnonzero((values[:-1] < 0.5) & (values[1:] >= 0.5))
    if rising.size == 0:
        crossing = 0.5 * (s_out + s_in)
    else:
        # The rising crossing nearest the coarse one.
        pick = rising[np.argmin(np.abs(fine[rising] - 0.5 * (s_out + s_in)))]
        v0, v1 = values[pick], values[pick + 1]
        crossing = fine[pick] + (0.5 - v0) / (v1 - v0) * (fine[pick + 1] - fine[pick])
    return entry + crossing * direction


def skin_normal(labels: Volume, point) -> np.ndarray:
    """Outward unit normal (world) of the body surface near ``point`` (world mm), shape (3,).

    Minus the gradient of the smoothed body indicator, taken in voxel indices and carried
    to world by the inverse transpose of the affine (so oblique and anisotropic grids
    give the world normal). ``nan`` where the indicator is flat (far from any surface).
    """
    point = np.asarray(point, dtype=float)
    low, high = _box_around(labels, point, 3 * float(labels.spacing.max()))
    field, low = _body_field(labels, low, high)
    gradient_kji = np.stack(np.gradient(field), axis=0)
    grad = np.array([_sample(g, low, labels, point)[0] for g in gradient_kji])[::-1]  # d/di, d/dj, d/dk
    world = np.linalg.inv(labels.affine[:3, :3]).T @ grad
    norm = float(np.linalg.norm(world))
    if norm < 1e-9:
        return np.full(3, np.nan)
    return -world / norm


def distance_to_skin(labels: Volume, point, *, search_mm: float = SEARCH_MM) -> float:
    """Signed distance (mm) from a world point to the body surface: positive outside the
    body (above the skin), negative inside; ``nan`` when the image holds no body surface.

    The surface is the 0.5 level of the smoothed body indicator (marching cubes on a crop
    around the point, widened until a surface is found); the distance is to the nearest
    surface vertex, which lies within a small fraction of a voxel of the true nearest point.
    """
    from skimage.measure import marching_cubes

    point = np.asarray(point, dtype=float)
    faces = skin_faces(labels)
    radius = float(search_mm)
    extent = float(np.max(np.array(labels.shape_xyz) * labels.spacing))
    while True:
        low, high = _box_around(labels, point, radius)
        field, low = _body_field(labels, low, high, faces=faces)
        if field.min() < 0.5 < field.max():
            vertices, _, _, _ = marching_cubes(field, 0.5)
            world = labels.index_to_world((vertices + low)[:, ::-1])
            distance = float(np.min(np.linalg.norm(world - point, axis=1)))
            if distance <= radius or radius > 2 * extent:
                inside = _sample(field, low, labels, point)[0] >= 0.5
                return -distance if inside else distance
        if radius > 2 * extent:
            return float("nan")
        radius *= 2
