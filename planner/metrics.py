"""What an ice ball did: nerve coverage, skin, vessel and bone margins, volumes, warnings.

The planner's question after a simulation is whether the ice reached the target nerve
cold enough and stayed off what must be spared. :func:`compute_metrics` answers it from a
thermal result (the lowest temperature each cell reached and the time it spent below
each threshold) and the anatomy:

- per nerve (targets first): the length and fraction of its centreline whose cross-section
  fell below -20 degC (axonotmesis, the clinical aim: Myers, Br J Anaesth 1981) and below
  0 degC, the longest continuous covered stretch, and the time each point spent below
  -20 degC;
- the coldest skin temperature and the gap between the 0 degC surface and the skin
  (frostbite risk), with a warning when the ice comes within a margin of it;
- the closest approach of the 0 degC surface to each vessel (centrelines with radii, or
  the vessel label), to bone and to lung;
- the volume inside each isotherm;
- warnings in plain words with numbers.

Everything is plain data: :class:`PlanMetrics` holds :class:`NerveCoverage` and
:class:`StructureApproach` records, ``to_dict()`` gives JSON-ready dicts and
``describe()`` one line per fact for people. World LPS millimetres, seconds, degC.

Research and education only; not for clinical use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from planner.anatomy.nerves import Nerve
from planner.anatomy.trajectory import PlanWarning
from planner.errors import InputError
from planner.labels import Tissue
from planner.volume import Volume

BODY_TEMPERATURE_C = 37.0
AXONOTMESIS_C = -20.0
"""Below this a nerve gets a long but reversible block (axonotmesis): the aim."""
ICE_EDGE_C = 0.0
"""The visible ice edge, used for skin, vessel and bone margins."""
DEFAULT_THRESHOLDS_C = (AXONOTMESIS_C, ICE_EDGE_C)
DEFAULT_SKIN_MARGIN_MM = 3.0
NERVE_STEP_MM = 0.25
"""Spacing of the points along a nerve's centreline where coverage is judged, mm."""
RING_POINTS = 8
"""Points on the ring of nerve radius sampled around each centreline point (plus the centre)."""
SEARCH_MM = 30.0
"""Structures farther than this from the ice are reported as "farther than", not measured."""
CROSS_SECTIONS = ("whole", "any")

METRIC_WARNING_CODES = {
    "target_not_reached": "the -20 degC surface does not enclose any part of a target nerve",
    "target_partly_covered": "only part of a target nerve's segment fell below -20 degC",
    "target_only_cooled": "a target nerve froze (below 0 degC) but not below -20 degC over some length: "
    "a short, unpredictable block",
    "spared_nerve_frozen": "a nerve marked to spare fell below 0 degC",
    "skin_frozen": "the ice reached the skin (frostbite risk)",
    "skin_near_ice": "the 0 degC surface comes within the safety margin of the skin",
    "vessel_frozen": "the ice reached a blood vessel",
    "bone_frozen": "the ice reached bone",
    "lung_frozen": "the ice reached the lung or an air space",
    "outside_box": "part of a target nerve lies outside the solver's box and counts as body temperature",
    "no_ice": "no tissue fell below 0 degC",
}
"""Every warning code :func:`compute_metrics` uses and what it means (codes of
:class:`planner.anatomy.trajectory.PlanWarning` records)."""


# ============================================================================ data
@dataclass(eq=False)
class NerveCoverage:
    """How cold one nerve got, point by point along its centreline.

    Attributes
    ----------
    name : str
    target : bool
        True for a nerve to freeze, False for one to spare.
    length_mm : float
        Length of the centreline judged, mm.
    step_mm : float
        Spacing of the judged points, mm (the last step may be shorter).
    cross_section : {"whole", "any"}
        ``"whole"``: a point counts as covered when every sample of its cross-section
        (the centre and :data:`RING_POINTS` points on the ring of nerve radius) fell below
        the threshold, i.e. the isotherm enclosed the nerve there; ``"any"``: when the
        coldest sample did.
    thresholds_c : tuple of float
        degC levels judged, coldest first.
    covered_mm, fraction, longest_mm : dict float -> float
        Per threshold: covered length (mm), covered fraction of ``length_mm``, longest
        continuous covered stretch (mm). Each point stands for the centreline half-way
        to its neighbours, so lengths are exact to within one step.
    arc_mm : (n,) ndarray
        Distance of each judged point from the first centreline point, mm.
    points : (n, 3) ndarray
        World LPS mm of the judged points.
    temperature_c : (n,) ndarray
        The cross-section's lowest temperature reached, as the criterion sees it: the
        warmest sample (``"whole"``) or the coldest (``"any"``), degC.
    coldest_c : float
        The coldest any sample of the nerve got, degC.
    time_below_s : (n,) ndarray or None
        Seconds the cross-section spent below :data:`AXONOTMESIS_C` (warmest sample for
        ``"whole"``, coldest for ``"any"``); None when the result did not track that level.
    outside_box : int
        Number of judged points with a sample outside the solver's box (taken as body
        temperature).
    """

    name: str
    target: bool
    length_mm: float
    step_mm: float
    cross_section: str
    thresholds_c: tuple[float, ...]
    covered_mm: dict[float, float]
    fraction: dict[float, float]
    longest_mm: dict[float, float]
    arc_mm: np.ndarray
    points: np.ndarray
    temperature_c: np.ndarray
    coldest_c: float
    time_below_s: np.ndarray | None = None
    outside_box: int = 0

    def covered(self, threshold_c: float) -> np.ndarray:
        """Boolean (n,): which judged points were covered at ``threshold_c`` degC."""
        return self.temperature_c < threshold_c

    def to_dict(self, *, per_point: bool = True) -> dict:
        """JSON-ready dict; ``per_point`` adds the arrays (rounded to 0.01 mm, 0.1 degC, 0.1 s)."""
        result = {
            "name": self.name,
            "target": self.target,
            "length_mm": _round(self.length_mm, 2),
            "step_mm": self.step_mm,
            "cross_section": self.cross_section,
            "coldest_c": _round(self.coldest_c, 2),
            "coverage": [
                {
                    "level_c": float(level),
                    "covered_mm": _round(self.covered_mm[level], 2),
                    "fraction": _round(self.fraction[level], 4),
                    "longest_mm": _round(self.longest_mm[level], 2),
                }
                for level in self.thresholds_c
            ],
            "max_time_below_axonotmesis_s": None
            if self.time_below_s is None or self.time_below_s.size == 0
            else _round(float(self.time_below_s.max()), 1),
            "outside_box_points": int(self.outside_box),
        }
        if per_point:
            result["arc_mm"] = [round(float(v), 2) for v in self.arc_mm]
            result["temperature_c"] = [round(float(v), 1) for v in self.temperature_c]
            result["time_below_axonotmesis_s"] = (
                None if self.time_below_s is None else [round(float(v), 1) for v in self.time_below_s]
            )
        return result


@dataclass(eq=False)
class StructureApproach:
    """How close the 0 degC surface came to one structure.

    Attributes
    ----------
    name : str
        ``"skin"``, ``"bone"``, ``"lung"``, a vessel's name, or ``"vessel (label map)"``.
    kind : {"skin", "vessel", "bone", "lung"}
    source : {"label map", "centreline"}
        Where the structure's shape came from.
    clearance_mm : float or None
        Gap between the 0 degC surface (of the lowest temperature reached) and the
        structure, mm; negative when the ice reached into it (minus the deepest ice
        inside it); None when the structure is farther than ``search_mm`` from the ice
        (or there is no ice).
    reached : bool
        True when part of the structure fell below 0 degC.
    coldest_c : float or None
        Lowest temperature the structure reached, degC (None when it was not sampled).
    closest_point : (3,) tuple of float or None
        World LPS mm of the structure's point nearest the ice.
    """

    name: str
    kind: str
    source: str
    clearance_mm: float | None
    reached: bool
    coldest_c: float | None
    closest_point: tuple[float, float, float] | None = None

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "clearance_mm": _round(self.clearance_mm, 2),
            "reached": bool(self.reached),
            "coldest_c": _round(self.coldest_c, 2),
            "closest_point": None if self.closest_point is None else [round(float(v), 2) for v in self.closest_point],
        }


@dataclass(eq=False)
class PlanMetrics:
    """Everything :func:`compute_metrics` measured.

    Attributes
    ----------
    nerves : list of NerveCoverage
        Targets first, then nerves to spare, each group in the given order.
    skin : StructureApproach or None
        None without a tissue map, or when the map has no skin near the ice.
    structures : list of StructureApproach
        Vessels (by name), bone, lung: those present near the ice.
    isotherm_volumes_ml : list of dict
        ``{"level_c", "volume_ml", "final_volume_ml"}`` per isotherm: the volume that ever
        got colder than the level, and the volume colder at the end, ml.
    min_temperature_c : float
        Coldest temperature anywhere, degC.
    warnings : list of PlanWarning
        Problems in plain words with numbers, most important first.
    notes : list of str
        How things were measured and what was assumed.
    thresholds_c, skin_margin_mm, search_mm
        The settings used.
    """

    nerves: list[NerveCoverage]
    skin: StructureApproach | None
    structures: list[StructureApproach]
    isotherm_volumes_ml: list[dict]
    min_temperature_c: float
    warnings: list[PlanWarning] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    thresholds_c: tuple[float, ...] = DEFAULT_THRESHOLDS_C
    skin_margin_mm: float = DEFAULT_SKIN_MARGIN_MM
    search_mm: float = SEARCH_MM

    @property
    def targets(self) -> list[NerveCoverage]:
        """The target nerves' coverage."""
        return [nerve for nerve in self.nerves if nerve.target]

    def nerve(self, name: str) -> NerveCoverage:
        """Coverage of the nerve called ``name`` (KeyError if none)."""
        for nerve in self.nerves:
            if nerve.name == name:
                return nerve
        raise KeyError(name)

    def structure(self, name: str) -> StructureApproach:
        """The approach record called ``name`` (``"skin"`` included; KeyError if none)."""
        for item in ([self.skin] if self.skin is not None else []) + self.structures:
            if item.name == name:
                return item
        raise KeyError(name)

    def to_dict(self, *, per_point: bool = False) -> dict:
        """JSON-ready dict of everything; ``per_point`` adds the per-point nerve arrays."""
        return {
            "thresholds_c": [float(v) for v in self.thresholds_c],
            "skin_margin_mm": float(self.skin_margin_mm),
            "search_mm": float(self.search_mm),
            "min_temperature_c": _round(self.min_temperature_c, 2),
            "nerves": [nerve.to_dict(per_point=per_point) for nerve in self.nerves],
            "skin": None if self.skin is None else self.skin.to_dict(),
            "structures": [item.to_dict() for item in self.structures],
            "isotherm_volumes_ml": [dict(item) for item in self.isotherm_volumes_ml],
            "warnings": [
                {"code": w.code, "structure": w.structure, "message": w.message, "distance_mm": _round(w.distance_mm, 2)}
                for w in self.warnings
            ],
            "notes": list(self.notes),
        }

    def describe(self) -> list[str]:
        """One line per fact, for people (the warnings come last, each prefixed ``WARNING:``)."""
        lines = []
        for nerve in self.nerves:
            role = "target" if nerve.target else "spare"
            parts = [
                f"{nerve.covered_mm[level]:.1f} mm ({100 * nerve.fraction[level]:.0f}%) below {level:g} degC"
                for level in nerve.thresholds_c
            ]
            line = f"nerve {nerve.name} ({role}, {nerve.length_mm:.1f} mm judged): " + ", ".join(parts)
            level = nerve.thresholds_c[0]
            line += f"; longest stretch below {level:g} degC {nerve.longest_mm[level]:.1f} mm"
            line += f"; coldest {nerve.coldest_c:.1f} degC"
            if nerve.time_below_s is not None and nerve.time_below_s.size and nerve.time_below_s.max() > 0:
                line += f"; up to {nerve.time_below_s.max():.0f} s below {AXONOTMESIS_C:g} degC"
            lines.append(line)
        if self.skin is not None:
            lines.append(_approach_line(self.skin))
        for item in self.structures:
            lines.append(_approach_line(item))
        volumes = ", ".join(f"{v['level_c']:g} degC {v['volume_ml']:.2f} ml" for v in self.isotherm_volumes_ml)
        if volumes:
            lines.append(f"ice-ball volumes (coldest reached): {volumes}")
        lines.append(f"coldest temperature anywhere: {self.min_temperature_c:.1f} degC")
        lines += [f"note: {note}" for note in self.notes]
        lines += [f"WARNING: {warning.message}" for warning in self.warnings]
        return lines


def _round(value, digits):
    if value is None:
        return None
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def _approach_line(item: StructureApproach) -> str:
    if item.clearance_mm is None:
        where = "no ice near it" if item.coldest_c is None else "farther than the search distance from the ice"
        text = f"{item.name}: {where}"
    elif item.reached:
        text = f"{item.name}: ice reaches it, {-item.clearance_mm:.1f} mm deep"
    else:
        text = f"{item.name}: 0 degC surface {item.clearance_mm:.1f} mm away"
    if item.coldest_c is not None:
        text += f" (coldest {item.coldest_c:.1f} degC)"
    return text


# ============================================================================ sampling the result
class _FieldSampler:
    """Trilinear sampling of cell values of a :class:`~planner.thermal.grid.ThermalGrid`
    at world points; points outside the box get a fill value."""

    def __init__(self, grid) -> None:
        self.grid = grid
        self.centres = [grid.centres(axis) for axis in range(3)]
        self.low, self.high = grid.bounds_local()

    def inside(self, points) -> np.ndarray:
        local = self.grid.world_to_local(np.asarray(points, dtype=float).reshape(-1, 3))
        return np.all((local >= self.low - 1e-9) & (local <= self.high + 1e-9), axis=1)

    def __call__(self, values: np.ndarray, points, *, fill: float) -> np.ndarray:
        from scipy import ndimage

        points = np.asarray(points, dtype=float)
        local = self.grid.world_to_local(points.reshape(-1, 3))
        inside = np.all((local >= self.low - 1e-9) & (local <= self.high + 1e-9), axis=1)
        coords = [np.interp(local[:, axis], self.centres[axis], np.arange(self.centres[axis].size)) for axis in (2, 1, 0)]
        out = ndimage.map_coordinates(np.asarray(values, dtype=np.float64), coords, order=1, mode="nearest")
        out[~inside] = fill
        return out.reshape(points.shape[:-1])


def cross_section_points(nerve: Nerve, *, step_mm: float = NERVE_STEP_MM, ring_points: int = RING_POINTS):
    """Points where a nerve's coverage is judged.

    Parameters
    ----------
    nerve : Nerve
    step_mm : float
        Spacing along the centreline, mm.
    ring_points : int
        Points on the ring of local nerve radius, perpendicular to the centreline.

    Returns
    -------
    arc : (n,) ndarray
        mm along the centreline.
    centres : (n, 3) ndarray
        World LPS mm of the centreline points.
    samples : (n, ring_points + 1, 3) ndarray
        World LPS mm: the centre, then the ring.
    """
    fine = nerve.resampled(step_mm)
    centres = fine.centreline
    arc = fine.arc_lengths()
    tangent = np.gradient(centres, axis=0)
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-12)
    # Any perpendicular pair will do: the ring's phase does not matter.
    helper = np.eye(3)[np.argmin(np.abs(tangent), axis=1)]
    u = np.cross(tangent, helper)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v = np.cross(tangent, u)
    angles = 2 * np.pi * np.arange(ring_points) / max(ring_points, 1)
    radii = fine.local_radii_mm()[:, None, None]
    ring = centres[:, None, :] + radii * (
        np.cos(angles)[None, :, None] * u[:, None, :] + np.sin(angles)[None, :, None] * v[:, None, :]
    )
    samples = np.concatenate([centres[:, None, :], ring], axis=1) if ring_points else centres[:, None, :]
    return arc, centres, samples


def point_weights(arc: np.ndarray) -> np.ndarray:
    """Length of centreline each judged point stands for: half-way to each neighbour, mm."""
    if arc.size < 2:
        return np.zeros_like(arc)
    gaps = np.diff(arc)
    weights = np.zeros_like(arc)
    weights[:-1] += 0.5 * gaps
    weights[1:] += 0.5 * gaps
    return weights


def longest_run(mask: np.ndarray, weights: np.ndarray) -> float:
    """Largest sum of ``weights`` over a run of consecutive True values of ``mask``."""
    best = current = 0.0
    for flag, weight in zip(mask, weights):
        current = current + weight if flag else 0.0
        best = max(best, current)
    return float(best)


def nerve_coverage(
    nerve: Nerve,
    sample,
    *,
    min_temperature: np.ndarray,
    time_below: np.ndarray | None = None,
    thresholds_c: Sequence[float] = DEFAULT_THRESHOLDS_C,
    step_mm: float = NERVE_STEP_MM,
    ring_points: int = RING_POINTS,
    cross_section: str = "whole",
    body_temperature_c: float = BODY_TEMPERATURE_C,
) -> NerveCoverage:
    """Coverage of one nerve from cell fields and a sampler.

    ``sample(values, points, fill=...)`` returns the field at world points (a
    :class:`_FieldSampler`, or any callable of that shape); ``min_temperature`` is the
    lowest temperature per cell (degC) and ``time_below`` the seconds per cell below
    :data:`AXONOTMESIS_C`. See :func:`compute_metrics` for the rest.
    """
    if cross_section not in CROSS_SECTIONS:
        raise InputError(f"cross_section: expected 'whole' or 'any', got {cross_section!r}")
    arc, centres, samples = cross_section_points(nerve, step_mm=step_mm, ring_points=ring_points)
    temperatures = sample(min_temperature, samples, fill=body_temperature_c)
    reduce = np.max if cross_section == "whole" else np.min
    value = reduce(temperatures, axis=1)
    outside = 0
    if isinstance(sample, _FieldSampler):
        outside = int(np.sum(~np.all(sample.inside(samples.reshape(-1, 3)).reshape(samples.shape[:2]), axis=1)))
    time = None
    if time_below is not None:
        seconds = sample(time_below, samples, fill=0.0)
        # "whole": the whole cross-section was below for as long as its shortest-chilled sample.
        time = np.maximum(np.min(seconds, axis=1) if cross_section == "whole" else np.max(seconds, axis=1), 0.0)
    weights = point_weights(arc)
    length = float(arc[-1]) if arc.size else 0.0
    levels = tuple(sorted((float(t) for t in thresholds_c)))
    covered_mm, fraction, longest = {}, {}, {}
    for level in levels:
        mask = value < level
        covered_mm[level] = float(weights[mask].sum())
        fraction[level] = covered_mm[level] / length if length > 0 else 0.0
        longest[level] = longest_run(mask, weights)
    return NerveCoverage(
        name=nerve.name,
        target=bool(nerve.target),
        length_mm=length,
        step_mm=float(step_mm),
        cross_section=cross_section,
        thresholds_c=levels,
        covered_mm=covered_mm,
        fraction=fraction,
        longest_mm=longest,
        arc_mm=arc,
        points=centres,
        temperature_c=value,
        coldest_c=float(np.min(temperatures)) if temperatures.size else body_temperature_c,
        time_below_s=time,
        outside_box=outside,
    )


# ============================================================================ surfaces
def _extended_centres(grid, axis: int) -> np.ndarray:
    centres, widths = grid.centres(axis), grid.widths(axis)
    return np.concatenate([[centres[0] - widths[0]], centres, [centres[-1] + widths[-1]]])


def isosurface_points(grid, values: np.ndarray, level: float) -> np.ndarray:
    """Vertices (n, 3) world LPS mm of the ``level`` surface of cell values on ``grid``.

    Marching cubes on the cells around the region colder than ``level`` only (so the
    cost follows the ice, not the box); the box edge is closed with a warm value.
    """
    from skimage.measure import marching_cubes

    values = np.asarray(values, dtype=np.float32)
    cold = values < level
    if not cold.any():
        return np.zeros((0, 3))
    index = np.argwhere(cold)
    low = np.maximum(index.min(axis=0) - 2, 0)
    high = np.minimum(index.max(axis=0) + 3, values.shape)
    crop = values[low[0] : high[0], low[1] : high[1], low[2] : high[2]]
    warm = max(float(crop.max()), level + 1.0)
    padded = np.pad(crop, 1, mode="constant", constant_values=warm)
    verts, _, _, _ = marching_cubes(padded, level=level)
    local = np.empty_like(verts, dtype=float)
    for array_axis, grid_axis in ((0, 2), (1, 1), (2, 0)):
        extended = _extended_centres(grid, grid_axis)
        # padded index p is grid cell p - 1 + low, i.e. extended index p + low
        local[:, grid_axis] = np.interp(verts[:, array_axis] + low[array_axis], np.arange(extended.size), extended)
    return grid.local_to_world(local)


def _label_crop(labels: Volume, world_low: np.ndarray, world_high: np.ndarray):
    """Index box ``(low_kji, high_kji)`` of ``labels`` covering a world box (clipped), or None."""
    corners = np.array([[x, y, z] for x in (world_low[0], world_high[0]) for y in (world_low[1], world_high[1])
                        for z in (world_low[2], world_high[2])])
    ijk = labels.world_to_index(corners)
    upper = np.array(labels.shape_xyz)
    low = np.clip(np.floor(ijk.min(axis=0)).astype(int) - 1, 0, upper)
    high = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 2, 0, upper)
    if np.any(high <= low):
        return None
    return low[::-1], high[::-1]


def mask_surface_points(labels: Volume, mask: np.ndarray, low_kji) -> np.ndarray:
    """World points (n, 3) of the surface of a boolean voxel mask cropped from ``labels``
    at index ``low_kji``: half-way between inside and outside voxel centres (the voxel
    faces). Edges of the crop are not surfaces (the crop is padded by repeating them)."""
    from skimage.measure import marching_cubes

    if not mask.any() or mask.all():
        return np.zeros((0, 3))
    padded = np.pad(mask.astype(np.float32), 1, mode="edge")
    verts, _, _, _ = marching_cubes(padded, level=0.5)
    kji = verts - 1 + np.asarray(low_kji)
    return labels.index_to_world(kji[:, ::-1])


# ============================================================================ structures
def _tube_samples(points, radius_mm: float, step_mm: float) -> np.ndarray:
    nerve = Nerve("tube", np.asarray(points, dtype=float), float(radius_mm))
    _, _, samples = cross_section_points(nerve, step_mm=step_mm)
    return samples.reshape(-1, 3)


def _approach_from_points(name, kind, source, *, surface, inside_points, inside_temps, ice_tree, search_mm):
    """Clearance from the ice surface (a KD-tree of its vertices) to a structure given as
    surface points, with the structure's interior points and their lowest temperatures."""
    coldest = float(np.min(inside_temps)) if len(inside_temps) else None
    frozen = inside_temps < ICE_EDGE_C if len(inside_temps) else np.zeros(0, dtype=bool)
    if frozen.any():
        depth, _ = ice_tree.query(inside_points[frozen])
        deepest = int(np.argmax(depth))
        return StructureApproach(name, kind, source, -float(depth[deepest]), True, coldest,
                                 tuple(float(c) for c in inside_points[frozen][deepest]))
    if len(surface) == 0:
        return StructureApproach(name, kind, source, None, False, coldest)
    gap, _ = ice_tree.query(surface, distance_upper_bound=search_mm)
    nearest = int(np.argmin(gap))
    if not np.isfinite(gap[nearest]):
        return StructureApproach(name, kind, source, None, False, coldest)
    return StructureApproach(name, kind, source, float(gap[nearest]), False, coldest,
                             tuple(float(c) for c in surface[nearest]))


def _line_approach(line, *, ice_points, ice_tree, sample, min_temperature, search_mm, step_mm, body):
    """Approach to a vessel given as a centreline with a radius."""
    points = np.asarray(line.points, dtype=float)
    radius = float(line.radius_mm)
    tube = Nerve(str(line.name), points, radius)
    samples = _tube_samples(points, radius, step_mm)
    temps = sample(min_temperature, samples, fill=body)
    coldest = float(temps.min())
    frozen = temps < ICE_EDGE_C
    if frozen.any():
        depth, _ = ice_tree.query(samples[frozen])
        deepest = int(np.argmax(depth))
        return StructureApproach(str(line.name), "vessel", "centreline", -float(depth[deepest]), True, coldest,
                                 tuple(float(c) for c in samples[frozen][deepest]))
    gaps = tube.distance_to(ice_points) - radius
    nearest = int(np.argmin(gaps))
    if gaps[nearest] > search_mm:
        return StructureApproach(str(line.name), "vessel", "centreline", None, False, coldest)
    # The structure's point nearest the ice: the nearest ice vertex pulled onto the tube.
    axis = tube.resampled(0.1).centreline
    axis_point = axis[int(np.argmin(np.linalg.norm(axis - ice_points[nearest], axis=1)))]
    towards = ice_points[nearest] - axis_point
    norm = float(np.linalg.norm(towards))
    closest = axis_point + (towards / norm * radius if norm > 1e-9 else 0.0)
    return StructureApproach(str(line.name), "vessel", "centreline", max(float(gaps[nearest]), 0.0), False, coldest,
                             tuple(float(c) for c in closest))


def _as_nerve(item) -> Nerve:
    return item if isinstance(item, Nerve) else Nerve.from_plan(item)


def _resolve_inputs(run_or_result, labels, nerves, vessels):
    """The thermal result, and defaults for labels, nerves and vessels from a run."""
    result = getattr(run_or_result, "result", run_or_result)
    if not hasattr(result, "min_temperature") or not hasattr(result, "grid"):
        raise InputError(f"compute_metrics: expected a SimulationRun or ThermalResult, got {type(run_or_result).__name__}")
    plan = getattr(run_or_result, "plan", None)
    if labels is None:
        labels = getattr(run_or_result, "labels", None)
    if nerves is None:
        nerves = list(plan.nerves) if plan is not None else []
    if vessels is None and plan is not None:
        from planner.plan import DemoVolume

        if isinstance(plan.volume, DemoVolume):
            from planner.demo import build_demo_case

            vessels = list(build_demo_case(plan.volume.demo).vessels)
    return result, labels, [_as_nerve(n) for n in nerves], vessels


def compute_metrics(
    run_or_result,
    *,
    labels: Volume | None = None,
    nerves=None,
    vessels=None,
    thresholds_c: Sequence[float] = DEFAULT_THRESHOLDS_C,
    skin_margin_mm: float = DEFAULT_SKIN_MARGIN_MM,
    step_mm: float = NERVE_STEP_MM,
    ring_points: int = RING_POINTS,
    cross_section: str = "whole",
    search_mm: float = SEARCH_MM,
    body_temperature_c: float = BODY_TEMPERATURE_C,
) -> PlanMetrics:
    """Measure what a simulated freeze did to the nerves and the structures to spare.

    Parameters
    ----------
    run_or_result : SimulationRun, ThermalResult or PreviewResult
        A run gives defaults for ``labels`` (its tissue map), ``nerves`` (the plan's) and
        ``vessels`` (the demo case's centrelines for a demo plan). A preview
        (:mod:`planner.thermal.preview`) is measured the same way and flagged approximate
        in the notes.
    labels : Volume, optional
        Tissue map (:class:`planner.labels.Tissue` values) for the skin, vessel, bone and
        lung surfaces. Without one only nerves and volumes are measured.
    nerves : sequence of Nerve, PlanNerve or NerveLine, optional
        Nerves with names, centrelines (world LPS mm), radii and target flags.
    vessels : sequence, optional
        Vessels as objects with ``name``, ``points`` (N, 3) world mm and ``radius_mm``
        (a demo :class:`~planner.demo.VesselLine`). Without them, voxels labelled
        :attr:`Tissue.VESSEL` are measured as one structure, ``"vessel (label map)"``.
    thresholds_c : sequence of float
        Levels at which nerve coverage is judged, degC (-20: axonotmesis; 0: ice).
    skin_margin_mm : float
        Warn when the 0 degC surface comes this close to the skin, mm.
    step_mm : float
        Spacing of the judged points along each nerve, mm.
    ring_points : int
        Points on the ring of nerve radius around each judged point (plus the centre).
    cross_section : {"whole", "any"}
        ``"whole"`` (default): a point is covered when its whole sampled cross-section
        fell below the level (the isotherm encloses the nerve, the clinical aim);
        ``"any"``: when any sample did.
    search_mm : float
        Structures farther than this from the ice are reported without a distance, mm.
    body_temperature_c : float
        Temperature of points outside the solver's box, degC.

    Returns
    -------
    PlanMetrics

    Notes
    -----
    All temperatures are the lowest each place reached over the whole protocol
    (``min_temperature``), sampled trilinearly between cell centres. Points outside the
    solver's box count as body temperature (the box is sized so that the far field has not
    cooled). Distances between the 0 degC surface and a structure are between marching-
    cubes vertices of the two surfaces (the structure's from its voxel faces, or its tube
    for a centreline): within about half a cell or voxel of the exact gap.
    """
    from scipy.spatial import cKDTree

    if cross_section not in CROSS_SECTIONS:
        raise InputError(f"cross_section: expected 'whole' or 'any', got {cross_section!r}")
    for name, value in (("skin_margin_mm", skin_margin_mm), ("step_mm", step_mm), ("search_mm", search_mm)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (name != "skin_margin_mm" and value == 0):
            raise InputError(f"{name}: expected a positive number of mm, got {value!r}")
    thresholds = tuple(sorted(float(t) for t in thresholds_c))
    if not thresholds:
        raise InputError("thresholds_c: need at least one level (degC)")

    result, labels, nerve_list, vessels = _resolve_inputs(run_or_result, labels, nerves, vessels)
    grid = result.grid
    sample = _FieldSampler(grid)
    min_t = np.asarray(result.min_temperature)
    body = float(body_temperature_c)
    notes = [
        "temperatures are the lowest each point reached over the whole protocol",
        f"a nerve point is covered when {'its whole cross-section (centre and ring of nerve radius)' if cross_section == 'whole' else 'any part of its cross-section'} fell below the level",
    ]
    # A preview (planner.thermal.preview) covers only where it is cold: outside it is warm by construction.
    approximate = bool(getattr(result, "approximate", False))
    if approximate:
        notes.append("APPROXIMATE: measured on the fast preview, not the full solver "
                     + str(getattr(result, "caveat", "")).strip())
    warnings: list[PlanWarning] = []

    def warn(code, structure, message, distance=None, position=None):
        warnings.append(PlanWarning(code, structure, message, distance, "",
                                    None if position is None else tuple(float(c) for c in position)))

    # ------------------------------------------------------------ nerves
    time_field = _time_below_field(result, AXONOTMESIS_C)
    if time_field is None and nerve_list:
        notes.append(f"the result did not track time below {AXONOTMESIS_C:g} degC; times per point are not given")
    ordered = [n for n in nerve_list if n.target] + [n for n in nerve_list if not n.target]
    coverage = [
        nerve_coverage(n, sample, min_temperature=min_t, time_below=time_field, thresholds_c=thresholds,
                       step_mm=step_mm, ring_points=ring_points, cross_section=cross_section,
                       body_temperature_c=body)
        for n in ordered
    ]
    if any(c.outside_box for c in coverage):
        notes.append(f"nerve points outside the solver's box count as body temperature ({body:g} degC)")

    # ------------------------------------------------------------ ice surface
    ice_points = isosurface_points(grid, min_t, ICE_EDGE_C)
    ice_tree = cKDTree(ice_points) if len(ice_points) else None
    if ice_tree is None:
        warn("no_ice", "ice", f"no tissue fell below {ICE_EDGE_C:g} degC (coldest {float(min_t.min()):.1f} degC)")

    # ------------------------------------------------------------ structures
    skin = None
    structures: list[StructureApproach] = []
    if labels is None:
        notes.append("no tissue map: skin, bone and lung were not checked")
    grid_labels = _grid_labels(labels, grid) if labels is not None else None
    if labels is not None:
        crop = None
        if ice_tree is not None:
            crop = _label_crop(labels, ice_points.min(axis=0) - search_mm, ice_points.max(axis=0) + search_mm)
        array = np.asarray(labels.array)
        kinds = [("skin", Tissue.SKIN), ("bone", Tissue.BONE), ("lung", Tissue.LUNG)]
        if not vessels:
            kinds.insert(1, ("vessel (label map)", Tissue.VESSEL))
        for name, tissue in kinds:
            kind = "vessel" if tissue == Tissue.VESSEL else name
            on_grid = grid_labels == int(tissue)
            coldest = float(min_t[on_grid].min()) if on_grid.any() else None
            item = None
            if crop is not None:
                low, high = crop
                mask = array[low[0] : high[0], low[1] : high[1], low[2] : high[2]] == int(tissue)
                if mask.any():
                    surface = mask_surface_points(labels, mask, low)
                    inside_kji = np.argwhere(mask) + low
                    # Voxel centres and the surface itself: the surface gives the full depth of ice in it.
                    inside = np.concatenate([labels.index_to_world(inside_kji[:, ::-1].astype(float)), surface])
                    temps = sample(min_t, inside, fill=body)
                    item = _approach_from_points(name, kind, "label map", surface=surface, inside_points=inside,
                                                 inside_temps=temps, ice_tree=ice_tree, search_mm=search_mm)
                    if coldest is not None:
                        item.coldest_c = coldest if item.coldest_c is None else min(coldest, item.coldest_c)
            if item is None and coldest is not None:
                item = StructureApproach(name, kind, "label map", None, coldest < ICE_EDGE_C, coldest)
            if item is None:
                continue
            if name == "skin":
                skin = item
            else:
                structures.append(item)
    if vessels:
        for line in vessels:
            if ice_tree is None:
                samples = _tube_samples(line.points, line.radius_mm, max(step_mm, 0.5))
                coldest = float(sample(min_t, samples, fill=body).min())
                structures.append(StructureApproach(str(line.name), "vessel", "centreline", None, False, coldest))
                continue
            structures.append(_line_approach(line, ice_points=ice_points, ice_tree=ice_tree, sample=sample,
                                             min_temperature=min_t, search_mm=search_mm,
                                             step_mm=max(step_mm, 0.5), body=body))
        # Vessels first, then bone and lung.
        structures.sort(key=lambda s: 0 if s.kind == "vessel" else 1)

    # ------------------------------------------------------------ volumes
    levels = sorted({float(v) for v in getattr(result, "time_below", {})} | {ICE_EDGE_C, AXONOTMESIS_C, -40.0},
                    reverse=True)
    volumes = [
        {
            "level_c": level,
            "volume_ml": round(float(result.isotherm_volume_ml(level, "min")), 4),
            "final_volume_ml": round(float(result.isotherm_volume_ml(level, -1)), 4)
            if len(result.temperatures) else None,
        }
        for level in levels
    ]

    # ------------------------------------------------------------ warnings
    aim = thresholds[0]
    for nerve in coverage:
        if nerve.target:
            covered = nerve.covered_mm[aim]
            if covered <= 0:
                warn("target_not_reached", nerve.name,
                     f"target nerve {nerve.name}: no point fell below {aim:g} degC "
                     f"(its cross-section reached {float(nerve.temperature_c.min()):.1f} degC at best)")
            elif nerve.fraction[aim] < 0.999:
                warn("target_partly_covered", nerve.name,
                     f"target nerve {nerve.name}: {covered:.1f} of {nerve.length_mm:.1f} mm "
                     f"({100 * nerve.fraction[aim]:.0f}%) fell below {aim:g} degC; the longest stretch is "
                     f"{nerve.longest_mm[aim]:.1f} mm", covered)
            if ICE_EDGE_C in nerve.covered_mm and aim < ICE_EDGE_C:
                only_cooled = nerve.covered_mm[ICE_EDGE_C] - covered
                if only_cooled > nerve.step_mm + 1e-9:
                    warn("target_only_cooled", nerve.name,
                         f"target nerve {nerve.name}: {only_cooled:.1f} mm froze but stayed warmer than {aim:g} degC "
                         "(a short, unpredictable block there)", only_cooled)
        else:
            level = max(nerve.thresholds_c)
            if nerve.covered_mm[level] > 0:
                warn("spared_nerve_frozen", nerve.name,
                     f"nerve {nerve.name} (to spare): {nerve.covered_mm[level]:.1f} mm fell below {level:g} degC "
                     f"(coldest {nerve.coldest_c:.1f} degC)", nerve.covered_mm[level])
        if nerve.outside_box and nerve.target and not approximate:
            warn("outside_box", nerve.name,
                 f"nerve {nerve.name}: {nerve.outside_box} of {nerve.arc_mm.size} points lie outside the solver's "
                 f"box and count as body temperature ({body:g} degC)")
    if skin is not None:
        if skin.reached:
            warn("skin_frozen", "skin",
                 f"ice reaches the skin ({-skin.clearance_mm if skin.clearance_mm is not None else 0:.1f} mm deep; "
                 f"coldest skin {skin.coldest_c:.1f} degC): frostbite risk", skin.clearance_mm, skin.closest_point)
        elif skin.clearance_mm is not None and skin.clearance_mm < skin_margin_mm:
            warn("skin_near_ice", "skin",
                 f"the 0 degC surface comes within {skin.clearance_mm:.1f} mm of the skin "
                 f"(safety margin {skin_margin_mm:g} mm; coldest skin {skin.coldest_c:.1f} degC)",
                 skin.clearance_mm, skin.closest_point)
    for item in structures:
        if item.reached:
            code = {"vessel": "vessel_frozen", "bone": "bone_frozen", "lung": "lung_frozen"}[item.kind]
            what = {"vessel": f"vessel {item.name}", "bone": "bone", "lung": "the lung or an air space"}[item.kind]
            depth = "" if item.clearance_mm is None else f", {-item.clearance_mm:.1f} mm deep"
            warn(code, item.name, f"ice reaches {what}{depth} (coldest {item.coldest_c:.1f} degC)",
                 item.clearance_mm, item.closest_point)
    notes += [f"solver: {note}" for note in getattr(result, "notes", [])]
    return PlanMetrics(
        nerves=coverage,
        skin=skin,
        structures=structures,
        isotherm_volumes_ml=volumes,
        min_temperature_c=float(min_t.min()),
        warnings=warnings,
        notes=notes,
        thresholds_c=thresholds,
        skin_margin_mm=float(skin_margin_mm),
        search_mm=float(search_mm),
    )


def _time_below_field(result, level: float):
    for key, values in getattr(result, "time_below", {}).items():
        if abs(float(key) - level) < 1e-9:
            return np.asarray(values)
    return None


def _grid_labels(labels: Volume, grid) -> np.ndarray:
    """Tissue label of each grid cell (nearest voxel; the edge voxel beyond the image), as the solver sees it."""
    centres = grid.local_to_world(grid.cell_centres_local().reshape(-1, 3))
    ijk = np.rint(labels.world_to_index(centres)).astype(np.int64)
    ijk = np.clip(ijk, 0, np.array(labels.shape_xyz) - 1)
    return np.asarray(labels.array)[ijk[:, 2], ijk[:, 1], ijk[:, 0]].reshape(grid.shape)


__all__ = [
    "AXONOTMESIS_C",
    "ICE_EDGE_C",
    "METRIC_WARNING_CODES",
    "NerveCoverage",
    "PlanMetrics",
    "StructureApproach",
    "compute_metrics",
    "cross_section_points",
    "isosurface_points",
    "mask_surface_points",
    "nerve_coverage",
]
