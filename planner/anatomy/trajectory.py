"""Trajectory checks: is a probe's path from the skin to its tip safe?

The shaft (a cylinder of the probe's diameter from the entry point to the tip) must not
cross bone, a blood vessel, lung, or a nerve (piercing the nerve it is meant to freeze
is a complication in its own right); the entry must be on the skin; the tip must be in
the image and in the body; the insertion must not be longer than the probe allows.
Each problem is a :class:`PlanWarning` whose message names the structure and the
distance in millimetres, e.g. "shaft crosses bone 23.5 mm from the entry (over 7.0 mm)".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.anatomy import skin
from planner.anatomy.nerves import Nerve
from planner.errors import InputError
from planner.labels import Tissue
from planner.volume import Volume

AVOID_DEFAULT = (Tissue.BONE, Tissue.VESSEL, Tissue.LUNG)
"""Tissue classes the shaft must not cross (nerves are checked as well, see check_trajectory)."""
ENTRY_TOLERANCE_MM = 2.0
"""An entry point farther than this from the skin surface is reported, mm."""

STRUCTURE_WORDS = {"lung": "lung or an air space", "soft_tissue": "soft tissue"}
"""How messages name a tissue class where its key alone would mislead or read oddly
(CT classes every air space inside the body as lung)."""

WARNING_CODES = {
    "shaft_crosses_bone": "the shaft passes through bone",
    "shaft_crosses_vessel": "the shaft passes through a blood vessel",
    "shaft_crosses_lung": "the shaft passes into lung or another air space in the body (a sinus, "
                          "bowel gas); in the chest, a pneumothorax risk",
    "shaft_crosses_nerve": "the shaft passes through a nerve",
    "shaft_crosses_tissue": "the shaft passes through another tissue class on the avoid list",
    "entry_off_skin": "the entry point is not on the skin",
    "entry_outside_volume": "the entry point is outside the image, so the skin there is not checked",
    "skin_not_found": "the image shows no skin surface near the entry",
    "tip_outside_volume": "the tip is outside the image",
    "tip_outside_body": "the tip is in air, outside the body",
    "shaft_too_long": "the insertion is longer than the probe's usable length",
}
"""Every warning code and what it means."""


@dataclass(frozen=True)
class PlanWarning:
    """A problem found in a plan, in plain words.

    Parameters
    ----------
    code : str
        Stable identifier, one of :data:`WARNING_CODES`.
    structure : str
        What it concerns: a tissue key (``"bone"``), a nerve name, ``"skin"``,
        ``"volume"``, ``"body"`` or ``"probe"``.
    message : str
        One sentence for the user, naming the structure and the distance in mm.
    distance_mm : float or None
        Distance along the shaft from the entry (for crossings), or to the structure
        (skin, edge of the image), mm.
    probe : str
        Name of the probe concerned, ``""`` if none.
    position : (3,) tuple of float or None
        World LPS mm of the spot (where the shaft meets the structure, the entry, the tip).
    """

    code: str
    structure: str
    message: str
    distance_mm: float | None = None
    probe: str = ""
    position: tuple[float, float, float] | None = None

    def __str__(self) -> str:
        return f"probe {self.probe}: {self.message}" if self.probe else self.message


@dataclass(frozen=True)
class Crossing:
    """A stretch of the shaft inside one structure; distances along the shaft from the entry, mm."""

    structure: str
    start_mm: float
    end_mm: float
    position: tuple[float, float, float]


def _half_extent(labels: Volume, unit_vectors: np.ndarray) -> np.ndarray:
    """Half the width of a voxel (mm) along each unit vector ``(..., 3)``: its box's support."""
    columns = labels.affine[:3, :3]  # each column is one voxel step in world
    return 0.5 * np.abs(unit_vectors @ columns).sum(axis=-1)


def _runs(starts: np.ndarray, ends: np.ndarray, gap_mm: float) -> list[tuple[float, float]]:
    """Merge intervals ``[start, end]`` that overlap or lie within ``gap_mm``."""
    order = np.argsort(starts)
    runs: list[list[float]] = []
    for start, end in zip(starts[order], ends[order]):
        if runs and start <= runs[-1][1] + gap_mm:
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([float(start), float(end)])
    return [(a, b) for a, b in runs]


def shaft_crossings(tip, entry, labels: Volume, *, radius_mm: float, tissues=AVOID_DEFAULT) -> list[Crossing]:
    """Stretches of a shaft that overlap voxels of given tissue classes.

    Parameters
    ----------
    tip, entry : (3,) array_like, mm
        World LPS ends of the shaft.
    labels : Volume
        Tissue map.
    radius_mm : float
        Probe radius, mm (the shaft is a cylinder with flat ends).
    tissues : iterable of Tissue
        Classes to look for.

    Returns
    -------
    list of Crossing
        Sorted by distance from the entry. A voxel counts when its box (the voxel's own
        extent) reaches the cylinder: its centre within ``radius_mm`` plus its half-width
        of the axis, and between the ends widened by its half-length. ``start_mm`` is the
        distance along the shaft from the entry to the first such voxel's near face.
    """
    tip, entry = np.asarray(tip, dtype=float), np.asarray(entry, dtype=float)
    axis = tip - entry
    length = float(np.linalg.norm(axis))
    if length < 1e-9:
        return []
    unit = axis / length
    array = np.asarray(labels.array)
    reach = radius_mm + float(labels.spacing.max())
    ends = labels.world_to_index(np.stack([entry, tip]))
    pad = np.ceil(reach / labels.spacing)
    upper = np.array(labels.shape_xyz) - 1
    low = np.clip(np.floor(ends.min(axis=0) - pad), 0, upper).astype(int)
    high = np.clip(np.ceil(ends.max(axis=0) + pad), 0, upper).astype(int) + 1
    if np.any(high <= low):
        return []
    crop = array[low[2] : high[2], low[1] : high[1], low[0] : high[0]]
    along_half = float(_half_extent(labels, unit))
    gap = float(labels.spacing.max())

    crossings: list[Crossing] = []
    for tissue in tissues:
        kji = np.argwhere(crop == int(tissue))
        if len(kji) == 0:
            continue
        centres = labels.index_to_world(kji[:, ::-1] + low)
        offset = centres - entry
        t = offset @ unit
        radial = offset - t[:, None] * unit
        rho = np.linalg.norm(radial, axis=1)
        radial_unit = np.divide(radial, rho[:, None], out=np.zeros_like(radial), where=rho[:, None] > 1e-12)
        hit = (t >= -along_half) & (t <= length + along_half) & (rho <= radius_mm + _half_extent(labels, radial_unit))
        if not np.any(hit):
            continue
        starts = np.clip(t[hit] - along_half, 0.0, length)
        stops = np.clip(t[hit] + along_half, 0.0, length)
        name = Tissue(int(tissue)).key
        for start, stop in _runs(starts, stops, gap):
            crossings.append(Crossing(name, start, stop, tuple(float(c) for c in entry + unit * start)))
    crossings.sort(key=lambda c: c.start_mm)
    return crossings


def nerve_crossings(tip, entry, nerves, *, radius_mm: float) -> list[Crossing]:
    """Stretches of a shaft that touch nerves given as centrelines with radii.

    The shaft is a cylinder (radius ``radius_mm``, flat ends) and the nerve a chain of
    balls of its local radius along a finely resampled centreline; a ball touching the
    cylinder is a hit, placed along the shaft where the two first touch.

    Returns
    -------
    list of Crossing
        One per nerve touched (``structure`` is its name), sorted by distance from the entry.
    """
    tip, entry = np.asarray(tip, dtype=float), np.asarray(entry, dtype=float)
    axis = tip - entry
    length = float(np.linalg.norm(axis))
    if length < 1e-9:
        return []
    unit = axis / length
    crossings = []
    for nerve in nerves:
        step = max(min(0.25 * float(np.min(nerve.local_radii_mm())), 0.25), 0.02)
        fine = nerve.resampled(step)
        offset = fine.centreline - entry
        t = offset @ unit
        rho = np.linalg.norm(offset - t[:, None] * unit, axis=1)
        radii = fine.local_radii_mm()
        beyond = np.maximum(np.maximum(-t, t - length), 0.0)  # past an end of the shaft
        outside = np.maximum(rho - radius_mm, 0.0)
        hit = np.hypot(beyond, outside) <= radii
        if not np.any(hit):
            continue
        half_chord = np.sqrt(np.maximum(radii[hit] ** 2 - outside[hit] ** 2, 0.0))
        start = float(np.clip(np.min(t[hit] - half_chord), 0.0, length))
        stop = float(np.clip(np.max(t[hit] + half_chord), 0.0, length))
        crossings.append(Crossing(nerve.name, start, stop, tuple(float(c) for c in entry + unit * start)))
    crossings.sort(key=lambda c: c.start_mm)
    return crossings


def _outside_volume_mm(labels: Volume, point: np.ndarray) -> float:
    """How far a world point lies outside the image's voxel extent (faces of the edge voxels), mm."""
    ijk = labels.world_to_index(point)
    upper = np.array(labels.shape_xyz) - 0.5
    clamped = np.clip(ijk, -0.5, upper)
    return float(np.linalg.norm(labels.affine[:3, :3] @ (ijk - clamped)))


def _xyz(point) -> tuple[float, float, float]:
    return tuple(float(c) for c in point)


def check_trajectory(
    tip,
    entry,
    labels: Volume,
    *,
    nerves=(),
    probe_diameter_mm: float,
    usable_length_mm: float | None = None,
    probe_name: str = "",
    avoid=AVOID_DEFAULT,
    entry_tolerance_mm: float = ENTRY_TOLERANCE_MM,
) -> list[PlanWarning]:
    """Check a probe path from ``entry`` to ``tip`` against a tissue map and nerves.

    Parameters
    ----------
    tip, entry : (3,) array_like, mm
        World LPS physical tip and entry point.
    labels : Volume
        Tissue map (:class:`Tissue` values).
    nerves : iterable of Nerve
        Nerves as centrelines with radii (targets included: the shaft must not pierce
        the nerve it freezes). When none are given, voxels labelled
        :attr:`Tissue.NERVE` are checked instead.
    probe_diameter_mm : float
        Outer diameter of the shaft, mm.
    usable_length_mm : float, optional
        Longest insertion the probe allows (skin to tip), mm.
    probe_name : str
        Put in each warning.
    avoid : iterable of Tissue
        Tissue classes the shaft must not cross (bone, vessel, lung by default).
    entry_tolerance_mm : float
        How far from the skin surface the entry may lie, mm.

    Returns
    -------
    list of PlanWarning
        Empty when the path is clear: first the tip and entry, then every crossing in
        order along the shaft, then the length.

    Raises
    ------
    InputError
        For points that are not 3 finite numbers, an entry equal to the tip, or a
        diameter that is not positive.
    """
    tip, entry = np.asarray(tip, dtype=float), np.asarray(entry, dtype=float)
    for what, point in (("tip", tip), ("entry", entry)):
        if point.shape != (3,) or not np.all(np.isfinite(point)):
            raise InputError(f"{what}: expected 3 finite numbers [x, y, z] in mm")
    if np.linalg.norm(tip - entry) < 1e-6:
        raise InputError("entry must differ from tip (it sets the shaft direction)")
    if not np.isfinite(probe_diameter_mm) or probe_diameter_mm <= 0:
        raise InputError(f"probe_diameter_mm: must be > 0 mm, got {probe_diameter_mm!r}")
    radius = 0.5 * float(probe_diameter_mm)
    warnings: list[PlanWarning] = []

    def warn(code, structure, message, distance=None, position=None):
        warnings.append(PlanWarning(code, structure, message, distance, probe_name,
                                    None if position is None else _xyz(position)))

    # The tip.
    outside = _outside_volume_mm(labels, tip)
    if outside > 0:
        warn("tip_outside_volume", "volume", f"tip is outside the image, {outside:.1f} mm beyond its edge", outside, tip)
    elif not bool(skin.inside_body(labels, tip)):
        distance = skin.distance_to_skin(labels, tip)
        where = f", {distance:.1f} mm from the skin" if np.isfinite(distance) else ""
        warn("tip_outside_body", "body", f"tip is outside the body, in air{where}",
             float(distance) if np.isfinite(distance) else None, tip)

    # The entry.
    outside = _outside_volume_mm(labels, entry)
    if outside > 0:
        warn("entry_outside_volume", "volume",
             f"entry is outside the image, {outside:.1f} mm beyond its edge; the skin there is not checked",
             outside, entry)
    else:
        distance = skin.distance_to_skin(labels, entry)
        if not np.isfinite(distance):
            warn("skin_not_found", "skin", "the image shows no skin surface, so the entry cannot be checked",
                 None, entry)
        elif distance > entry_tolerance_mm:
            warn("entry_off_skin", "skin",
                 f"entry is {distance:.1f} mm above the skin (more than {entry_tolerance_mm:g} mm)", distance, entry)
        elif distance < -entry_tolerance_mm:
            warn("entry_off_skin", "skin",
                 f"entry is {-distance:.1f} mm below the skin surface, inside the body "
                 f"(more than {entry_tolerance_mm:g} mm)", -distance, entry)

    # The shaft.
    nerves = list(nerves)
    tissues = [Tissue(int(t)) for t in avoid]
    if not nerves and Tissue.NERVE not in tissues:
        tissues.append(Tissue.NERVE)
    crossings = shaft_crossings(tip, entry, labels, radius_mm=radius, tissues=tissues)
    crossings += nerve_crossings(tip, entry, nerves, radius_mm=radius)
    crossings.sort(key=lambda c: c.start_mm)
    nerve_names = {nerve.name for nerve in nerves}
    for crossing in crossings:
        span = crossing.end_mm - crossing.start_mm
        if crossing.structure in nerve_names:
            code, label = "shaft_crosses_nerve", f"nerve {crossing.structure}"
        else:
            code = f"shaft_crosses_{crossing.structure}"
            code = code if code in WARNING_CODES else "shaft_crosses_tissue"
            label = STRUCTURE_WORDS.get(crossing.structure, crossing.structure)
        warn(code, crossing.structure,
             f"shaft crosses {label} {crossing.start_mm:.1f} mm from the entry (over {span:.1f} mm)",
             crossing.start_mm, crossing.position)

    # The length.
    if usable_length_mm is not None:
        crossing_point = skin.skin_crossing(labels, entry, tip)
        start = crossing_point if crossing_point is not None else entry
        inserted = float(np.linalg.norm(tip - start))
        if inserted > usable_length_mm:
            warn("shaft_too_long", "probe",
                 f"insertion is {inserted:.1f} mm, longer than the probe's usable length of {usable_length_mm:.1f} mm",
                 inserted, tip)
    return warnings


def check_placement(placement, labels: Volume, *, nerves=(), **options) -> list[PlanWarning]:
    """:func:`check_trajectory` for a :class:`~planner.anatomy.placement.ProbePlacement`
    (its diameter, usable length and name)."""
    return check_trajectory(
        placement.tip, placement.entry, labels, nerves=nerves,
        probe_diameter_mm=placement.diameter_mm, usable_length_mm=placement.usable_length_mm,
        probe_name=placement.name, **options,
    )


def check_plan_trajectories(plan, labels: Volume, *, nerves=None, **options) -> list[PlanWarning]:
    """Check every probe of a :class:`~planner.plan.Plan` against a tissue map.

    ``nerves`` defaults to the plan's own nerves (as :class:`Nerve`); options go to
    :func:`check_trajectory`.
    """
    from planner.anatomy.placement import placement_from_plan_probe

    if nerves is None:
        nerves = [Nerve.from_plan(entry) for entry in plan.nerves]
    warnings = []
    for probe in plan.probes:
        placement = placement_from_plan_probe(probe, None)
        warnings += check_placement(placement, labels, nerves=nerves, **options)
    return warnings
