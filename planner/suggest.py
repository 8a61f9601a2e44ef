"""Suggested probe placement: where to put the tip and the entry so the ice covers the nerve.

Given a nerve segment to treat, a probe model, a tissue map and a protocol,
:func:`suggest_placement` proposes one or more probes (tip and skin entry, world LPS mm)
that maximise the length of nerve whose whole cross-section falls below -20 degC, while

- the 0 degC surface stays at least ``skin_margin_mm`` from the skin (no frostbite), and
- each shaft, from its skin entry to its tip, is clear of bone, vessels, lung and nerves
  (:func:`planner.anatomy.check_trajectory`).

How it searches: the fast preview model (:mod:`planner.thermal.preview`: precomputed
single-probe fields, their union for several probes; an approximation) scores candidates:

1. candidate tips along the segment (every ``tip_step_mm``): each just short of the nerve,
   or beside it with the active segment level with it, on either side;
2. candidate directions from the skin side: directions spread over the sphere along which
   a straight shaft reaches the tip from the skin within ``max_insertion_mm``;
3. every candidate is scored by the preview (covered length, skin constraint); the best
   ones have their trajectory checked until enough clear ones are found;
4. local refinement: small moves of the tip and tilts of the direction, kept when the
   preview score improves and the path stays clear;
5. a second probe (``n_probes=2``) is placed the same way with the first one fixed, scored
   on the union of the two.

Then the full solver (:func:`planner.thermal.simulate`) confirms the best placement and
:func:`planner.metrics.compute_metrics` reports what it achieved, next to what the preview
predicted. The preview ignores the anatomy around the probe (one tissue for the whole
search) and the interaction between probes, so the full solver's answer is the one to
read.

Research and education only; not for clinical use.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from planner.anatomy.nerves import Nerve
from planner.anatomy.trajectory import PlanWarning, check_trajectory
from planner.errors import InputError
from planner.labels import Tissue
from planner.metrics import (
    AXONOTMESIS_C,
    ICE_EDGE_C,
    PlanMetrics,
    compute_metrics,
    cross_section_points,
    point_weights,
)
from planner.volume import Volume

DEFAULT_SKIN_MARGIN_MM = 3.0
TIP_STEP_MM = 2.0
"""Spacing of candidate tip positions along the nerve segment, mm."""
N_DIRECTIONS = 64
"""Candidate directions spread over the sphere (about 25 degrees apart) for each tip position."""
NERVE_CLEARANCE_MM = 0.25
"""Gap left between the probe and the nerve's surface, mm (the shaft must not pierce the nerve)."""
SEARCH_REACH_MM = 30.0
"""Room around the nerve segment where the skin band is looked at, mm."""
MAX_INSERTION_MM = 100.0
PROBE_SPACING_MM = 3.0
"""Least distance between the axes of two suggested probes, mm."""
AVOID_VALUES = np.array([int(Tissue.BONE), int(Tissue.VESSEL), int(Tissue.LUNG)])
"""Tissue labels a shaft must not touch (as :data:`planner.anatomy.trajectory.AVOID_DEFAULT`)."""
BLOCKING_CODES = ("shaft_crosses_", "tip_outside_", "shaft_too_long", "entry_off_skin", "entry_outside_volume", "skin_not_found")


# ============================================================================ data
@dataclass(eq=False)
class Candidate:
    """One probe placement judged by the preview.

    Attributes
    ----------
    tips, entries : (p, 3) ndarray
        World LPS mm of each probe's tip and skin entry (entries may be NaN until the
        trajectory is checked).
    directions : (p, 3) ndarray
        Unit vectors of insertion (entry towards tip).
    covered_mm : float
        Preview: nerve length whose whole cross-section fell below -20 degC, mm.
    coldest_mean_c : float
        Preview: mean over the segment of the cross-section's (warmest sample's) lowest
        temperature, clipped to [-40, 37] degC; breaks ties (colder is better).
    skin_min_c : float
        Preview: lowest temperature in the band within the margin of the skin, degC.
    feasible : bool
        ``skin_min_c >= 0``.
    warnings : list of PlanWarning
        Trajectory warnings (after :func:`check_trajectory`).
    """

    tips: np.ndarray
    directions: np.ndarray
    covered_mm: float
    coldest_mean_c: float
    skin_min_c: float
    entries: np.ndarray | None = None
    warnings: list = field(default_factory=list)
    checked: bool = False

    @property
    def feasible(self) -> bool:
        return self.skin_min_c >= ICE_EDGE_C

    @property
    def clear(self) -> bool:
        """Trajectory checked and nothing blocking found."""
        return self.checked and not _blocking(self.warnings)

    def score(self) -> tuple[float, float]:
        return (round(self.covered_mm, 6), -self.coldest_mean_c)


@dataclass(eq=False)
class Suggestion:
    """What :func:`suggest_placement` proposes and what it achieved.

    Attributes
    ----------
    nerve : Nerve
        The segment treated.
    probe_model : str
        Catalogue name.
    probes : list of planner.plan.PlanProbe
        The proposal, ready for a plan (``tip``, ``entry`` on the skin), names ``"A"``, ``"B"``.
    insertion_depth_mm, angle_to_skin_normal_deg : list of float or None
        Per probe, from :func:`planner.anatomy.place_probe`.
    preview_covered_mm : float
        Nerve length below -20 degC (whole cross-section) in the preview, mm.
    preview_skin_min_c : float
        Preview: lowest temperature within ``skin_margin_mm`` of the skin, degC.
    metrics : PlanMetrics or None
        The full solver's result for the proposal (None when ``confirm=False``).
    covered_mm : float or None
        Full solver: nerve length below -20 degC, mm.
    preview_minus_full_mm : float or None
        ``preview_covered_mm - covered_mm``: how far the preview was off.
    trajectory_warnings : list of PlanWarning
        Remaining (non-blocking) trajectory remarks for the proposal.
    warnings : list of str
        What the user should know: margins not met, nothing found, preview caveats.
    start_covered_mm : float or None
        Preview coverage of the ``start`` placement given (for comparison).
    preview_covered_per_probe_mm : list of float
        Preview coverage with the first probe alone, then with the first two, ..., mm.
    candidates : int
        Number of placements the preview judged.
    search_s, confirm_s : float
        Wall times of the search and of the full-solver confirmation, s.
    """

    nerve: Nerve
    probe_model: str
    probes: list
    insertion_depth_mm: list
    angle_to_skin_normal_deg: list
    preview_covered_mm: float
    preview_skin_min_c: float
    skin_margin_mm: float
    metrics: PlanMetrics | None = None
    covered_mm: float | None = None
    preview_minus_full_mm: float | None = None
    trajectory_warnings: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    start_covered_mm: float | None = None
    preview_covered_per_probe_mm: list = field(default_factory=list)
    candidates: int = 0
    search_s: float = 0.0
    confirm_s: float = 0.0

    @property
    def found(self) -> bool:
        """True when a clear placement was found (it may still cover nothing)."""
        return bool(self.probes)

    def to_dict(self) -> dict:
        """JSON-ready dict (the full metrics without per-point arrays)."""
        return {
            "nerve": self.nerve.name,
            "segment_length_mm": round(self.nerve.length_mm, 2),
            "probe_model": self.probe_model,
            "probes": [
                {"name": p.name, "model": p.model, "tip": [round(float(v), 2) for v in p.tip],
                 "entry": [round(float(v), 2) for v in p.entry],
                 "insertion_depth_mm": _r(depth, 1), "angle_to_skin_normal_deg": _r(angle, 1)}
                for p, depth, angle in zip(self.probes, self.insertion_depth_mm, self.angle_to_skin_normal_deg)
            ],
            "skin_margin_mm": self.skin_margin_mm,
            "preview_covered_mm": _r(self.preview_covered_mm, 2),
            "preview_skin_min_c": _r(self.preview_skin_min_c, 1),
            "covered_mm": _r(self.covered_mm, 2),
            "preview_minus_full_mm": _r(self.preview_minus_full_mm, 2),
            "start_covered_mm": _r(self.start_covered_mm, 2),
            "preview_covered_per_probe_mm": [_r(v, 2) for v in self.preview_covered_per_probe_mm],
            "metrics": None if self.metrics is None else self.metrics.to_dict(),
            "trajectory_warnings": [w.message for w in self.trajectory_warnings],
            "warnings": list(self.warnings),
            "candidates": int(self.candidates),
            "search_s": round(self.search_s, 2),
            "confirm_s": round(self.confirm_s, 2),
        }

    def describe(self) -> list[str]:
        """Lines for people."""
        lines = [f"suggested placement for {self.nerve.name} ({self.nerve.length_mm:.1f} mm segment), "
                 f"{len(self.probes)} x {self.probe_model}:"]
        for p, depth, angle in zip(self.probes, self.insertion_depth_mm, self.angle_to_skin_normal_deg):
            tip = ", ".join(f"{v:.1f}" for v in p.tip)
            entry = ", ".join(f"{v:.1f}" for v in p.entry)
            extra = []
            if depth is not None:
                extra.append(f"{depth:.1f} mm deep")
            if angle is not None:
                extra.append(f"{angle:.0f} deg from the skin normal")
            lines.append(f"  probe {p.name}: tip [{tip}], entry [{entry}]" + (f" ({', '.join(extra)})" if extra else ""))
        lines.append(f"preview: {self.preview_covered_mm:.1f} mm of nerve below {AXONOTMESIS_C:g} degC; "
                     f"coldest within {self.skin_margin_mm:g} mm of the skin {self.preview_skin_min_c:.1f} degC")
        if self.covered_mm is not None:
            lines.append(f"full solver: {self.covered_mm:.1f} mm below {AXONOTMESIS_C:g} degC "
                         f"(preview minus full: {self.preview_minus_full_mm:+.1f} mm)")
        if self.start_covered_mm is not None:
            lines.append(f"the starting placement covered {self.start_covered_mm:.1f} mm in the preview")
        if self.metrics is not None:
            lines += ["  " + line for line in self.metrics.describe()]
        lines += [f"remark: {w.message}" for w in self.trajectory_warnings]
        lines += [f"WARNING: {w}" for w in self.warnings]
        lines.append(f"{self.candidates} placements judged in {self.search_s:.1f} s; "
                     f"full-solver check {self.confirm_s:.1f} s")
        return lines


def _r(value, digits):
    return None if value is None or not math.isfinite(float(value)) else round(float(value), digits)


def _blocking(warnings) -> list:
    return [w for w in warnings if w.code.startswith(BLOCKING_CODES)]


# ============================================================================ geometry helpers
def nerve_segment(nerve: Nerve, start_mm: float, end_mm: float, *, step_mm: float = 0.25) -> Nerve:
    """The part of ``nerve`` from ``start_mm`` to ``end_mm`` along its centreline (mm, clipped
    to its length), keeping its name, radius and target flag."""
    length = nerve.length_mm
    lo, hi = sorted((float(start_mm), float(end_mm)))
    lo, hi = max(lo, 0.0), min(hi, length)
    if hi - lo < 1e-6:
        raise InputError(f"segment of nerve {nerve.name!r}: {start_mm}-{end_mm} mm is empty (length {length:.1f} mm)")
    arc = np.append(np.arange(lo, hi, step_mm), hi)
    radii = None if nerve.radii_mm is None else np.interp(arc, nerve.arc_lengths(), nerve.radii_mm)
    return Nerve(nerve.name, nerve.point_at(arc), nerve.radius_mm, target=nerve.target, radii_mm=radii)


def _unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=float)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _perpendicular(d: np.ndarray, preferred: np.ndarray) -> np.ndarray:
    """A unit vector perpendicular to ``d``, along ``preferred``'s perpendicular part when it has one."""
    v = preferred - (preferred @ d) * d
    if np.linalg.norm(v) < 1e-6:
        v = np.cross(d, np.eye(3)[int(np.argmin(np.abs(d)))])
    return _unit(v)


def _segment_distance(a0, a1, b0, b1) -> float:
    """Least distance between segments a0-a1 and b0-b1 (mm), by dense sampling (cheap, exact enough)."""
    s = np.linspace(0.0, 1.0, 41)
    pa = a0 + s[:, None] * (a1 - a0)
    pb = b0 + s[:, None] * (b1 - b0)
    return float(np.min(np.linalg.norm(pa[:, None] - pb[None], axis=-1)))


# ============================================================================ the search context
class _Context:
    """Everything the preview scoring needs, computed once per search."""

    def __init__(self, *, segment, model, labels, protocol, properties, skin_margin_mm, nerves, preview_options,
                 search_tissue, through_target: bool = False):
        self.segment = segment
        self.through_target = bool(through_target)
        self.model = model
        self.labels = labels
        self.protocol = tuple(protocol)
        self.properties = properties
        self.skin_margin_mm = float(skin_margin_mm)
        self.nerves = nerves
        self.preview_options = dict(preview_options)
        self.evaluated = 0
        arc, centres, samples = cross_section_points(segment)
        self.arc, self.centres, self.samples = arc, centres, samples
        self.weights = point_weights(arc)
        self.search_tissue = search_tissue
        self.reach_mm = self._ice_reach_mm()
        band = _skin_band_points(labels, segment, skin_margin_mm)
        # Only the skin band within the ice's reach of the nerve can be touched by a candidate.
        self.skin_band = band[segment.distance_to(band) <= self.reach_mm] if len(band) else band
        self.points = np.concatenate([samples.reshape(-1, 3), self.skin_band])

    def _ice_reach_mm(self) -> float:
        """Farthest the preview's 0 degC surface gets from a nerve a probe is aimed at, mm:
        the single-probe field's 0 degC extent from the tip plus the probe's offset from the nerve."""
        from planner.thermal.preview import probe_field_table, probe_steps

        table = probe_field_table(
            self.place(np.zeros(3), np.array([0.0, 0.0, -1.0])), probe_steps(self.protocol, 0),
            tissue=self.properties[self.search_tissue], **self.preview_options,
        )
        self.table = table
        extent = table.cold_extent(ICE_EDGE_C)
        if extent is None:
            return 0.0
        radius, z_low, z_high = extent
        offset = float(np.max(self.segment.local_radii_mm())) + self.model.diameter_mm + NERVE_CLEARANCE_MM
        return float(math.hypot(radius, max(-z_low, z_high))) + offset + 1.0

    def place(self, tip, direction, name="A"):
        """A PlacedProbe at ``tip`` inserted along ``direction`` (a provisional entry 50 mm back)."""
        return self.model.place(tip, np.asarray(tip) - 50.0 * np.asarray(direction), name=name)

    def field(self, points, tips, directions) -> np.ndarray:
        """The preview's lowest temperature (degC) at world points (n, 3) for probes of the
        model at ``tips`` inserted along ``directions``: the minimum over the probes of the
        single-probe table (what :func:`planner.thermal.preview.preview_at_points` computes,
        done here in numpy on the one cached table, which is faster for a few thousand points)."""
        out = np.full(len(points), self.table.body_temperature)
        for tip, direction in zip(tips, directions):
            offset = points - tip
            up_shaft = -np.asarray(direction, dtype=float)  # the table's z runs from the tip up the shaft
            z = offset @ up_shaft
            r = np.sqrt(np.maximum(np.einsum("ij,ij->i", offset, offset) - z * z, 0.0))
            near = (r <= self.table.r_max_mm) & (z >= self.table.z_range_mm[0]) & (z <= self.table.z_range_mm[1])
            if near.any():
                out[near] = np.minimum(out[near], self.table.lookup(r[near], z[near]))
        return out

    def judge(self, tips, directions) -> Candidate:
        values = self.field(self.points, tips, directions)
        self.evaluated += 1
        n_samples = self.samples.shape[0] * self.samples.shape[1]
        nerve_values = values[:n_samples].reshape(self.samples.shape[:2]).max(axis=1)
        covered = float(self.weights[nerve_values < AXONOTMESIS_C].sum())
        skin_min = float(values[n_samples:].min()) if len(values) > n_samples else 37.0
        coldest = float(np.mean(np.clip(nerve_values, -40.0, 37.0)))
        return Candidate(np.array(tips, dtype=float), np.array(directions, dtype=float), covered, coldest, skin_min)

    def quick_clear(self, candidate: Candidate, *, max_insertion_mm: float) -> bool:
        """A fast screen before :meth:`check`: each shaft, from its tip back to where its line
        leaves the body, sampled on its axis and on a ring of the probe's radius, touches no
        voxel of bone, vessel or lung (nearest voxel) and passes no nerve closer than the two
        radii. False means blocked for sure (up to the voxel size); True still needs :meth:`check`."""
        from planner.anatomy.skin import inside_body

        step = 0.5 * float(self.labels.spacing.min())
        radius = 0.5 * self.model.diameter_mm
        angles = np.linspace(0.0, 2 * math.pi, 6, endpoint=False)
        array = np.asarray(self.labels.array)
        upper = np.array(self.labels.shape_xyz) - 1
        for tip, direction in zip(candidate.tips, candidate.directions):
            distances = np.arange(0.0, max_insertion_mm + step, step)
            axis = tip[None, :] - distances[:, None] * direction[None, :]
            inside = inside_body(self.labels, axis)
            if inside.all():
                return False  # the skin is not reached within the length
            keep = int(np.argmin(inside)) + 1
            axis, distances = axis[:keep], distances[:keep]
            e1 = _perpendicular(direction, np.array([1.0, 0.0, 0.0]))
            e2 = np.cross(direction, e1)
            ring = axis[:, None, :] + radius * (np.cos(angles)[None, :, None] * e1 + np.sin(angles)[None, :, None] * e2)
            points = np.concatenate([axis, ring.reshape(-1, 3)])
            ijk = np.clip(np.rint(self.labels.world_to_index(points)).astype(np.int64), 0, upper)
            values = array[ijk[:, 2], ijk[:, 1], ijk[:, 0]]
            if np.isin(values, AVOID_VALUES).any():
                return False
            # A ball of the probe's radius around an axis point at least one radius back from
            # the tip lies inside the shaft, so a nerve that close is touched for sure; the
            # tip itself must not be inside a nerve.
            back = axis[distances >= radius]
            for nerve in self.nerves:
                nerve_radius = float(np.max(nerve.local_radii_mm()))
                if np.any(nerve.distance_to(back) < nerve_radius + radius) or nerve.distance_to(tip) < nerve_radius:
                    return False
        return True

    def check(self, candidate: Candidate, *, max_insertion_mm: float) -> Candidate:
        """Find the skin entries and check the trajectories (once per candidate)."""
        from planner.anatomy.placement import place_probe

        if candidate.checked:
            return candidate
        entries, warnings = [], []
        for i, (tip, direction) in enumerate(zip(candidate.tips, candidate.directions)):
            name = "AB"[i] if i < 2 else f"P{i}"
            try:
                placement = place_probe(self.labels, tip=tip, direction=direction, model=self.model.name, name=name)
            except InputError as error:
                warnings.append(PlanWarning("tip_outside_body", "body", str(error), None, name))
                entries.append(np.full(3, np.nan))
                continue
            entries.append(placement.entry)
            warnings += check_trajectory(tip, placement.entry, self.labels, nerves=self.nerves,
                                         probe_diameter_mm=self.model.diameter_mm, probe_name=name,
                                         usable_length_mm=max_insertion_mm)
        candidate.entries = np.array(entries)
        candidate.warnings = warnings
        candidate.checked = True
        return candidate


def _crop_around(labels: Volume, points: np.ndarray, reach_mm: float):
    from planner.metrics import _label_crop

    return _label_crop(labels, points.min(axis=0) - reach_mm, points.max(axis=0) + reach_mm)


def _skin_band_points(labels: Volume, segment: Nerve, margin_mm: float) -> np.ndarray:
    """World points (n, 3) of the deepest layer of body voxels within ``margin_mm`` of the
    skin near the segment: where the 0 degC surface must not reach. The skin is
    :attr:`Tissue.SKIN`, or the body's surface when the map has no skin there."""
    from scipy import ndimage

    crop = _crop_around(labels, segment.centreline, SEARCH_REACH_MM)
    if crop is None:
        return np.zeros((0, 3))
    low, high = crop
    array = np.asarray(labels.array)[low[0] : high[0], low[1] : high[1], low[2] : high[2]]
    skin = array == Tissue.SKIN
    if not skin.any():
        skin = array == Tissue.AIR
    if not skin.any():
        return np.zeros((0, 3))
    distance = ndimage.distance_transform_edt(~skin, sampling=labels.spacing[::-1])
    # The deepest layer of the band is enough: ice growing from a deeper probe crosses it
    # before it reaches anything shallower.
    layer = float(labels.spacing.max())
    band = (distance <= margin_mm) & (distance > margin_mm - layer) & (array != Tissue.AIR)
    kji = np.argwhere(band) + low
    return labels.index_to_world(kji[:, ::-1].astype(float))


def sphere_directions(count: int) -> np.ndarray:
    """``count`` unit vectors spread evenly over the sphere (a Fibonacci lattice), shape (count, 3)."""
    k = np.arange(count) + 0.5
    polar = np.arccos(1.0 - 2.0 * k / count)
    azimuth = math.pi * (1.0 + math.sqrt(5.0)) * k
    return np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=1)


def ways_in(labels: Volume, target, *, count: int, max_insertion_mm: float, step_mm: float = 0.5):
    """Directions of insertion (unit, entry towards ``target``) along which a straight shaft
    reaches ``target`` from the skin within ``max_insertion_mm``, and the depth of each, mm.

    Rays go out from ``target`` in ``count`` directions spread over the sphere; a ray whose
    line leaves the body (into air) inside the image within the length is a way in. Rays
    that leave the image first (the body goes on beyond it) are not: their skin is unseen.
    """
    from planner.anatomy.skin import inside_body

    outward = sphere_directions(count)
    distances = np.arange(step_mm, max_insertion_mm + step_mm, step_mm)
    points = np.asarray(target, dtype=float) + distances[None, :, None] * outward[:, None, :]
    outside = ~inside_body(labels, points)
    # Beyond the image (not a skin face) the body continues: inside_body says so already.
    reach = outside.any(axis=1)
    first = np.argmax(outside, axis=1)
    return -outward[reach], distances[first[reach]]


def _tip_options(centre, tangent, radius, direction, model, *, through: bool = False) -> list[np.ndarray]:
    """Tips for a probe along ``direction`` aimed at the nerve point ``centre``: stopping just
    short of the nerve, and passing beside it (either side) with the active segment level
    with the nerve or its distal quarter there; with ``through``, also into the nerve with
    the active segment centred on it (a neuroma)."""
    beside = radius + 0.5 * model.diameter_mm + NERVE_CLEARANCE_MM
    sine = float(np.linalg.norm(np.cross(direction, tangent)))  # of the angle between probe and nerve
    side = _unit(np.cross(direction, tangent)) if sine > 0.2 else _perpendicular(direction, tangent)
    tips = []
    if sine > 0.3:  # stopping short of the nerve: the tip is (radius + clearance) from its axis
        tips.append(centre - direction * (radius + NERVE_CLEARANCE_MM) / sine)
    for along in (model.tip_offset_mm + 0.5 * model.active_length_mm, model.tip_offset_mm + 0.25 * model.active_length_mm):
        for sign in (1.0, -1.0):
            tips.append(centre + sign * beside * side + direction * along)
    if through:
        tips.append(centre + direction * (model.tip_offset_mm + 0.5 * model.active_length_mm))
    return tips


# ============================================================================ the search
def _single_probe_candidates(ctx: _Context, *, tip_step_mm, n_directions, max_insertion_mm, fixed=()):
    """Grid of candidates for one more probe (``fixed``: (tip, direction) of probes already placed)."""
    segment = ctx.segment
    length = segment.length_mm
    count = max(1, int(round(length / tip_step_mm)))
    arcs = (np.arange(count) + 0.5) * length / count
    centres = segment.point_at(arcs)
    tangents = np.array([_unit(segment.point_at(a + 0.5) - segment.point_at(a - 0.5)) for a in arcs])
    radii = np.interp(arcs, segment.arc_lengths(), segment.local_radii_mm())
    candidates = []
    for centre, tangent, radius in zip(centres, tangents, radii):
        directions, _ = ways_in(ctx.labels, centre, count=n_directions, max_insertion_mm=max_insertion_mm)
        for direction in directions:
            for tip in _tip_options(centre, tangent, radius, direction, ctx.model, through=ctx.through_target):
                if fixed and any(_too_close(tip, direction, t, d, ctx.model) for t, d in fixed):
                    continue
                tips = [t for t, _ in fixed] + [tip]
                directions_all = [d for _, d in fixed] + [direction]
                candidates.append(ctx.judge(tips, directions_all))
    return candidates


def _too_close(tip, direction, other_tip, other_direction, model) -> bool:
    reach = model.tip_offset_mm + model.active_length_mm + 10.0
    return _segment_distance(tip, tip - reach * direction, other_tip, other_tip - reach * other_direction) < max(
        PROBE_SPACING_MM, model.diameter_mm + 1.0)


def _best_clear(ctx: _Context, candidates: list[Candidate], *, keep: int, max_insertion_mm: float,
                max_checks: int = 40) -> list[Candidate]:
    """The best ``keep`` candidates whose trajectories are clear: best-first, each screened
    quickly (:meth:`_Context.quick_clear`) and the survivors checked in full."""
    ranked = sorted((c for c in candidates if c.feasible), key=lambda c: c.score(), reverse=True)
    clear, checks = [], 0
    for candidate in ranked:
        if checks >= max_checks or len(clear) >= keep:
            break
        if not ctx.quick_clear(candidate, max_insertion_mm=max_insertion_mm):
            continue
        ctx.check(candidate, max_insertion_mm=max_insertion_mm)
        checks += 1
        if candidate.clear:
            clear.append(candidate)
    return clear


def _rotate_towards(direction, axis_vector, degrees) -> np.ndarray:
    theta = math.radians(degrees)
    other = _perpendicular(direction, axis_vector)
    return _unit(math.cos(theta) * direction + math.sin(theta) * other)


def _refine(ctx: _Context, start: Candidate, *, moving: int, max_insertion_mm: float, rounds: int = 4) -> Candidate:
    """Hill-climb the ``moving``-th probe of ``start``: tip moves and direction tilts, kept when the
    preview score improves, the skin band stays above 0 degC and the path stays clear."""
    best = start
    tangent = _unit(ctx.segment.centreline[-1] - ctx.segment.centreline[0])
    for step_mm, tilt_deg in [(1.0, 8.0)] * (rounds // 2) + [(0.5, 4.0)] * (rounds - rounds // 2):
        improved = False
        tip, direction = best.tips[moving], best.directions[moving]
        side = _perpendicular(direction, np.cross(direction, tangent))
        along = _perpendicular(direction, tangent)
        moves = []
        for axis_vector in (along, side, direction):
            for sign in (1.0, -1.0):
                moves.append((tip + sign * step_mm * axis_vector, direction))
        for axis_vector in (along, side):
            for sign in (1.0, -1.0):
                moves.append((tip, _rotate_towards(direction, sign * axis_vector, tilt_deg)))
        for new_tip, new_direction in moves:
            others = [(t, d) for i, (t, d) in enumerate(zip(best.tips, best.directions)) if i != moving]
            if any(_too_close(new_tip, new_direction, t, d, ctx.model) for t, d in others):
                continue
            tips = list(best.tips)
            directions = list(best.directions)
            tips[moving], directions[moving] = new_tip, new_direction
            trial = ctx.judge(tips, directions)
            if not trial.feasible or trial.score() <= best.score():
                continue
            if not ctx.quick_clear(trial, max_insertion_mm=max_insertion_mm):
                continue
            ctx.check(trial, max_insertion_mm=max_insertion_mm)
            if trial.clear:
                best, improved = trial, True
        if not improved and step_mm < 1.0:
            break
    return best


def _as_model(probe_model):
    from planner.catalog import ProbeModel, get_probe

    if isinstance(probe_model, ProbeModel):
        return probe_model
    if isinstance(probe_model, str):
        return get_probe(probe_model)
    raise InputError(f"probe_model: expected a catalogue name or ProbeModel, got {type(probe_model).__name__}")


def _search_tissue(labels: Volume, segment: Nerve, properties) -> int:
    """The commonest tissue (not air, nerve, bone or lung) within 5 mm of the segment: the one
    tissue the preview assumes around every candidate."""
    crop = _crop_around(labels, segment.centreline, 5.0)
    counts = {}
    if crop is not None:
        low, high = crop
        values, numbers = np.unique(np.asarray(labels.array)[low[0] : high[0], low[1] : high[1], low[2] : high[2]],
                                    return_counts=True)
        counts = {int(v): int(n) for v, n in zip(values, numbers)}
    for skip in (Tissue.AIR, Tissue.NERVE, Tissue.BONE, Tissue.LUNG, Tissue.VESSEL):
        counts.pop(int(skip), None)
    counts = {k: v for k, v in counts.items() if k in properties}
    if counts:
        return max(counts, key=counts.get)
    if int(Tissue.MUSCLE) in properties:
        return int(Tissue.MUSCLE)
    return next(iter(properties))


def suggest_placement(
    nerve,
    probe_model,
    *,
    labels: Volume,
    protocol,
    n_probes: int = 1,
    skin_margin_mm: float = DEFAULT_SKIN_MARGIN_MM,
    segment_mm: tuple[float, float] | None = None,
    properties=None,
    nerves=(),
    vessels=None,
    start=None,
    through_target: bool = False,
    confirm: bool = True,
    confirm_spacing_mm: float | None = None,
    tip_step_mm: float = TIP_STEP_MM,
    n_directions: int = N_DIRECTIONS,
    max_insertion_mm: float = MAX_INSERTION_MM,
    preview_spacing_mm: float | None = None,
    cache_dir=None,
    use_disk_cache: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Suggestion:
    """Propose probe tips and skin entries that freeze the nerve below -20 degC, safely.

    Parameters
    ----------
    nerve : Nerve, PlanNerve or NerveLine
        The nerve to treat (world LPS mm centreline, radius).
    probe_model : str or ProbeModel
        Catalogue probe (e.g. ``"n2o-14g"``).
    labels : Volume
        Tissue map (:class:`planner.labels.Tissue` values): skin, bone, vessels, lung.
    protocol : sequence of ProtocolStep
        The freeze protocol; every suggested probe follows the steps as the first probe
        does (steps with ``probes=None`` drive every probe).
    n_probes : {1, 2}
        Number of probes to place.
    skin_margin_mm : float
        The 0 degC surface must stay this far from the skin, mm.
    segment_mm : (float, float), optional
        Arc range of the nerve to treat, mm from its first point (default: all of it).
    properties : mapping int -> TissueProperties, optional
        Tissue properties per label (default: the catalogue's).
    nerves : sequence, optional
        Other nerves the shafts must not pierce (the treated nerve is always checked).
    vessels : sequence, optional
        Vessel centrelines for the full-solver metrics (see :func:`compute_metrics`).
    start : sequence of (tip, entry), optional
        A placement to compare with (its preview coverage is reported).
    through_target : bool
        Allow the probe into the target (a neuroma treated from inside: tips with the
        active segment centred on the nerve are tried, and the shaft may cross the target);
        other nerves are still avoided.
    confirm : bool
        Run the full solver on the proposal and measure it (the slow part).
    confirm_spacing_mm : float, optional
        Full-solver cell size, mm (default: the solver's choice).
    tip_step_mm, n_directions
        Density of the coarse search: candidate tips every ``tip_step_mm`` along the
        segment, directions from ``n_directions`` spread over the sphere (those that reach
        the skin within ``max_insertion_mm``).
    max_insertion_mm : float
        Longest shaft from the skin to the tip allowed, mm.
    preview_spacing_mm : float, optional
        Cell size of the preview's single-probe precompute runs, mm (default: the solver's
        choice; coarser is faster the first time, then the table is cached).
    cache_dir, use_disk_cache
        Preview table cache (see :func:`planner.thermal.preview.probe_field_table`).
    progress : callable(str), optional
        Called with a short line at each stage.

    Returns
    -------
    Suggestion
        With ``probes`` empty when no clear, skin-safe placement was found (``warnings`` say why).

    Raises
    ------
    InputError
        Bad arguments (unknown probe model, ``n_probes`` not 1 or 2, a segment outside the nerve).
    """
    from planner.catalog import tissue_properties_for_labels
    from planner.plan import PlanProbe

    started = time.perf_counter()
    say = progress or (lambda line: None)
    model = _as_model(probe_model)
    if n_probes not in (1, 2):
        raise InputError(f"n_probes: expected 1 or 2, got {n_probes!r}")
    if not isinstance(labels, Volume):
        raise InputError("labels: a tissue map (Volume) is needed to find the skin and check the paths")
    if not (isinstance(skin_margin_mm, (int, float)) and math.isfinite(skin_margin_mm) and skin_margin_mm >= 0):
        raise InputError(f"skin_margin_mm: expected a number of mm >= 0, got {skin_margin_mm!r}")
    target = nerve if isinstance(nerve, Nerve) else Nerve.from_plan(nerve)
    segment = target if segment_mm is None else nerve_segment(target, *segment_mm)
    properties = tissue_properties_for_labels() if properties is None else properties
    others = [n if isinstance(n, Nerve) else Nerve.from_plan(n) for n in nerves]
    # The shaft may enter the target only when asked (a neuroma is treated from inside).
    check_nerves = ([] if through_target else [segment]) + [n for n in others if n.name != segment.name]
    preview_options = {"solver_spacing_mm": preview_spacing_mm, "cache_dir": cache_dir, "use_disk_cache": use_disk_cache}
    tissue = _search_tissue(labels, segment, properties)
    ctx = _Context(segment=segment, model=model, labels=labels, protocol=protocol, properties=properties,
                   skin_margin_mm=skin_margin_mm, nerves=check_nerves, preview_options=preview_options,
                   search_tissue=tissue, through_target=through_target)
    warnings: list[str] = [
        f"the search used the approximate preview in {Tissue(tissue).key} throughout; "
        "the full solver's numbers are the ones to read"
    ]

    say("preview table (first time: one single-probe solve)")
    start_covered = None
    if start is not None:
        tips = [np.asarray(t, dtype=float) for t, _ in start]
        directions = [_unit(np.asarray(t, dtype=float) - np.asarray(e, dtype=float)) for t, e in start]
        start_covered = ctx.judge(tips, directions).covered_mm

    fixed: list[tuple[np.ndarray, np.ndarray]] = []
    best: Candidate | None = None
    per_probe: list[float] = []
    for index in range(n_probes):
        say(f"probe {index + 1}: coarse search")
        candidates = _single_probe_candidates(ctx, tip_step_mm=tip_step_mm, n_directions=n_directions,
                                              max_insertion_mm=max_insertion_mm, fixed=fixed)
        clear = _best_clear(ctx, candidates, keep=3, max_insertion_mm=max_insertion_mm)
        if not clear:
            if index == 0:
                feasible = sum(c.feasible for c in candidates)
                warnings.append(
                    f"no placement found: of {len(candidates)} candidates {feasible} kept the 0 degC surface "
                    f"{skin_margin_mm:g} mm from the skin, and none of the best of them had a clear path"
                )
            else:
                warnings.append(f"no clear, skin-safe place found for probe {index + 1}; proposing {index}")
            break
        say(f"probe {index + 1}: refinement")
        refined = [_refine(ctx, c, moving=index, max_insertion_mm=max_insertion_mm) for c in clear]
        choice = max(refined, key=lambda c: c.score())
        if best is not None and choice.score() <= best.score():
            warnings.append(f"a probe {index + 1} did not add coverage in the preview; proposing {index}")
            break
        best = choice
        per_probe.append(best.covered_mm)
        fixed = [(t, d) for t, d in zip(best.tips, best.directions)]

    suggestion = Suggestion(
        nerve=segment, probe_model=model.name, probes=[], insertion_depth_mm=[], angle_to_skin_normal_deg=[],
        preview_covered_mm=0.0 if best is None else best.covered_mm,
        preview_skin_min_c=float("nan") if best is None else best.skin_min_c,
        skin_margin_mm=float(skin_margin_mm), warnings=warnings, start_covered_mm=start_covered,
        preview_covered_per_probe_mm=per_probe, candidates=ctx.evaluated,
    )
    suggestion.search_s = time.perf_counter() - started
    if best is None:
        return suggestion

    from planner.anatomy.placement import place_probe

    plan_probes = []
    for i, (tip, entry) in enumerate(zip(best.tips, best.entries)):
        name = "AB"[i] if i < 2 else f"P{i}"
        placement = place_probe(labels, tip=tip, entry=entry, model=model.name, name=name)
        plan_probes.append(PlanProbe(name, model.name, tuple(round(float(v), 2) for v in tip),
                                     tuple(round(float(v), 2) for v in entry)))
        suggestion.insertion_depth_mm.append(placement.insertion_depth_mm)
        suggestion.angle_to_skin_normal_deg.append(placement.angle_to_skin_normal_deg)
    suggestion.probes = plan_probes
    suggestion.trajectory_warnings = [w for w in best.warnings if not _blocking([w])]
    if best.covered_mm <= 0:
        warnings.append("no candidate brought any of the nerve below -20 degC in the preview")

    if confirm:
        say("full solver check")
        confirm_started = time.perf_counter()
        from planner.thermal import simulate

        placed = [model.place(p.tip, p.entry, name=p.name) for p in plan_probes]
        result = simulate(placed, list(protocol), tissue_labels=labels, properties=properties,
                          spacing_mm=confirm_spacing_mm, thresholds=(ICE_EDGE_C, AXONOTMESIS_C, -40.0))
        metrics = compute_metrics(result, labels=labels, nerves=[segment] + [n for n in others if n.name != segment.name],
                                  vessels=vessels, skin_margin_mm=skin_margin_mm)
        suggestion.metrics = metrics
        suggestion.covered_mm = metrics.nerve(segment.name).covered_mm[AXONOTMESIS_C]
        suggestion.preview_minus_full_mm = suggestion.preview_covered_mm - suggestion.covered_mm
        suggestion.confirm_s = time.perf_counter() - confirm_started
        if any(w.code in ("skin_frozen", "skin_near_ice") for w in metrics.warnings):
            warnings.append("the full solver brings the ice closer to the skin than the margin: move the tip deeper "
                            "or shorten the freeze")
    return suggestion


__all__ = ["Candidate", "Suggestion", "nerve_segment", "sphere_directions", "suggest_placement", "ways_in"]
