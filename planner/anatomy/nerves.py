"""Nerves: a centreline in world millimetres with a radius, and three ways to make one.

Nerves are what cryoneurolysis freezes (the target) or spares. A :class:`Nerve` is
plain data: a name, an ordered ``(N, 3)`` centreline in world LPS mm, a radius and a
target flag; the plan file stores the same as a
:class:`planner.plan.PlanNerve`.

Three ways to make one:

- :func:`nerves_from_labels`: from a label map (or mask): one nerve per connected
  component, centreline by 3D skeletonisation ordered along the longest path through
  the skeleton, radius from the component's volume and local radii from the distance
  transform.
- :func:`trace_nerve`: a minimal-cost path through an image between two or more clicked
  points, on a cost built from similarity to the intensity at the clicked points and
  from tubularity (Frangi's vesselness). Nerves are invisible on CT, so this also follows
  landmarks: the dark groove under a rib, a canal in bone.
- :func:`nerve_from_polyline`: the clicked points themselves, with a radius.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from planner.errors import InputError
from planner.labels import Tissue
from planner.volume import Volume

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pyvista

    from planner.plan import PlanNerve

DEFAULT_STEP_MM = 0.5
"""Spacing of centreline points after resampling, mm."""
MIN_NERVE_LENGTH_MM = 3.0
"""Components of a nerve label map shorter than this are dropped (specks, partial volume)."""
SKELETON_SMOOTHING_MM = 1.0
"""Gaussian smoothing (sigma, mm along the path) that removes the skeleton's voxel staircase."""
TRIM_RADII = 1.0
"""Skeleton path dropped at each end before its tangent is carried out to the end, radii."""
TANGENT_RADII = 2.0
"""Length of path the end tangent is fitted to, radii."""
RECENTRE_PASSES = 2
TRACE_MARGIN_MM = 8.0
"""Least room around the clicked points that a traced path may use, mm."""


# ============================================================================ the Nerve
def _as_points(points, what: str) -> np.ndarray:
    try:
        array = np.array(points, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{what}: expected (N, 3) points in mm") from None
    if array.ndim != 2 or array.shape[1] != 3:
        raise InputError(f"{what}: expected (N, 3) points in mm, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{what}: points must be finite numbers (mm)")
    return array


def _drop_repeats(points: np.ndarray, radii: np.ndarray | None, tolerance_mm: float = 1e-9):
    """Remove points that repeat their predecessor (zero-length segments)."""
    if len(points) < 2:
        return points, radii
    keep = np.ones(len(points), dtype=bool)
    keep[1:] = np.linalg.norm(np.diff(points, axis=0), axis=1) > tolerance_mm
    return points[keep], (radii[keep] if radii is not None else None)


@dataclass(eq=False)
class Nerve:
    """A nerve as a centreline with a radius.

    Parameters
    ----------
    name : str
        E.g. ``"intercostal_T7"``.
    centreline : (N, 3) ndarray, mm
        World LPS points ordered along the nerve, N >= 2; points repeating their
        predecessor are dropped.
    radius_mm : float
        Radius of the nerve, mm (the mean where ``radii_mm`` varies).
    target : bool
        True for a nerve to freeze, False for one to spare.
    radii_mm : (N,) ndarray or None, mm
        Local radius at each centreline point where it varies (a neuroma, a label map);
        ``None``: ``radius_mm`` everywhere.

    Raises
    ------
    InputError
        For fewer than two distinct points, non-finite points, a radius that is not
        positive, or ``radii_mm`` of the wrong length.
    """

    name: str
    centreline: np.ndarray
    radius_mm: float
    target: bool = True
    radii_mm: np.ndarray | None = None

    def __post_init__(self) -> None:
        what = f"nerve {self.name!r}"
        points = _as_points(self.centreline, f"{what} centreline")
        radii = None
        if self.radii_mm is not None:
            radii = np.asarray(self.radii_mm, dtype=float).reshape(-1)
            if radii.shape != (len(points),) or not np.all(np.isfinite(radii)) or np.any(radii <= 0):
                raise InputError(f"{what}: radii_mm needs one positive radius (mm) per centreline point")
        points, radii = _drop_repeats(points, radii)
        if len(points) < 2:
            raise InputError(f"{what}: a nerve needs at least 2 distinct centreline points")
        try:
            radius = float(self.radius_mm)
        except (TypeError, ValueError):
            radius = float("nan")
        if not np.isfinite(radius) or radius <= 0:
            raise InputError(f"{what}: radius_mm must be > 0 mm, got {self.radius_mm!r}")
        self.centreline, self.radii_mm, self.radius_mm = points, radii, radius
        self.target = bool(self.target)

    # ------------------------------------------------------------------ geometry
    def arc_lengths(self) -> np.ndarray:
        """Distance along the centreline from its first point to each point, mm, shape (N,)."""
        steps = np.linalg.norm(np.diff(self.centreline, axis=0), axis=1)
        return np.concatenate([[0.0], np.cumsum(steps)])

    @property
    def length_mm(self) -> float:
        """Length of the centreline, mm."""
        return float(self.arc_lengths()[-1])

    def local_radii_mm(self) -> np.ndarray:
        """Radius at each centreline point, mm, shape (N,)."""
        if self.radii_mm is not None:
            return self.radii_mm
        return np.full(len(self.centreline), self.radius_mm)

    def point_at(self, arc_mm) -> np.ndarray:
        """World points ``(..., 3)`` at distances ``arc_mm`` (mm, clipped to the ends) along the centreline."""
        arc = np.clip(np.asarray(arc_mm, dtype=float), 0.0, self.length_mm)
        along = self.arc_lengths()
        return np.stack([np.interp(arc, along, self.centreline[:, axis]) for axis in range(3)], axis=-1)

    def resampled(self, step_mm: float = DEFAULT_STEP_MM, *, keep_vertices: bool = False) -> "Nerve":
        """The same nerve with new points along the centreline, both ends kept.

        Parameters
        ----------
        step_mm : float
            Spacing of the new points, mm.
        keep_vertices : bool
            False: points every ``step_mm`` along the arc (the last step shorter when the
            length is not a multiple of it); sharp corners between them are cut. True:
            every original point is kept and each segment is split into equal parts no
            longer than ``step_mm``, so the shape and length are exactly the same.

        Local radii are interpolated along the arc.
        """
        if not np.isfinite(step_mm) or step_mm <= 0:
            raise InputError(f"nerve {self.name!r}: step_mm must be > 0 mm, got {step_mm!r}")
        along = self.arc_lengths()
        if keep_vertices:
            parts = [np.linspace(a, b, int(np.ceil((b - a) / step_mm - 1e-9)) + 1)[:-1]
                     for a, b in zip(along[:-1], along[1:])]
            arc = np.append(np.concatenate(parts), along[-1])
        else:
            arc = np.arange(0.0, along[-1], step_mm)
            arc = np.append(arc, along[-1]) if along[-1] - arc[-1] > 1e-9 else arc
        points = self.point_at(arc)
        if keep_vertices:
            vertex = np.searchsorted(arc, along)  # exact copies, free of interpolation round-off
            points[vertex] = self.centreline
        radii = None if self.radii_mm is None else np.interp(arc, along, self.radii_mm)
        return Nerve(self.name, points, self.radius_mm, target=self.target, radii_mm=radii)

    def distance_to(self, points) -> np.ndarray:
        """Distance (mm) from world points ``(..., 3)`` to the centreline (not its surface).

        Subtract :meth:`local_radii_mm` or ``radius_mm`` for the distance to the nerve's surface.
        """
        distance, _ = _distance_to_polyline(np.asarray(points, dtype=float), self.centreline)
        return distance

    # ------------------------------------------------------------------ conversion
    def tube(self, *, n_sides: int = 24) -> "pyvista.PolyData":
        """A capped tube surface around the centreline (world mm), for display.

        Uses the local radii when the nerve has them; the point array ``"radius_mm"``
        holds the radius along the line.
        """
        import pyvista as pv

        line = pv.lines_from_points(self.centreline)
        line.point_data["radius_mm"] = self.local_radii_mm()
        if self.radii_mm is None:
            return line.tube(radius=self.radius_mm, n_sides=n_sides, capping=True)
        return line.tube(scalars="radius_mm", absolute=True, n_sides=n_sides, capping=True)

    def to_plan(self, *, decimals: int = 3) -> "PlanNerve":
        """The plan file's entry for this nerve (points rounded to ``decimals`` mm digits)."""
        from planner.plan import PlanNerve

        points = tuple(tuple(round(float(c), decimals) for c in point) for point in self.centreline)
        return PlanNerve(self.name, points, round(float(self.radius_mm), decimals), bool(self.target))

    @classmethod
    def from_plan(cls, entry) -> "Nerve":
        """A nerve from a plan's :class:`~planner.plan.PlanNerve`, or from any object with
        ``name``, ``points``, ``radius_mm`` and ``target`` (e.g. a demo
        :class:`~planner.demo.NerveLine`, whose ``radii_mm`` is kept when set)."""
        radii = getattr(entry, "radii_mm", None)
        return cls(entry.name, np.asarray(entry.points, dtype=float), float(entry.radius_mm),
                   target=bool(getattr(entry, "target", True)), radii_mm=radii)

    def __repr__(self) -> str:
        role = "target" if self.target else "spare"
        return (
            f"Nerve({self.name!r}, {len(self.centreline)} points, {self.length_mm:.1f} mm, "
            f"r={self.radius_mm:.2g} mm, {role})"
        )


def _distance_to_polyline(points: np.ndarray, polyline: np.ndarray):
    """Distance (mm) from points ``(..., 3)`` to a polyline ``(N, 3)``, and the arc length of
    the closest point on it (mm), both shape ``(...)``."""
    shape = points.shape[:-1]
    flat = points.reshape(-1, 3)
    starts, ends = polyline[:-1], polyline[1:]
    segment = ends - starts
    length_sq = np.maximum(np.einsum("ij,ij->i", segment, segment), 1e-18)
    arc_at_start = np.concatenate([[0.0], np.cumsum(np.sqrt(length_sq))[:-1]])
    best = np.full(len(flat), np.inf)
    best_arc = np.zeros(len(flat))
    # Chunks of points keep the (points x segments) temporaries small.
    chunk = max(1, 2_000_000 // max(len(segment), 1))
    for first in range(0, len(flat), chunk):
        p = flat[first : first + chunk]
        t = np.einsum("pij,ij->pi", p[:, None, :] - starts[None], segment) / length_sq
        t = np.clip(t, 0.0, 1.0)
        closest = starts[None] + t[..., None] * segment[None]
        distance = np.linalg.norm(p[:, None, :] - closest, axis=-1)
        index = np.argmin(distance, axis=1)
        rows = np.arange(len(p))
        best[first : first + chunk] = distance[rows, index]
        best_arc[first : first + chunk] = arc_at_start[index] + t[rows, index] * np.sqrt(length_sq[index])
    return best.reshape(shape), best_arc.reshape(shape)


def _smooth_path(points: np.ndarray, sigma_mm: float, *, keep_ends: bool = True) -> np.ndarray:
    """Gaussian smoothing of an ordered point list along its arc (sigma in mm).

    The ends are padded by point reflection (``2 p0 - p_k``), which keeps straight lines
    straight and end tangents unbiased.
    """
    from scipy.ndimage import gaussian_filter1d

    if len(points) < 3 or sigma_mm <= 0:
        return points
    step = float(np.mean(np.linalg.norm(np.diff(points, axis=0), axis=1)))
    sigma = sigma_mm / max(step, 1e-9)
    pad = min(len(points) - 1, int(np.ceil(4 * sigma)))
    head = 2 * points[0] - points[1 : pad + 1][::-1]
    tail = 2 * points[-1] - points[-pad - 1 : -1][::-1]
    padded = np.concatenate([head, points, tail])
    smoothed = gaussian_filter1d(padded, sigma, axis=0, mode="nearest")[pad : pad + len(points)]
    if keep_ends:
        smoothed[0], smoothed[-1] = points[0], points[-1]
    return smoothed


# ============================================================================ (c) polyline
def nerve_from_polyline(points, radius_mm: float, *, name: str = "nerve", target: bool = True) -> Nerve:
    """A nerve through given world points (mm), e.g. clicked along a landmark.

    Parameters
    ----------
    points : (N, 3) array_like, mm
        World LPS points in order along the nerve, N >= 2.
    radius_mm : float
        Nerve radius, mm.
    name : str
        Nerve name.
    target : bool
        True for the nerve to freeze.

    Raises
    ------
    InputError
        For fewer than two distinct points or a radius that is not positive.
    """
    return Nerve(name, _as_points(points, f"nerve {name!r} points"), radius_mm, target=target)


# ============================================================================ (a) labels
_NEIGHBOUR_OFFSETS = np.array(
    [(dk, dj, di) for dk in (-1, 0, 1) for dj in (-1, 0, 1) for di in (-1, 0, 1) if (dk, dj, di) > (0, 0, 0)]
)
"""Half of the 26-neighbourhood: each skeleton edge is found once."""


def _longest_skeleton_path(skeleton: np.ndarray, step_length_kji) -> np.ndarray:
    """Voxel indices ``(M, 3)`` (k, j, i) of the longest shortest path through a 3D skeleton.

    The skeleton's voxels are graph nodes joined to their 26 neighbours with edges as long
    as the world step between them (``step_length_kji(offset)``); the path runs between
    the two ends of the graph's diameter, found by two Dijkstra sweeps from the largest
    connected piece. Side branches are left out.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components, dijkstra

    nodes = np.argwhere(skeleton)
    if len(nodes) < 2:
        return nodes
    index = np.full(skeleton.shape, -1, dtype=np.int64)
    index[tuple(nodes.T)] = np.arange(len(nodes))
    rows, cols, weights = [], [], []
    shape = np.array(skeleton.shape)
    for offset in _NEIGHBOUR_OFFSETS:
        target = nodes + offset
        inside = np.all((target >= 0) & (target < shape), axis=1)
        neighbour = np.full(len(nodes), -1, dtype=np.int64)
        neighbour[inside] = index[tuple(target[inside].T)]
        linked = neighbour >= 0
        rows.append(np.flatnonzero(linked))
        cols.append(neighbour[linked])
        weights.append(np.full(int(linked.sum()), step_length_kji(offset)))
    rows, cols, weights = (np.concatenate(x) for x in (rows, cols, weights))
    graph = coo_matrix((weights, (rows, cols)), shape=(len(nodes), len(nodes))).tocsr()
    _, piece = connected_components(graph, directed=False)
    largest = np.argmax(np.bincount(piece))
    start = int(np.flatnonzero(piece == largest)[0])
    distance = dijkstra(graph, directed=False, indices=start)
    distance[~np.isfinite(distance)] = -1
    end_a = int(np.argmax(distance))
    distance, predecessors = dijkstra(graph, directed=False, indices=end_a, return_predecessors=True)
    distance[~np.isfinite(distance)] = -1
    end_b = int(np.argmax(distance))
    path = [end_b]
    while path[-1] != end_a:
        path.append(int(predecessors[path[-1]]))
    return nodes[path[::-1]]


def _medial_path(mask: np.ndarray, spacing_kji) -> np.ndarray:
    """Voxel indices ``(M, 3)`` of a path through the middle of a mask, without thinning.

    The ends are the two ends of the mask's geodesic diameter (two sweeps of travel time
    inside the mask); the path between them is the minimal path on a cost that is low
    far from the mask's edge (inverse square of the distance transform).
    """
    from scipy import ndimage
    from skimage.graph import MCP_Geometric

    inside = np.isfinite(np.where(mask, 1.0, np.inf))
    flat = np.where(mask, 1.0, np.inf)
    sampling = tuple(float(s) for s in spacing_kji)
    seed = tuple(np.argwhere(mask)[0])
    ends = []
    for _ in range(2):
        travel, _ = MCP_Geometric(flat, sampling=sampling).find_costs([seed])
        travel[~inside | ~np.isfinite(travel)] = -1
        seed = tuple(np.unravel_index(int(np.argmax(travel)), travel.shape))
        ends.append(seed)
    depth = ndimage.distance_transform_edt(mask, sampling=spacing_kji)
    cost = np.where(mask, 1.0 / (depth + 1e-3) ** 2, np.inf)
    router = MCP_Geometric(cost, sampling=sampling)
    router.find_costs([ends[0]], [ends[1]])
    return np.asarray(router.traceback(ends[1]))


def _trim_ends(points: np.ndarray, trim_mm: float) -> np.ndarray:
    """Drop ``trim_mm`` of path at each end (no more than a third of it at each end).

    A centreline from a skeleton or a medial path bends towards the corners of a flat
    end over about a radius; the straight part before it gives the true end tangent.
    """
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    trim = min(trim_mm, arc[-1] / 3.0)
    keep = (arc >= trim) & (arc <= arc[-1] - trim)
    return points[keep] if np.count_nonzero(keep) >= 2 else points


def _extend_to_boundary(
    points: np.ndarray, inside, *, step_mm: float, tangent_mm: float, half_voxel=lambda direction: 0.0
) -> np.ndarray:
    """Prolong both ends of a path along their end tangents for as long as ``inside(xyz)`` holds.

    A skeleton stops about a radius short of a tube's flat end (and short of where the
    tube leaves the image); walking out along the tangent finds the real end. Each
    tangent is a straight line fitted to the last ``tangent_mm`` of the path, and the walk
    starts from the end point's projection onto it. The walk stops on the face of the
    last voxel inside; the tube's end lies anywhere in that voxel, so the end is pulled
    back by half of ``half_voxel(direction)`` (half the voxel's width along the walk).
    """
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])

    def walk(stretch: np.ndarray) -> list[np.ndarray]:
        # stretch[0] is the end; the fitted direction is turned to point outwards.
        centre = stretch.mean(axis=0)
        _, _, axes = np.linalg.svd(stretch - centre)
        direction = axes[0]
        if np.dot(stretch[0] - stretch[-1], direction) < 0:
            direction = -direction
        position = centre + np.dot(stretch[0] - centre, direction) * direction
        extra = [position]
        for _ in range(100_000):
            candidate = position + direction * step_mm
            if not inside(candidate):
                break
            position = candidate
            extra.append(position)
        backoff = 0.5 * half_voxel(direction)
        while len(extra) > 1 and np.linalg.norm(extra[-1] - extra[0]) <= backoff:
            extra.pop()
        if len(extra) > 1:
            extra[-1] = extra[-1] - direction * backoff
        return extra

    if len(points) < 2:
        return points
    head_stretch = points[arc <= min(tangent_mm, arc[-1])]
    tail_stretch = points[arc >= max(arc[-1] - tangent_mm, 0.0)][::-1]
    head = walk(head_stretch) if len(head_stretch) >= 2 else []
    tail = walk(tail_stretch) if len(tail_stretch) >= 2 else []
    # The fitted end points replace the path's own ends.
    body = points[1:-1] if head and tail else points
    parts = [np.array(head[::-1]).reshape(-1, 3), body, np.array(tail).reshape(-1, 3)]
    return np.concatenate(parts)


def _recentred(nerve: Nerve, voxel_centres: np.ndarray, window_mm: float, smoothing_mm: float) -> Nerve:
    """Move each centreline point across the nerve to the centroid of its cross-section.

    Voxels go to their closest centreline point; the centroid of those within
    ``window_mm`` along the nerve, less its component along the local tangent, is where
    the point moves. This straightens the tilt a skeleton has near a flat end, which a
    tangent carried out to the end would otherwise keep.
    """
    points = nerve.centreline
    arc_lengths = nerve.arc_lengths()
    _, arc = _distance_to_polyline(voxel_centres, points)
    order = np.argsort(arc)
    arc, voxel_centres = arc[order], voxel_centres[order]
    cumulative = np.concatenate([np.zeros((1, 3)), np.cumsum(voxel_centres, axis=0)])
    low = np.searchsorted(arc, arc_lengths - window_mm / 2, side="left")
    high = np.searchsorted(arc, arc_lengths + window_mm / 2, side="right")
    count = high - low
    # Tangent as the chord across the window (one-sided at the ends), steadier than a
    # difference of neighbours at a short last step.
    tangent = nerve.point_at(arc_lengths + window_mm / 2) - nerve.point_at(arc_lengths - window_mm / 2)
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-12)
    moved = points.copy()
    enough = count >= 3
    centroid = (cumulative[high[enough]] - cumulative[low[enough]]) / count[enough, None]
    shift = centroid - points[enough]
    shift -= np.einsum("ij,ij->i", shift, tangent[enough])[:, None] * tangent[enough]
    moved[enough] += shift
    moved = _smooth_path(moved, smoothing_mm, keep_ends=False)
    return Nerve(nerve.name, moved, nerve.radius_mm, target=nerve.target)


def _local_radii(nerve: Nerve, voxel_centres: np.ndarray, voxel_volume: float, smoothing_mm: float) -> np.ndarray:
    """Radius along a nerve from the cross-sectional area of its voxels, mm, shape (N,).

    Each voxel is assigned to the closest point of the centreline; the voxel volume per
    mm of centreline is the local cross-section ``pi r^2``, smoothed along the nerve.
    """
    from scipy.ndimage import gaussian_filter1d

    arc_lengths = nerve.arc_lengths()
    _, arc = _distance_to_polyline(voxel_centres, nerve.centreline)
    # Voxels beyond an end project onto the end point: they are cap, not cross-section.
    arc = arc[(arc > 1e-6) & (arc < arc_lengths[-1] - 1e-6)]
    counts, _ = np.histogram(arc, bins=arc_lengths)
    bin_length = np.maximum(np.diff(arc_lengths), 1e-9)
    step = float(np.mean(bin_length))
    sigma = max(smoothing_mm, 2 * step) / step
    # Smooth volume and length alike, so the short last bin does not skew the ratio.
    area = gaussian_filter1d(counts * voxel_volume, sigma, mode="nearest") / gaussian_filter1d(
        bin_length, sigma, mode="nearest"
    )
    radius_of_bin = np.sqrt(np.maximum(area, 0.0) / np.pi)
    centres = 0.5 * (arc_lengths[:-1] + arc_lengths[1:])
    radii = np.interp(arc_lengths, centres, radius_of_bin)
    floor = 0.5 * voxel_volume ** (1.0 / 3.0)  # no thinner than half a voxel
    return np.maximum(radii, floor)


def nerves_from_labels(
    labels_or_mask: Volume,
    *,
    label: int | None = Tissue.NERVE,
    names=None,
    target: bool = False,
    min_length_mm: float = MIN_NERVE_LENGTH_MM,
    step_mm: float = DEFAULT_STEP_MM,
    smoothing_mm: float = SKELETON_SMOOTHING_MM,
) -> list[Nerve]:
    """Nerves from a label map: one per connected component, centreline by skeletonisation.

    Parameters
    ----------
    labels_or_mask : Volume
        A label map (voxels equal to ``label`` are nerve) or a mask (bool array, or
        ``label=None``: every non-zero voxel is nerve), array ``(nk, nj, ni)``.
    label : int or None
        Label value of nerve voxels; :attr:`Tissue.NERVE` by default.
    names : sequence of str, optional
        Names for the nerves in the returned order; ``"nerve_1"``, ``"nerve_2"``... by default.
    target : bool
        ``target`` flag of every returned nerve.
    min_length_mm : float
        Components whose centreline is shorter than this are dropped, mm.
    step_mm : float
        Spacing of the returned centreline points, mm.
    smoothing_mm : float
        Gaussian smoothing (sigma, mm) of the skeleton path before resampling.

    Returns
    -------
    list of Nerve
        Longest first. Each centreline is the longest path through the component's 3D
        skeleton (``skimage.morphology.skeletonize``), smoothed, trimmed by a radius at
        each end (where a skeleton bends towards the corners of a flat end), prolonged
        along tangents fitted to its ends until it leaves the component (or the image,
        where the nerve runs out of it), moved onto the centroids of its cross-sections
        and resampled every ``step_mm``, in world LPS mm. ``radius_mm`` is the radius of a cylinder with the
        component's volume and the centreline's length; ``radii_mm`` are local radii from
        the cross-section: each voxel goes to its closest centreline point, and the
        voxel volume per mm of nerve is ``pi r^2`` (smoothed along the nerve).

    Notes
    -----
    Branches are dropped (only the longest path is kept). Distances assume an orthogonal
    direction matrix (any rotation, with anisotropic spacing); a sheared grid is not.
    """
    from scipy import ndimage
    from skimage.morphology import skeletonize

    from planner.imaging.memory import check_fits_in_memory

    source = labels_or_mask.metadata.get("source", "label map")
    if labels_or_mask.is_cine:
        raise InputError(f"{source}: a cine loop holds no nerve labels")
    array = np.asarray(labels_or_mask.array)
    check_fits_in_memory(array.shape, np.int32, source, copies=1.5)  # component numbers and the mask
    mask = array.astype(bool) if (array.dtype == bool or label is None) else array == int(label)
    spacing_kji = labels_or_mask.spacing[::-1]
    matrix = labels_or_mask.affine[:3, :3]

    def step_length_kji(offset_kji) -> float:
        return float(np.linalg.norm(matrix @ np.asarray(offset_kji, dtype=float)[::-1]))

    components, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    nerves: list[tuple[float, Nerve]] = []
    shape = np.array(mask.shape)
    for number, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        piece = components[box] == number
        depth = ndimage.distance_transform_edt(np.pad(piece, 1), sampling=spacing_kji)[1:-1, 1:-1, 1:-1]
        pad = int(np.ceil(depth.max() / spacing_kji.min())) + 2
        low = np.maximum([s.start - pad for s in box], 0)
        high = np.minimum([s.stop + pad for s in box], shape)
        crop = components[tuple(slice(a, b) for a, b in zip(low, high))] == number
        # Edge padding continues a nerve that leaves the image beyond its edge, so the
        # skeleton runs to the edge instead of curling up a radius short of it.
        padded = np.pad(crop, pad, mode="edge")
        skeleton = skeletonize(padded)
        if np.count_nonzero(skeleton) >= 2:
            path = _longest_skeleton_path(skeleton, step_length_kji)
        else:
            # Thinning erases some shapes whole (a bar an even number of voxels wide).
            path = _medial_path(padded, spacing_kji)
        path = path - pad + low  # (k, j, i) in the full image
        inside = np.all((path >= 0) & (path < shape), axis=1)
        path = path[inside]
        if len(path) < 2:
            continue
        world = labels_or_mask.index_to_world(path[:, ::-1].astype(float))
        radius_max = float(depth.max())
        smoothed = _trim_ends(_smooth_path(world, smoothing_mm, keep_ends=False), TRIM_RADII * radius_max)

        def in_component(xyz, number=number) -> bool:
            ijk = labels_or_mask.world_to_index(xyz)
            if not labels_or_mask.contains(xyz, margin_voxels=0.0):
                return False
            i, j, k = np.rint(ijk).astype(int)
            return bool(components[k, j, i] == number)

        fine = float(spacing_kji.min()) / 4
        extended = _extend_to_boundary(
            smoothed, in_component, step_mm=fine,
            tangent_mm=max(2.0, TANGENT_RADII * radius_max, 4 * float(spacing_kji.max())),
            half_voxel=lambda direction: 0.5 * float(np.abs(np.linalg.solve(matrix, direction)) @ (
                labels_or_mask.spacing ** 2)),
        )
        length = float(np.linalg.norm(np.diff(extended, axis=0), axis=1).sum())
        if length < min_length_mm:
            continue
        voxel_volume = float(abs(np.linalg.det(matrix)))
        radius = float(np.sqrt(piece.sum() * voxel_volume / (np.pi * length)))
        voxels = labels_or_mask.index_to_world((np.argwhere(crop) + low)[:, ::-1].astype(float))
        nerve = Nerve("", extended, radius, target=target).resampled(step_mm)
        for _ in range(RECENTRE_PASSES):
            nerve = _recentred(nerve, voxels, max(2 * radius_max, 4 * float(spacing_kji.max())), smoothing_mm)
        nerve = nerve.resampled(step_mm)
        nerve.radii_mm = _local_radii(nerve, voxels, voxel_volume, smoothing_mm)
        nerves.append((length, nerve))
    nerves.sort(key=lambda item: -item[0])
    result = []
    names = list(names) if names is not None else []
    for index, (_, nerve) in enumerate(nerves):
        nerve.name = names[index] if index < len(names) else f"nerve_{index + 1}"
        result.append(nerve)
    return result


# ============================================================================ (b) tracing
def _check_trace_points(volume: Volume, points) -> np.ndarray:
    points = _as_points(points, "trace_nerve points")
    points, _ = _drop_repeats(points, None)
    if len(points) < 2:
        raise InputError("trace_nerve points: needs at least 2 distinct points (mm)")
    inside = volume.contains(points)
    if not np.all(inside):
        bad = int(np.flatnonzero(~inside)[0])
        x, y, z = points[bad]
        raise InputError(f"trace_nerve points[{bad}]: [{x:.1f}, {y:.1f}, {z:.1f}] mm is outside the volume")
    return points


def _ball_offsets(spacing: np.ndarray, inner_mm: float, outer_mm: float) -> np.ndarray:
    """Voxel offsets ``(M, 3)`` (i, j, k) whose centres lie between two radii (mm)."""
    reach = np.maximum(np.ceil(outer_mm / spacing), 1).astype(int)
    offsets = np.stack(np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij"), axis=-1).reshape(-1, 3)
    distance = np.linalg.norm(offsets * spacing, axis=1)
    return offsets[(distance >= inner_mm) & (distance <= outer_mm)]


def _values_near(volume: Volume, points: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    upper = np.array(volume.shape_xyz) - 1
    samples = []
    for point in points:
        ijk = np.clip(np.rint(volume.world_to_index(point)).astype(int) + offsets, 0, upper)
        samples.append(np.asarray(volume.array[ijk[:, 2], ijk[:, 1], ijk[:, 0]], dtype=float))
    return np.concatenate(samples)


def _reference_intensity(volume: Volume, points: np.ndarray, radius_mm: float):
    """Intensity of the structure at the clicked points and of what surrounds it.

    Returns ``(core, spread, surround)``: the median within 0.6 radius of the points
    (at least the voxel itself), a robust spread of those values (1.4826 MAD), and the
    median of a shell 1.5 to 3 radii out.
    """
    spacing = volume.spacing
    core = _values_near(volume, points, _ball_offsets(spacing, 0.0, max(0.6 * radius_mm, 1e-9)))
    shell = _values_near(volume, points, _ball_offsets(spacing, 1.5 * radius_mm, max(3.0 * radius_mm, 1.5 * spacing.max())))
    reference = float(np.median(core))
    spread = 1.4826 * float(np.median(np.abs(core - reference)))
    surround = float(np.median(shell)) if shell.size else reference
    return reference, spread, surround


def trace_nerve(
    volume: Volume,
    points,
    *,
    radius_mm: float,
    name: str = "nerve",
    target: bool = True,
    ridge: str = "auto",
    tubularity_weight: float = 0.5,
    intensity_weight: float = 1.0,
    margin_mm: float = TRACE_MARGIN_MM,
    step_mm: float = DEFAULT_STEP_MM,
) -> Nerve:
    """Trace a nerve (or a landmark) through an image between clicked points.

    Between each pair of consecutive points the centreline is the geometric minimal-cost
    path (``skimage.graph.MCP_Geometric``, step lengths in mm) on a sub-volume cropped
    around the pair. The cost of travelling 1 mm through a voxel is ::

        (0.05 + intensity_weight * d_I) * (1 - tubularity_weight * V)

    where ``d_I`` in [0, 1] grows with the squared difference between the lightly
    smoothed image and the median intensity at the clicked points (saturating at four
    spreads; the spread is the larger of twice the noise at the clicks and half the
    contrast with a shell 1.5-3 radii around them), and ``V`` in [0, 1] is Frangi's
    vesselness at the nerve's scale divided by its value at the clicked points (capped
    at 1). Intensity leads; tubularity only makes a tube-like stretch cheaper, by at most
    the factor ``1 - tubularity_weight``. Frangi's measure, unlike Sato's, ignores sheets,
    which matters on CT: a nerve there is barely visible and a bright sheet nearby (the
    pleura under an intercostal nerve) would otherwise draw the path. The path passes
    exactly through every clicked point.

    Parameters
    ----------
    volume : Volume
        Image to trace on (CT, MR, ultrasound), array ``(nk, nj, ni)``, any affine.
    points : (N, 3) array_like, mm
        Clicked world LPS points along the structure, in order, N >= 2.
    radius_mm : float
        Radius of the traced structure (and of the returned nerve), mm; sets the
        tubularity scale and the neighbourhood whose intensity is the reference.
    name, target
        Of the returned nerve.
    ridge : {"auto", "dark", "bright"}
        Whether the structure is darker or brighter than its surroundings; ``"auto"``
        compares the clicked points with a shell 1.5-3 radii around them.
    tubularity_weight : float
        0 to below 1: how much cheaper a voxel as tube-like as the clicked structure is.
    intensity_weight : float
        Weight of the intensity term (>= 0).
    margin_mm : float
        Room around each pair of points, mm; at least 30 % of the pair's distance is used.
    step_mm : float
        Spacing of the returned centreline points, mm.

    Returns
    -------
    Nerve
        Centreline in world LPS mm through all clicked points.

    Raises
    ------
    InputError
        For fewer than two distinct points, a point outside the volume, a cine loop, or
        bad options.
    """
    from scipy import ndimage
    from skimage.filters import frangi
    from skimage.graph import MCP_Geometric

    source = volume.metadata.get("source", "image")
    if volume.is_cine:
        raise InputError(f"{source}: trace on one frame of a cine loop (Volume.frame)")
    if ridge not in ("auto", "dark", "bright"):
        raise InputError(f"trace_nerve ridge: expected 'auto', 'dark' or 'bright', got {ridge!r}")
    if not np.isfinite(radius_mm) or radius_mm <= 0:
        raise InputError(f"trace_nerve radius_mm: must be > 0 mm, got {radius_mm!r}")
    if not np.isfinite(intensity_weight) or intensity_weight < 0:
        raise InputError(f"trace_nerve intensity_weight: must be >= 0, got {intensity_weight!r}")
    if not np.isfinite(tubularity_weight) or not 0 <= tubularity_weight < 1:
        raise InputError(f"trace_nerve tubularity_weight: must be in [0, 1), got {tubularity_weight!r}")
    points = _check_trace_points(volume, points)
    reference, noise, surround = _reference_intensity(volume, points, radius_mm)
    # The structure stands out from what is right around it (a nerve in its fat cuff, a
    # groove beside bone), not necessarily from the whole crop.
    contrast = abs(surround - reference)
    spread = max(2.0 * noise, contrast / 2.0, 1e-6 * max(abs(reference), 1.0))
    dark = (reference < surround) if ridge == "auto" else (ridge == "dark")

    spacing_ijk = volume.spacing
    spacing_kji = spacing_ijk[::-1]
    radius_voxels = radius_mm / float(np.mean(spacing_ijk))
    sigmas = sorted({max(0.5, 0.7 * radius_voxels), max(0.7, radius_voxels)})
    upper = np.array(volume.shape_xyz) - 1
    near_click = _ball_offsets(spacing_ijk, 0.0, max(0.6 * radius_mm, 1e-9))
    pieces: list[np.ndarray] = []
    for first, second in zip(points[:-1], points[1:]):
        a_ijk, b_ijk = volume.world_to_index(first), volume.world_to_index(second)
        margin = max(margin_mm, 0.3 * float(np.linalg.norm(second - first)), 3 * radius_mm)
        reach = np.ceil(margin / spacing_ijk)
        low = np.clip(np.floor(np.minimum(a_ijk, b_ijk) - reach), 0, upper).astype(int)
        high = np.clip(np.ceil(np.maximum(a_ijk, b_ijk) + reach), 0, upper).astype(int) + 1
        box = tuple(slice(low[axis], high[axis]) for axis in (2, 1, 0))
        crop = np.asarray(volume.array[box], dtype=np.float32)

        smoothed = ndimage.gaussian_filter(crop, sigma=np.maximum(0.5 * radius_mm / spacing_kji, 0.5))
        intensity_cost = np.minimum(((smoothed - reference) / spread) ** 2, 16.0) / 16.0
        tubular = frangi(crop, sigmas=sigmas, black_ridges=dark, mode="reflect")
        # Tubularity relative to the clicked structure's own: as tubular as it, or more,
        # costs nothing (bone plates and edges elsewhere must not set the scale).
        clicked = []
        for ijk in (a_ijk, b_ijk):
            voxels = np.clip(np.rint(ijk).astype(int) + near_click, low, high - 1) - low
            clicked.append(tubular[voxels[:, 2], voxels[:, 1], voxels[:, 0]])
        scale = float(np.median(np.concatenate(clicked)))
        top = float(np.percentile(tubular, 99.9)) if tubular.size else 0.0
        if scale < 0.05 * top:  # clicks on something not tubular at this scale
            scale = top
        tubular = np.clip(tubular / scale, 0.0, 1.0) if scale > 0 else np.zeros_like(tubular)
        cost = (0.05 + intensity_weight * intensity_cost) * (1.0 - tubularity_weight * tubular)

        start = tuple(np.clip(np.rint(a_ijk), low, high - 1).astype(int)[::-1] - low[::-1])
        end = tuple(np.clip(np.rint(b_ijk), low, high - 1).astype(int)[::-1] - low[::-1])
        router = MCP_Geometric(cost, fully_connected=True, sampling=tuple(spacing_kji))
        router.find_costs([start], [end])
        path_kji = np.asarray(router.traceback(end), dtype=float) + low[::-1]
        world = volume.index_to_world(path_kji[:, ::-1])
        world[0], world[-1] = first, second  # snap to the clicked points
        world = _smooth_path(world, float(spacing_ijk.min()), keep_ends=True)
        pieces.append(world if not pieces else world[1:])
    centreline = np.concatenate(pieces)
    return Nerve(name, centreline, radius_mm, target=target).resampled(step_mm)
