"""Signed distance functions (SDFs) used to draw the demo anatomy.

Every function takes point coordinates as three float arrays ``x, y, z`` of one shape
(a 3D voxel grid, a 2D ultrasound plane, or a flat list of points), in millimetres in
the case's local frame, and returns an array of that shape: the signed distance in mm,
negative inside the shape. Shapes are combined with :func:`union` (min),
:func:`intersection` (max) and :func:`subtract`; a cortical shell of thickness ``t`` is
then simply ``-t < sdf <= 0``.

Where an exact distance is costly the functions return a close approximation that is
exact on the surface and has unit gradient near it, which is all the drawing needs.
"""

from __future__ import annotations

import numpy as np

FAR_MM = 1.0e4
"""Distance reported for points beyond a tube's reach (they are 'far away')."""
POLYLINE_SAMPLE_MM = 0.1
"""Step at which :func:`polyline_distance` samples a long polyline."""
EXACT_MAX_VERTICES = 16
"""Polylines with at most this many vertices get exact segment distances; longer ones
(smooth curves) a k-d tree over samples, which is faster for them."""


CROP_MARGIN_MM = 4.0
"""Bounded shapes are evaluated only within this distance of their bounding box; farther
points get :data:`FAR_MM`. Larger than any fillet (``smooth_union`` blend) used with them."""


def _near_points(x, y, z, low, high):
    """The points inside the box ``[low, high]`` (mm): ``(shape, flat indices, xs, ys, zs)``.
    Flat indexing keeps this cheap on large grids."""
    x, y, z = (np.ascontiguousarray(a) for a in np.broadcast_arrays(x, y, z))
    near = x >= low[0]
    near &= x <= high[0]
    near &= y >= low[1]
    near &= y <= high[1]
    near &= z >= low[2]
    near &= z <= high[2]
    flat = np.flatnonzero(near)
    return x.shape, flat, x.reshape(-1)[flat], y.reshape(-1)[flat], z.reshape(-1)[flat]


def _scatter(shape, flat, values, fill: float) -> np.ndarray:
    result = np.full(shape, fill, dtype=np.float32)
    result.reshape(-1)[flat] = values
    return result


def _cropped(x, y, z, low, high, evaluate) -> np.ndarray:
    """``evaluate(xs, ys, zs)`` on the points inside the box ``[low, high]`` (mm) only;
    :data:`FAR_MM` elsewhere."""
    shape, flat, xs, ys, zs = _near_points(x, y, z, low, high)
    values = evaluate(xs, ys, zs) if flat.size else np.zeros(0)
    return _scatter(shape, flat, values, FAR_MM)


def union(*sdfs: np.ndarray) -> np.ndarray:
    """Union of shapes: the point-wise minimum."""
    result = sdfs[0]
    for sdf in sdfs[1:]:
        result = np.minimum(result, sdf)
    return result


def intersection(*sdfs: np.ndarray) -> np.ndarray:
    """Intersection of shapes: the point-wise maximum."""
    result = sdfs[0]
    for sdf in sdfs[1:]:
        result = np.maximum(result, sdf)
    return result


def subtract(sdf: np.ndarray, cutter: np.ndarray) -> np.ndarray:
    """``sdf`` with the shape ``cutter`` removed."""
    return np.maximum(sdf, -cutter)


def smooth_union(a: np.ndarray, b: np.ndarray, *, blend_mm: float) -> np.ndarray:
    """Union with a fillet of about ``blend_mm`` where the two shapes meet (quadratic
    smooth minimum), so that joined bones and soft tissues look grown, not glued.

    Exactly ``min(a, b)`` wherever the two differ by ``blend_mm`` or more.
    """
    h = np.maximum(blend_mm - np.abs(a - b), 0.0) / blend_mm
    return (np.minimum(a, b) - 0.25 * blend_mm * h * h).astype(np.float32)


def ellipsoid(x, y, z, *, centre, radii) -> np.ndarray:
    """Axis-aligned ellipsoid with semi-axes ``radii`` (mm) about ``centre``.

    Uses the first-order distance estimate ``k0 (k0 - 1) / k1`` (k0 = |p / r|,
    k1 = |p / r^2|), exact on the surface and close to it within a few mm.
    """
    cx, cy, cz = (float(c) for c in centre)
    rx, ry, rz = (float(r) for r in radii)

    def evaluate(xs, ys, zs):
        px, py, pz = xs - cx, ys - cy, zs - cz
        k0 = np.sqrt((px / rx) ** 2 + (py / ry) ** 2 + (pz / rz) ** 2)
        k1 = np.sqrt((px / rx**2) ** 2 + (py / ry**2) ** 2 + (pz / rz**2) ** 2)
        return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)

    reach = np.array([rx, ry, rz]) + CROP_MARGIN_MM
    centre_array = np.array([cx, cy, cz])
    return _cropped(x, y, z, centre_array - reach, centre_array + reach, evaluate)


def ellipse_2d(u, v, *, radii) -> np.ndarray:
    """Ellipse centred at 0 in a 2D ``(u, v)`` plane with semi-axes ``radii`` (mm);
    the same distance estimate as :func:`ellipsoid`."""
    ru, rv = (float(r) for r in radii)
    k0 = np.sqrt((u / ru) ** 2 + (v / rv) ** 2)
    k1 = np.sqrt((u / ru**2) ** 2 + (v / rv**2) ** 2)
    return (k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)).astype(np.float32)




def _unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=float)
    return vector / np.linalg.norm(vector)


def polyline_distance(x, y, z, polyline, *, reach_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Distance from points to a polyline, and the arc length of the nearest point on it.

    Parameters
    ----------
    x, y, z : ndarray, mm
        Point coordinates, all of one shape.
    polyline : (M, 3) array_like, mm
        Vertices, M >= 2.
    reach_mm : float
        Only points closer than this to the polyline are computed; the others get
        :data:`FAR_MM` (keeps thin tubes cheap on large grids).

    Returns
    -------
    distance : ndarray, mm
        Same shape as ``x``.
    arc_mm : ndarray, mm
        Arc length from the first vertex to the nearest point on the polyline (0 for
        far points).

    Notes
    -----
    A polyline with few vertices is measured exactly, segment by segment. A longer one
    is resampled every :data:`POLYLINE_SAMPLE_MM` and the nearest sample found with a
    k-d tree, which overestimates the distance by at most ``h^2 / (8 d)`` at distance
    ``d`` (h the sample step): 0.001 mm on a 1 mm radius tube, 0.05 mm on the
    centreline itself.
    """
    vertices = np.asarray(polyline, dtype=np.float64)
    vertex_arc = polyline_arc_lengths(vertices)
    low = vertices.min(axis=0) - reach_mm
    high = vertices.max(axis=0) + reach_mm
    shape, flat, xs, ys, zs = _near_points(x, y, z, low, high)
    points = np.stack([xs, ys, zs], axis=-1).astype(np.float64)
    if len(vertices) <= EXACT_MAX_VERTICES:
        found, arc_found = _segments_distance(points, vertices, vertex_arc)
    else:
        from scipy.spatial import cKDTree

        n_samples = max(int(np.ceil(vertex_arc[-1] / POLYLINE_SAMPLE_MM)), 1) + 1
        sample_arc = np.linspace(0.0, vertex_arc[-1], n_samples)
        samples = np.stack([np.interp(sample_arc, vertex_arc, vertices[:, axis]) for axis in range(3)], axis=-1)
        found, nearest = cKDTree(samples).query(points, distance_upper_bound=reach_mm)
        arc_found = sample_arc[np.minimum(nearest, n_samples - 1)]
    hit = found <= reach_mm
    distance = _scatter(shape, flat[hit], found[hit], FAR_MM)
    arc = _scatter(shape, flat[hit], arc_found[hit], 0.0)
    return distance, arc


def _segments_distance(points: np.ndarray, vertices: np.ndarray, vertex_arc: np.ndarray):
    """Exact distance from ``(N, 3)`` points to a polyline with few vertices, and the
    arc length of the nearest point."""
    best = np.full(len(points), np.inf)
    best_arc = np.zeros(len(points))
    for start, end, start_arc in zip(vertices[:-1], vertices[1:], vertex_arc[:-1]):
        segment = end - start
        length_sq = float(segment @ segment)
        if length_sq == 0.0:
            continue
        t = np.clip((points - start) @ segment / length_sq, 0.0, 1.0)
        dist_sq = np.sum((points - start - t[:, None] * segment) ** 2, axis=1)
        closer = dist_sq < best
        best[closer] = dist_sq[closer]
        best_arc[closer] = start_arc + t[closer] * np.sqrt(length_sq)
    return np.sqrt(best), best_arc


def polyline_arc_lengths(polyline) -> np.ndarray:
    """Cumulative arc length (mm) at each vertex of a ``(M, 3)`` polyline; starts at 0."""
    vertices = np.asarray(polyline, dtype=float)
    steps = np.linalg.norm(np.diff(vertices, axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(steps)])


def tube(x, y, z, *, polyline, radius_mm) -> np.ndarray:
    """A tube (round cross-section) along a polyline.

    ``radius_mm`` is a number, or one radius per vertex (interpolated along the arc),
    which draws tapering vessels or a fusiform neuroma.
    """
    vertices = np.asarray(polyline, dtype=float)
    radii = np.broadcast_to(np.asarray(radius_mm, dtype=float), (len(vertices),))
    distance, arc = polyline_distance(x, y, z, vertices, reach_mm=float(radii.max()) + 2.0)
    if np.all(radii == radii[0]):
        local_radius = np.float32(radii[0])
    else:
        local_radius = np.interp(arc, polyline_arc_lengths(vertices), radii).astype(np.float32)
    return (distance - local_radius).astype(np.float32)


def ribbon(x, y, z, *, start, end, width_direction, half_width_mm, half_thickness_mm) -> np.ndarray:
    """A straight band with an elliptical cross-section, e.g. a strap muscle or a ligament.

    The band runs from ``start`` to ``end`` (mm); its width lies along
    ``width_direction`` (made perpendicular to the band's axis), its thickness
    perpendicular to both. The ends are cut flat.
    """
    start = np.asarray(start, dtype=float)
    end = np.asarray(end, dtype=float)
    axis = end - start
    length = float(np.linalg.norm(axis))
    axis = axis / length
    width = np.asarray(width_direction, dtype=float)
    width = _unit(width - (width @ axis) * axis)
    thickness = np.cross(axis, width)

    def evaluate(xs, ys, zs):
        px, py, pz = xs - start[0], ys - start[1], zs - start[2]
        along = px * axis[0] + py * axis[1] + pz * axis[2]
        across_w = px * width[0] + py * width[1] + pz * width[2]
        across_t = px * thickness[0] + py * thickness[1] + pz * thickness[2]
        radial = np.sqrt((across_w / half_width_mm) ** 2 + (across_t / half_thickness_mm) ** 2)
        section = (radial - 1.0) * min(half_width_mm, half_thickness_mm)
        return np.maximum(section, np.maximum(-along, along - length))

    reach = max(half_width_mm, half_thickness_mm) + CROP_MARGIN_MM
    low = np.minimum(start, end) - reach
    high = np.maximum(start, end) + reach
    return _cropped(x, y, z, low, high, evaluate)


def slab(x, y, z, *, point, normal, half_thickness_mm) -> np.ndarray:
    """A flat plate of thickness ``2 * half_thickness_mm`` centred on a plane."""
    n = _unit(normal)
    offset = (x - point[0]) * n[0] + (y - point[1]) * n[1] + (z - point[2]) * n[2]
    return (np.abs(offset) - half_thickness_mm).astype(np.float32)


def half_space(x, y, z, *, point, normal) -> np.ndarray:
    """The half-space behind a plane: negative on the side ``normal`` points away from."""
    n = _unit(normal)
    return ((x - point[0]) * n[0] + (y - point[1]) * n[1] + (z - point[2]) * n[2]).astype(np.float32)


def smooth_path(control_points, *, step_mm: float = 0.5) -> np.ndarray:
    """A smooth curve through control points, resampled every ``step_mm`` (mm).

    A cubic spline parametrised by chord length, so the curve passes through every
    control point without overshooting much between them. Returns ``(N, 3)``.
    """
    from scipy.interpolate import CubicSpline

    control = np.asarray(control_points, dtype=float)
    chord = polyline_arc_lengths(control)
    spline = CubicSpline(chord, control, axis=0, bc_type="natural")
    dense = spline(np.linspace(0.0, chord[-1], max(int(chord[-1] / (step_mm / 4)), 8)))
    arc = polyline_arc_lengths(dense)
    n_points = max(int(round(arc[-1] / step_mm)), 1) + 1
    targets = np.linspace(0.0, arc[-1], n_points)
    return np.stack([np.interp(targets, arc, dense[:, axis]) for axis in range(3)], axis=-1)
