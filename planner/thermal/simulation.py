"""Plan-level entry: probes + protocol + tissue -> a grid, boundaries and a solve."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from planner.errors import InputError
from planner.thermal.geometry import Cylinder, held_cell_mask, rasterise
from planner.thermal.grid import NestedGrid, ThermalGrid, uniform_faces, zoned_faces
from planner.thermal.probes import PlacedProbe, placed_probes
from planner.thermal.properties import TissueProperties
from planner.thermal.protocol import ProtocolStep, protocol_duration, validate_protocol
from planner.thermal.result import ThermalResult
from planner.thermal.sizing import radial_reach
from planner.thermal.solver import HEAT_FLUX_COLDEST, HeldBoundary, Phase, SourceBoundary, solve
from planner.volume import Volume

# Defaults for sizing the box (documented in simulate's docstring).
MAX_BOX_MM = 160.0
STRETCH_RATIO = 1.5  # growth of the cells beyond the ice zone
MIDDLE_RATIO = 1.25  # growth from the near-probe spacing to the ice-zone spacing
# Ice-zone cell in near-probe cells: the default, and the largest the default time step follows
# (validated up to it: 2 s vs 4 s steps on the argon benchmark 0.19 degC; 8 s: 13 degC where
# three fronts meet).
MIDDLE_CELLS = 2.0
CORE_FACTOR = 1.15  # ice zone: this times the single-probe 0 degC radius (neighbours add ice)
OUTER_FACTOR = 1.3  # box: this times the single-probe radius cooled by 1 degC
# Near-probe zone: the finest cells out to this many probe radii (at least NEAR_MIN_MM) from
# the surface. The frozen profile is logarithmic, so the discretisation error goes with
# (cell / distance from the axis)^2: cells twice as large at twice the distance are as good.
# Where the zone ends in a 2:1 jump (the nested layout) it also reaches NEAR_AXIS_CELLS of
# its cells from the probe axis, so the first coarse cells are small against their distance
# from it (2 h / d <= 0.22). Measured with 0.5 mm cells around a 1.5 mm probe, -20 degC
# volume against a grid fine all through the ice: the jump 6.5 cells from the axis +9 %,
# 7.5 cells +1 %, 8.5 cells and more within 0.2 %; two 16 G probes at 0.25 mm (benchmark
# (a)): the jump 9.9 cells out (the two-radii rule) within 0.1 % of 11.9 cells, 7.9 cells
# -1 % at -40 degC.
NEAR_RADII = 2.0
NEAR_MIN_MM = 1.5
NEAR_AXIS_CELLS = 9.0


@functools.lru_cache(maxsize=64)
def _radial_reach_cached(probe_key, protocol, tissue, body_temperature):
    radius, boundary = probe_key
    probe = PlacedProbe("sizing", (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), 2 * radius, 1.0, boundary)
    return tuple(radial_reach(probe, protocol, tissue, body_temperature=body_temperature,
                              levels=(0.0, body_temperature - 1.0)))


def _radial_reach_all(probes, protocol, tissues, body_temperature) -> np.ndarray:
    """Largest (ice radius, 1 degC cooled radius), mm, over the distinct probes and tissues."""
    keys = {(p.radius_mm, p.boundary) for p in probes}
    reach = np.zeros(2)
    for key in keys:
        for tissue in tissues:
            reach = np.maximum(reach, _radial_reach_cached(key, tuple(protocol), tissue, float(body_temperature)))
    return reach


def _orthonormal_frame(probes: Sequence[PlacedProbe]) -> np.ndarray:
    """Columns x, y, z: z along the mean probe axis, x towards the spread of the probes."""
    axes = np.array([p.axis for p in probes])
    signs = np.sign(axes @ axes[0])
    signs[signs == 0] = 1
    z = (axes * signs[:, None]).sum(axis=0)
    z /= np.linalg.norm(z)
    centres = np.array([np.mean(p.active_segment(), axis=0) for p in probes])
    spread = centres - centres.mean(axis=0)
    spread -= np.outer(spread @ z, z)
    if len(probes) > 1 and np.linalg.norm(spread, axis=1).max() > 1e-6:
        x = spread[np.argmax(np.linalg.norm(spread, axis=1))]
    else:
        x = np.cross(z, [1.0, 0.0, 0.0] if abs(z[0]) < 0.9 else [0.0, 1.0, 0.0])
    x = x - (x @ z) * z
    x /= np.linalg.norm(x)
    return np.column_stack([x, np.cross(z, x), z])


def _coldest(probes: Sequence[PlacedProbe], protocol: Sequence[ProtocolStep], body: float) -> float:
    coldest = body
    for step in protocol:
        driven = range(len(probes)) if step.probes is None else step.probes
        for i in driven:
            b = probes[i].boundary
            if step.kind == "freeze":
                if b.kind == "temperature":
                    coldest = min(coldest, b.freeze_temperature)
                elif b.kind == "convective":
                    coldest = min(coldest, b.coolant_temperature)
                else:
                    coldest = min(coldest, -150.0)  # sizing guess for a heat-flux probe
            else:
                coldest = min(coldest, step.thaw_temperature)
    return coldest


def default_margins(probes: Sequence[PlacedProbe], protocol: Sequence[ProtocolStep],
                    properties: Mapping[int, TissueProperties], spacing_mm: float, *,
                    body_temperature: float = 37.0, sizing: str = "radial") -> tuple[float, float]:
    """``(core_margin_mm, outer_margin_mm)`` that :func:`simulate` uses by default: the ice zone
    around the probes' active segments and the stretched zone beyond it (see its docstring).

    A caller that solves only part of a protocol on the grid of the whole (a benchmark run
    cut short) passes these, found for the whole protocol, to :func:`simulate`."""
    h = float(spacing_mm)
    present = list(properties.values())
    if sizing == "radial":
        reach = _radial_reach_all(probes, protocol, present, body_temperature)
        ice_reach, cooled_reach = float(reach[0]), float(reach[1])
        core = CORE_FACTOR * ice_reach + 2 * h
        return core, max(OUTER_FACTOR * cooled_reach - core, 4 * h)
    # Bounds that need no solve: the frozen diffusion length bounds the ice radius;
    # three unfrozen diffusion lengths (or one perfusion length) the cooled zone.
    coldest = _coldest(probes, protocol, body_temperature)
    alpha_f = max(float(t.frozen_conductivity_at(min(coldest, t.solidus))) / t.heat_capacity_frozen for t in present)
    alpha_u = max(t.conductivity_unfrozen / t.heat_capacity_unfrozen for t in present)
    t_freeze = sum(s.duration for s in protocol if s.kind == "freeze")
    core = min(40.0, 1e3 * math.sqrt(alpha_f * t_freeze)) + 2 * h
    perfusion_lengths = [
        1e3 * math.sqrt(t.conductivity_unfrozen / t.perfusion_coefficient)
        for t in present if t.perfusion_coefficient > 0
    ]
    diffusion = 3e3 * math.sqrt(alpha_u * protocol_duration(protocol))
    return core, max([diffusion] + perfusion_lengths[:1])


def simulate(
    probes: Sequence[PlacedProbe],
    protocol: Sequence[ProtocolStep],
    *,
    tissue_labels: Volume | None = None,
    tissue: int | None = None,
    properties: Mapping[int, TissueProperties],
    spacing_mm: float | None = None,
    snapshot_times: Sequence[float] | None = None,
    thresholds: Sequence[float] = (0.0, -20.0, -40.0),
    body_temperature: float = 37.0,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    orientation: str = "probes",
    fine_margin_mm: float | None = None,
    middle_spacing_mm: float | None = None,
    core_margin_mm: float | None = None,
    sizing: str = "radial",
    outer_margin_mm: float | None = None,
    max_box_mm: float = MAX_BOX_MM,
    stretch_ratio: float = STRETCH_RATIO,
    outer_boundary: str = "body",
    fill_label: int | None = None,
    insulated_shaft: bool = True,
    method: str = "rkl2",
    max_step: float | None = None,
    dtype=np.float32,
    threads: int | None = None,
    count_only: bool = False,
    layout: str = "nested",
) -> ThermalResult:
    """Simulate the ice ball of ``probes`` running ``protocol`` in tissue.

    Parameters
    ----------
    probes : sequence of PlacedProbe
        Probes in world LPS mm, any orientation.
    protocol : sequence of ProtocolStep
        Steps in order; ``t = 0`` is the start of the first.
    tissue_labels : Volume, optional
        Label map (values :class:`planner.labels.Tissue`), any orientation relative to the
        grid; resampled nearest-neighbour at the cell centres. Cells outside it take the
        nearest label (edge voxel) or ``fill_label`` when given. Label 0 (air) without an
        entry in ``properties`` is treated as insulating (no heat crosses into it).
    tissue : int, optional
        Homogeneous tissue label when there is no label map.
    properties : mapping int -> TissueProperties
        Properties per label value.
    spacing_mm : float, optional
        Cell size near the probes, mm. Default: a quarter of the thinnest probe diameter,
        clamped to 0.2-0.5 mm.
    snapshot_times : sequence of float, optional
        s; default the end of each step.
    thresholds : sequence of float
        degC isotherms for ``time_below`` and the volume history.
    body_temperature : float
        degC, initial, arterial and outer-boundary temperature.
    progress, cancel : callable, optional
        Fraction-done callback; ``cancel() -> True`` stops the run with
        :class:`~planner.thermal.solver.SimulationCancelled`.
    orientation : {"probes", "world", "volume"}
        Grid axes: z along the mean probe axis (default; fewest cells, needles along grid
        lines), world LPS axes, or the label volume's axes.
    fine_margin_mm : float, optional
        Near-probe zone of ``spacing_mm`` cells = the active segments' bounding box grown by
        the probe radius and this. Default: two probe radii and at least 1.5 mm; with
        ``layout="nested"`` (even where it falls back) also out to at least nine cells from the
        probe axis, with ``"rectilinear"`` (whose cells grow gradually beyond it) plus two cells.
    middle_spacing_mm : float, optional
        Largest cell of the ice zone, mm (default twice ``spacing_mm``; equal to it for a
        uniform ice zone). Cells grow to it by 1.25x per cell beyond the near-probe zone. The
        default time step follows this cell, but never that of a cell over twice ``spacing_mm``.
    core_margin_mm : float, optional
        Ice zone = the active segments' bounding box grown by this. Default
        (``sizing="radial"``): 1.15 times the largest 0 degC radius of a quick 1D radial
        solve around each probe (see :mod:`planner.thermal.sizing`) plus two cells.
    outer_margin_mm : float, optional
        Box = ice zone grown by this, with cells growing by ``stretch_ratio`` outwards (to
        at most 16 near-probe cells). Default (``"radial"``): out to 1.3 times the radius where the
        radial solve cooled the tissue by 1 degC. The whole box is capped at ``max_box_mm``
        per side (noted in the result when the cap bites); the last stretched cell may reach
        past the cap by up to its own width.
    sizing : {"radial", "bounds"}
        How the default margins are found: the radial solve, or closed-form bounds with no
        solve (frozen diffusion length ``sqrt(alpha_f(T_min) t_freeze)`` for the core, capped
        at 40 mm; three unfrozen diffusion lengths or one perfusion length beyond), which
        are looser and so cost more cells.
    outer_boundary : {"body", "insulated"}
        Box faces held at body temperature or zero-flux.
    insulated_shaft : bool
        Cells inside the probe outside the active segment exchange no heat (adiabatic
        shaft); otherwise they behave as tissue.
    layout : {"nested", "rectilinear"}
        ``"nested"`` (default): three boxes of cells, one inside the other (see
        :class:`planner.thermal.grid.NestedGrid`): the near-probe zone at ``spacing_mm``, the
        ice zone at twice that, the rest at four times that, stretched towards the box faces.
        About a third of the cells of the rectilinear grid, since the fine rows no longer run
        through the whole box. Results still come on one rectilinear grid, interpolated
        trilinearly, so their isotherm volumes differ slightly (about 1 % at 0 degC) from
        ``history``'s, which the solve counts on its own cells. Taken only when the ice zone's
        cell is twice ``spacing_mm`` (the default) and the ice zone fits ``max_box_mm``; else
        the rectilinear grid, with a note. ``"rectilinear"``: one rectilinear grid of the three
        zones, cells growing gradually between them.
    method, max_step, dtype, threads, count_only
        Passed to :func:`planner.thermal.solver.solve`.

    Notes
    -----
    Probe treatment: during a freeze step a ``"temperature"`` probe holds its active
    segment's cells (centre inside the cylinder, or on its axis for a needle thinner than a
    cell) at the plateau, approached from the segment's temperature at the step start with
    time constant ``cooldown_time``; surface links are corrected to the true radius (see
    :mod:`planner.thermal.geometry`). ``"heat_flux"`` removes ``Q * L`` W shared over those
    cells by volume (by axis length for a needle); ``"convective"`` removes
    ``h A (T_cell - T_coolant)`` with ``A`` the lateral area of the active segment, using
    the probe cells' own temperature as the surface temperature. During a passive thaw,
    or when a step does not drive a probe, its active cells behave as the surrounding
    tissue (the probe's small heat capacity is neglected). Active thaw holds the active
    segment at ``thaw_temperature``, approached with the probe's ``cooldown_time``.
    """
    probes = list(placed_probes(probes))
    validate_protocol(protocol, len(probes))
    if not properties:
        raise InputError("properties: need at least one tissue entry")
    for label, props in properties.items():
        if not isinstance(props, TissueProperties):
            raise InputError(f"properties[{label}]: must be TissueProperties, got {type(props).__name__}")
    if tissue_labels is None and tissue is None:
        raise InputError("tissue: give a label volume (tissue_labels) or a homogeneous tissue label (tissue)")
    if tissue_labels is None and tissue not in properties:
        raise InputError(f"tissue: no properties for tissue label {tissue}")
    if not math.isfinite(body_temperature):
        raise InputError("body_temperature must be finite")
    if spacing_mm is not None and not (spacing_mm > 0 and math.isfinite(spacing_mm)):
        raise InputError(f"spacing_mm must be > 0 mm, got {spacing_mm!r}")
    if fine_margin_mm is not None and not (fine_margin_mm >= 0 and math.isfinite(fine_margin_mm)):
        raise InputError(f"fine_margin_mm must be >= 0 mm, got {fine_margin_mm!r}")
    if layout not in ("nested", "rectilinear"):
        raise InputError(f"layout must be 'nested' or 'rectilinear', got {layout!r}")
    if sizing not in ("radial", "bounds"):
        raise InputError(f"sizing must be 'radial' or 'bounds', got {sizing!r}")
    if orientation not in ("probes", "world", "volume"):
        raise InputError(f"orientation must be 'probes', 'world' or 'volume', got {orientation!r}")
    if orientation == "volume" and tissue_labels is None:
        raise InputError("orientation 'volume' needs tissue_labels")
    if tissue_labels is not None:
        for probe in probes:
            ends = np.array(probe.active_segment())
            if not np.all(tissue_labels.contains(ends, margin_voxels=0.5)):
                raise InputError(f"probe {probe.name!r}: active segment lies outside the tissue label volume")

    notes: list[str] = []
    # ---------------------------------------------------------------- sizing
    thinnest = min(p.diameter_mm for p in probes)
    h = spacing_mm if spacing_mm is not None else float(np.clip(thinnest / 4.0, 0.2, 0.5))
    h_middle = MIDDLE_CELLS * h if middle_spacing_mm is None else float(middle_spacing_mm)
    if not (h_middle >= h and math.isfinite(h_middle)):
        raise InputError(f"middle_spacing_mm must be at least the spacing ({h:g} mm), got {middle_spacing_mm!r}")
    if core_margin_mm is None or outer_margin_mm is None:
        wanted_core, wanted_outer = default_margins(probes, protocol, properties, h, body_temperature=body_temperature,
                                                    sizing=sizing)
        core_margin_mm = wanted_core if core_margin_mm is None else core_margin_mm
        outer_margin_mm = wanted_outer if outer_margin_mm is None else outer_margin_mm

    if orientation == "probes":
        direction = _orthonormal_frame(probes)
    elif orientation == "volume":
        direction = tissue_labels.direction
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
            raise InputError("tissue_labels: orientation 'volume' needs an orthogonal direction matrix")
    else:
        direction = np.eye(3)
    origin = np.asarray(probes[0].tip, dtype=float)
    segments_local = []
    for probe in probes:
        start, end = probe.active_segment()
        segments_local.append((start - origin) @ direction)
        segments_local.append((end - origin) @ direction)
    segments_local = np.array(segments_local)
    radius = max(p.radius_mm for p in probes)
    if fine_margin_mm is None and layout == "nested":
        fine_margin_mm = max(NEAR_MIN_MM, NEAR_RADII * radius, NEAR_AXIS_CELLS * h - radius)
    elif fine_margin_mm is None:
        fine_margin_mm = max(NEAR_MIN_MM, NEAR_RADII * radius) + 2 * h
    fine_margin_mm = min(fine_margin_mm, core_margin_mm)
    seg_lo, seg_hi = segments_local.min(axis=0) - radius, segments_local.max(axis=0) + radius
    lo = seg_lo - core_margin_mm
    hi = seg_hi + core_margin_mm
    half_cap = 0.5 * max_box_mm
    centre = 0.5 * (lo + hi)
    faces, fine_boxes, outer_boxes, ice_capped = [], [], [], False
    for axis in range(3):
        f_lo, f_hi = seg_lo[axis] - fine_margin_mm, seg_hi[axis] + fine_margin_mm
        # Put the first probe's axis on cell centres (needles then sit on grid lines).
        if orientation == "probes":
            f_lo -= (f_lo - 0.5 * h) % h
        outer_lo = max(lo[axis] - outer_margin_mm, centre[axis] - half_cap)
        outer_hi = min(hi[axis] + outer_margin_mm, centre[axis] + half_cap)
        if hi[axis] - lo[axis] > max_box_mm:
            ice_capped = True
            notes.append(f"ice zone capped at {max_box_mm:g} mm along grid axis {'xyz'[axis]}")
        if outer_lo > lo[axis] - outer_margin_mm + 1e-9 or outer_hi < hi[axis] + outer_margin_mm - 1e-9:
            notes.append(
                f"box capped at {max_box_mm:g} mm along grid axis {'xyz'[axis]} "
                f"(wanted {hi[axis] - lo[axis] + 2 * outer_margin_mm:.0f} mm)"
            )
        fine_boxes.append((seg_lo[axis] - fine_margin_mm, seg_hi[axis] + fine_margin_mm))
        outer_boxes.append((outer_lo, outer_hi))
        f_lo, f_hi = max(f_lo, centre[axis] - half_cap), min(f_hi, centre[axis] + half_cap)
        m_lo, m_hi = max(lo[axis], outer_lo), min(hi[axis], outer_hi)
        faces.append(zoned_faces(f_lo, f_hi, m_lo, m_hi, outer_lo, outer_hi, h, h_middle, middle_ratio=MIDDLE_RATIO,
                                 outer_ratio=stretch_ratio, max_cell=16 * h))
    # The nested layout needs the ice zone at twice the fine spacing (each level halves its
    # parent's cells) and an ice zone within the box cap. Otherwise one rectilinear grid, which
    # is a nested grid of one level: the solver and the code below take both alike.
    if layout == "nested" and abs(h_middle - 2 * h) < 1e-9 * h and not ice_capped:
        anchor = 0.5 * h if orientation == "probes" else 0.0
        grid = _nested_grid(fine_boxes, [(lo[a], hi[a]) for a in range(3)], outer_boxes, h, anchor, origin,
                            direction, stretch_ratio)
    else:
        if layout == "nested":
            why = "the ice zone is capped" if ice_capped else f"its ice-zone cell is {h_middle:g} mm, not twice {h:g} mm"
            notes.append(f"solved on one rectilinear grid: the nested layout does not apply ({why})")
        grid = NestedGrid([ThermalGrid(faces[0], faces[1], faces[2], origin, direction)])
    levels, offsets, flat = grid.levels, grid.offsets[:-1], grid.flatten

    # ---------------------------------------------------------------- tissue
    label_values = sorted(properties)
    if tissue_labels is None:
        labels = flat([np.full(level.shape, tissue, dtype=np.int64) for level in levels])
    else:
        labels = flat([_resample_labels(tissue_labels, level, fill_label=fill_label) for level in levels])
        unknown = sorted(set(np.unique(labels).tolist()) - set(label_values) - {0})
        if unknown:
            raise InputError(f"properties: no entry for tissue label(s) {unknown} found around the probes")
    insulating = (labels == 0) if 0 not in properties else np.zeros(labels.shape, dtype=bool)
    lookup = {label: index for index, label in enumerate(label_values)}
    tissue_index = np.zeros(labels.shape, dtype=np.uint8)
    for label, index in lookup.items():
        tissue_index[labels == label] = index

    # ---------------------------------------------------------------- probes
    # Active segments lie in the finest level (its box holds them with a margin); shafts run through all.
    finest, finest_offset = levels[-1], int(offsets[-1])
    regions, shaft = [], [np.zeros(level.shape, dtype=bool) for level in levels]
    for probe in probes:
        start, end = probe.active_segment()
        cylinder = Cylinder(tuple(finest.world_to_local(start)), tuple(finest.world_to_local(end)), probe.radius_mm)
        region = rasterise(finest, cylinder)
        if region.cells.size == 0:
            raise InputError(f"probe {probe.name!r}: active segment does not overlap the thermal grid")
        regions.append(dataclasses.replace(region, cells=region.cells + finest_offset,
                                           link_tissue=region.link_tissue + finest_offset,
                                           link_held=region.link_held + finest_offset))
        for note in region.notes:
            notes.append(f"probe {probe.name!r}: {note}")
        if insulated_shaft:
            tip_local = finest.world_to_local(probe.tip)
            entry_local = finest.world_to_local(probe.entry)
            for a, b in ((tip_local, cylinder.start), (cylinder.end, entry_local)):
                if np.linalg.norm(np.subtract(b, a)) > 1e-6:
                    # only cells whose centre is inside: a needle's axis line is not a wall
                    for number, level in enumerate(levels):
                        mask, _ = held_cell_mask(level, Cylinder(tuple(a), tuple(b), probe.radius_mm),
                                                 include_axis=False)
                        shaft[number] |= mask
    shaft = flat(shaft)
    for region in regions:
        shaft.reshape(-1)[region.cells] = False
    inert = shaft | insulating

    # ---------------------------------------------------------------- phases
    phases = []
    for step in protocol:
        driven = range(len(probes)) if step.probes is None else step.probes
        phase = Phase(step.duration)
        for i in driven:
            probe, region = probes[i], regions[i]
            boundary = probe.boundary
            if step.kind == "passive_thaw":
                continue
            if step.kind == "active_thaw":
                phase.held.append(HeldBoundary(region, step.thaw_temperature, boundary.cooldown_time))
            elif boundary.kind == "temperature":
                phase.held.append(HeldBoundary(region, boundary.freeze_temperature, boundary.cooldown_time))
            elif boundary.kind == "heat_flux":
                power = -boundary.heat_flux_per_length * probe.active_length_mm * 1e-3
                phase.sources.append(SourceBoundary(region, power_w=power))
            else:
                conductance = boundary.heat_transfer_coefficient * region.surface_area_mm2 * 1e-6
                phase.sources.append(
                    SourceBoundary(region, conductance_w_per_k=conductance, reference=boundary.coolant_temperature)
                )
        phases.append(phase)

    probe_axes = np.array([np.array(p.active_segment()) for p in probes])
    return solve(
        grid,
        tissue_index,
        [properties[label] for label in label_values],
        phases,
        initial_temperature=body_temperature,
        arterial_temperature=body_temperature,
        outer_boundary=outer_boundary,
        inert=inert if inert.any() else None,
        snapshot_times=snapshot_times,
        thresholds=thresholds,
        method=method,
        max_step=max_step,
        step_spacing_mm=min(h_middle, MIDDLE_CELLS * h),  # a coarser ice zone does not lengthen it
        dtype=dtype,
        threads=threads,
        count_only=count_only,
        progress=progress,
        cancel=cancel,
        probe_axes=probe_axes,
        notes=notes,
    )


def _nested_grid(fine_boxes, ice_boxes, outer_boxes, h, anchor, origin, direction, stretch_ratio) -> NestedGrid:
    """Three levels for :func:`simulate`: cells of ``h`` over ``fine_boxes``, of ``2 h`` over
    ``ice_boxes`` and of ``4 h`` around them, stretched by ``stretch_ratio`` (to at most ``16 h``)
    out to ``outer_boxes``; per axis ``(lo, hi)`` in grid-frame mm. Every face lies on the
    lattice ``anchor + n h``. The fine box is rounded outwards to its parent's faces (so it holds
    at least the near-probe margin), the ice box to the nearest of its parent's faces, and each
    has at least one parent cell around it."""
    def down(value, step):
        return anchor + math.floor((value - anchor) / step + 1e-9) * step

    def up(value, step):
        return anchor + math.ceil((value - anchor) / step - 1e-9) * step

    def nearest(value, step):
        return anchor + round((value - anchor) / step) * step

    fine, middle, coarse = [], [], []
    for (f_lo, f_hi), (i_lo, i_hi), (o_lo, o_hi) in zip(fine_boxes, ice_boxes, outer_boxes):
        # outwards to a parent face, so the fine cells cover at least the near-probe margin
        f_lo, f_hi = down(f_lo, 2 * h), up(f_hi, 2 * h)
        m_lo = min(nearest(i_lo, 4 * h), down(f_lo - 2 * h, 4 * h))
        m_hi = max(nearest(i_hi, 4 * h), up(f_hi + 2 * h, 4 * h))
        c_lo, c_hi = m_lo - 4 * h, m_hi + 4 * h
        fine.append(uniform_faces(f_lo, f_hi, h))
        middle.append(uniform_faces(m_lo, m_hi, 2 * h))
        coarse.append(zoned_faces(c_lo, c_hi, c_lo, c_hi, min(o_lo, c_lo), max(o_hi, c_hi), 4 * h, 4 * h,
                                  outer_ratio=stretch_ratio, max_cell=16 * h))
    return NestedGrid([ThermalGrid(*faces, origin, direction) for faces in (coarse, middle, fine)])


def _resample_labels(labels: Volume, grid: ThermalGrid, *, fill_label: int | None) -> np.ndarray:
    """Nearest-neighbour labels at the grid's cell centres; outside the volume the nearest
    edge voxel's label, or ``fill_label`` when given."""
    centres = grid.local_to_world(grid.cell_centres_local().reshape(-1, 3))
    ijk = np.rint(labels.world_to_index(centres)).astype(np.int64)
    ni, nj, nk = labels.shape_xyz
    upper = np.array([ni - 1, nj - 1, nk - 1])
    outside = np.any((ijk < 0) | (ijk > upper), axis=1)
    ijk = np.clip(ijk, 0, upper)
    values = np.asarray(labels.array)[ijk[:, 2], ijk[:, 1], ijk[:, 0]].astype(np.int64)
    if fill_label is not None:
        values[outside] = fill_label
    return values.reshape(grid.shape)


__all__ = ["simulate", "default_margins", "HEAT_FLUX_COLDEST"]
