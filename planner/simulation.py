"""Run a plan: load its volume and tissue map, solve the ice ball, write the results.

Two calls make the whole headless pipeline (the CLI's ``planner simulate``)::

    run = run_plan(load_plan("plan.json"), plan_path="plan.json")
    summary = write_outputs(run, "out/")

Research and education only; not for clinical use.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from planner import NOT_FOR_CLINICAL_USE, __version__
from planner.catalog import (
    is_number,
    label_for_tissue_key,
    load_tissues,
    tissue_properties_for_labels,
    tissue_with_overrides,
)
from planner.errors import InputError
from planner.labels import Tissue
from planner.plan import (
    DemoVolume,
    Plan,
    PlanValidationError,
    VolumeFile,
    file_problems,
    format_json,
    geometry_problems,
    load_plan,
    placed_probes,
    plan_sha256,
    protocol_steps,
    resolve_plan_path,
    snapshot_times,
)
from planner.thermal.properties import TissueProperties
from planner.volume import Volume

BODY_TEMPERATURE_C = 37.0
SUMMARY_NAME = "summary.json"


@dataclass(eq=False)
class SimulationRun:
    """Everything one run of a plan produced.

    Attributes
    ----------
    plan : Plan
        The plan that was run.
    result : planner.thermal.result.ThermalResult
        Temperatures over time on the solver's grid.
    source_volume : Volume or None
        The plan's image (CT or ultrasound; the demo's CT), or None for a homogeneous block.
    labels : Volume or None
        The tissue label map the solver sampled, or None for a homogeneous block.
    properties : dict of int to TissueProperties
        Tissue properties per label value, overrides applied.
    plan_path : Path or None
        The plan file, when run from one.
    plan_sha256 : str
        :func:`planner.plan.plan_sha256` of the plan (identifies what was run).
    wall_time_s : float
        Wall time of the whole run (loading, tissue map, solve), s.
    notes : list of str
        Caveats from preparing the inputs and from the solver.
    """

    plan: Plan
    result: object
    source_volume: Volume | None
    labels: Volume | None
    properties: dict[int, TissueProperties]
    plan_path: Path | None = None
    plan_sha256: str = ""
    wall_time_s: float = 0.0
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- inputs
def load_plan_volume(plan: Plan, *, plan_path=None) -> tuple[Volume | None, Volume | None]:
    """The plan's source image and, when the plan's tissue comes from one, its label map.

    Parameters
    ----------
    plan : Plan
    plan_path : str or Path, optional
        The plan file; relative volume paths are resolved against its folder.

    Returns
    -------
    (source, labels) : (Volume or None, Volume or None)
        ``source`` is None when the plan has no volume. ``labels`` is the label map file,
        the demo's labels, or :func:`planner.tissue_map.tissue_from_ct` of the CT, per
        ``plan.tissue.source``; None for a homogeneous block.

    Raises
    ------
    InputError
        A missing or changed file (sha256 mismatch), an unreadable image, a label map with
        values that are not tissue labels, or probes outside the volume.
    """
    problems = file_problems(plan, plan_path)
    if problems:
        raise PlanValidationError(str(plan_path or "plan"), problems)

    source = demo_labels = None
    if isinstance(plan.volume, VolumeFile):
        from planner.imaging import read_volume

        source = read_volume(resolve_plan_path(plan_path, plan.volume.path), series_uid=plan.volume.series_uid)
        if source.is_cine:
            raise InputError(f"volume.path: {plan.volume.path} is a cine loop; save one frame and plan on that")
    elif isinstance(plan.volume, DemoVolume):
        from planner.demo import build_demo_case

        case = build_demo_case(plan.volume.demo)
        source, demo_labels = case.ct, case.labels

    if source is not None:
        problems = geometry_problems(plan, source)
        if problems:
            raise PlanValidationError(str(plan_path or "plan"), problems)

    labels = None
    if plan.tissue.source == "labels":
        if plan.tissue.labels is not None:
            from planner.anatomy.tissues import tissue_from_label_file

            # A segmentation that labels only some structures leaves its background to a
            # base map: the CT classified by HU when the source is a CT.
            base = source if _is_ct(source) else None
            path = resolve_plan_path(plan_path, plan.tissue.labels.path)
            try:
                labels = tissue_from_label_file(path, plan.tissue.labels.table, base=base)
            except InputError as error:
                raise InputError(f"tissue.labels: {error}") from None
        elif demo_labels is not None:
            labels = _checked_labels(demo_labels, "demo labels")
        else:  # plan_from_dict refuses this; a hand-built Plan may still try
            raise InputError("tissue.labels: missing (source 'labels' needs a label map file or a demo volume)")
    elif plan.tissue.source == "ct_hu":
        if source is None:
            raise InputError("tissue.source: 'ct_hu' needs a CT volume (volume is null)")
        if not _is_ct(source):
            raise InputError(
                f"tissue.source: 'ct_hu' needs a CT in HU; the volume is {source.modality} "
                f"({source.units or 'no units'}): use a label map or a homogeneous tissue"
            )
        from planner.tissue_map import tissue_from_ct

        labels = tissue_from_ct(source)
    return source, labels


def _is_ct(volume: Volume | None) -> bool:
    """True for a CT in HU (or an image of unknown modality and units, as many NIfTI CTs are)."""
    if volume is None or volume.modality in ("US", "SEG", "MR"):
        return False
    return volume.units.upper() in ("HU", "")


def _checked_labels(labels: Volume, name: str) -> Volume:
    """``labels`` as uint8 Tissue values; InputError naming ``name`` when it holds others."""
    array = np.asarray(labels.array)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise InputError(f"tissue.labels: {name} holds non-integer values; expected tissue labels")
    values = np.unique(array)
    known = {int(t) for t in Tissue}
    unknown = [int(v) for v in values if int(v) not in known]
    if unknown:
        raise InputError(
            f"tissue.labels: {name} holds values {unknown[:8]} that are not tissue labels "
            f"({', '.join(f'{int(t)} {t.key}' for t in Tissue)})"
        )
    if array.dtype != np.uint8:
        labels = Volume(array.astype(np.uint8), labels.affine, modality="SEG", units="label", metadata=labels.metadata)
    return labels


def plan_tissue_properties(plan: Plan) -> tuple[dict[int, TissueProperties], int | None]:
    """Tissue properties per label value for ``plan``, overrides applied.

    Returns
    -------
    (properties, homogeneous_label) : (dict of int to TissueProperties, int or None)
        For a homogeneous block, one entry and its label (a tissue class's own label; a
        named set such as ``"r98"`` rides on ``SOFT_TISSUE``); otherwise every tissue
        class and None.
    """
    spec = plan.tissue
    if spec.source == "homogeneous":
        properties = load_tissues()[spec.tissue_class]
        if spec.tissue_class in spec.overrides:
            properties = tissue_with_overrides(
                properties, spec.overrides[spec.tissue_class], f"tissue.overrides.{spec.tissue_class}"
            )
        label = label_for_tissue_key(spec.tissue_class)
        return {label: properties}, label
    return tissue_properties_for_labels(spec.overrides), None


# ---------------------------------------------------------------------------- run
def run_plan(
    plan,
    *,
    plan_path=None,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    spacing_mm: float | None = None,
    layout: str = "nested",
) -> SimulationRun:
    """Load a plan's inputs, solve its protocol, and return the run.

    Parameters
    ----------
    plan : Plan, or str or Path of a plan file
        The plan; a path is loaded with :func:`planner.plan.load_plan` and used as
        ``plan_path``.
    plan_path : str or Path, optional
        The plan's file, to resolve relative volume paths (default: the working folder).
    progress : callable(float), optional
        Called with the fraction done (0 to 1) as the solver advances.
    cancel : callable() -> bool, optional
        Polled by the solver; returning True stops it with
        :class:`planner.thermal.solver.SimulationCancelled`.
    spacing_mm : float, optional
        Solver grid spacing, mm; overrides the plan's ``grid.spacing_mm`` (None: the
        plan's, else the solver's choice from the thinnest probe).
    layout : {"nested", "rectilinear"}
        The solver's grid (see :func:`planner.thermal.simulate`): nested boxes of cells
        (default, about a third of the cells) or one rectilinear grid.

    Returns
    -------
    SimulationRun

    Raises
    ------
    InputError
        Invalid plan, missing or changed volume file, probes outside the volume.
    """
    started = time.perf_counter()
    if isinstance(plan, (str, os.PathLike)):
        plan_path = Path(plan)
        plan = load_plan(plan_path, check_files=False)  # load_plan_volume checks the files below
    plan_path = Path(plan_path) if plan_path is not None else None
    if spacing_mm is not None and not (is_number(spacing_mm) and spacing_mm > 0):
        raise InputError(f"spacing_mm: must be a positive number of mm, got {spacing_mm!r}")
    if layout not in ("nested", "rectilinear"):
        raise InputError(f"layout: must be 'nested' or 'rectilinear', got {layout!r}")

    source, labels = load_plan_volume(plan, plan_path=plan_path)
    properties, homogeneous_label = plan_tissue_properties(plan)
    probes = placed_probes(plan)
    protocol = protocol_steps(plan)
    if spacing_mm is None and plan.grid is not None:
        spacing_mm = plan.grid.spacing_mm

    from planner.thermal import simulate

    result = simulate(
        probes,
        protocol,
        tissue_labels=labels,
        tissue=homogeneous_label,
        properties=properties,
        spacing_mm=spacing_mm,
        snapshot_times=snapshot_times(plan),
        thresholds=tuple(plan.isotherms_c),
        body_temperature=BODY_TEMPERATURE_C,
        progress=progress,
        cancel=cancel,
        layout=layout,
    )
    return SimulationRun(
        plan=plan,
        result=result,
        source_volume=source,
        labels=labels,
        properties=properties,
        plan_path=plan_path,
        plan_sha256=plan_sha256(plan),
        wall_time_s=time.perf_counter() - started,
        notes=list(getattr(result, "notes", [])),
    )


# ---------------------------------------------------------------------------- outputs
def resample_to_volume(result, values: np.ndarray, target: Volume, *, fill_value: float = BODY_TEMPERATURE_C) -> Volume:
    """Cell values of a thermal result resampled (trilinear) onto ``target``'s voxels.

    Parameters
    ----------
    result : ThermalResult
        Gives the grid the values live on.
    values : (nz, ny, nx) ndarray
        Per-cell values on ``result.grid``, e.g. degC.
    target : Volume
        The geometry to fill (a CT, label map, ...): same shape and affine in the output.
    fill_value : float
        Value of target voxels outside the solver's box (body temperature by default).

    Returns
    -------
    Volume
        float32, ``target``'s shape and affine, units ``"degC"``.
    """
    from scipy import ndimage

    grid = result.grid
    out = np.full(target.array.shape, fill_value, dtype=np.float32)
    # Only the target voxels inside the grid's box need interpolating: find their index range.
    low, high = grid.bounds_local()
    corners_local = np.array(
        [[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])]
    )
    corners_ijk = target.world_to_index(grid.local_to_world(corners_local))
    upper = np.array(target.shape_xyz) - 1
    start = np.clip(np.floor(corners_ijk.min(axis=0)).astype(int), 0, upper)
    stop = np.clip(np.ceil(corners_ijk.max(axis=0)).astype(int), 0, upper)
    if np.any(corners_ijk.max(axis=0) < 0) or np.any(corners_ijk.min(axis=0) > upper):
        return Volume(out, target.affine.copy(), modality="OT", units="degC")
    ii, jj, kk = (np.arange(start[a], stop[a] + 1) for a in range(3))
    k_grid, j_grid, i_grid = np.meshgrid(kk, jj, ii, indexing="ij")
    ijk = np.stack([i_grid, j_grid, k_grid], axis=-1).reshape(-1, 3)
    local = grid.world_to_local(target.index_to_world(ijk))
    coords = []
    for axis in (2, 1, 0):  # array axes (z, y, x) of the grid
        centres = grid.centres(axis)
        coords.append(np.interp(local[:, axis], centres, np.arange(centres.size)))
    sampled = ndimage.map_coordinates(np.asarray(values, dtype=np.float32), coords, order=1, mode="nearest")
    inside = np.all((local >= low) & (local <= high), axis=1)
    block = out[kk[0] : kk[-1] + 1, jj[0] : jj[-1] + 1, ii[0] : ii[-1] + 1]
    block_flat = block.reshape(-1)
    block_flat[inside] = sampled[inside]
    out[kk[0] : kk[-1] + 1, jj[0] : jj[-1] + 1, ii[0] : ii[-1] + 1] = block_flat.reshape(block.shape)
    return Volume(out, target.affine.copy(), modality="OT", units="degC")


def _snapshot_name(time_s: float) -> str:
    return f"temperature_{time_s:08.1f}s.vti".replace(" ", "0")


def _isotherm_facts(result, level: float, snapshot) -> dict:
    """Volume and size of the ``level`` degC isotherm at ``snapshot`` (index or ``"min"``)."""
    extent = result.isotherm_extent_mm(level, snapshot)
    return {
        "level_c": float(level),
        "volume_ml": float(result.isotherm_volume_ml(level, snapshot)),
        "along_mm": float(extent["along"]),
        "across_mm": float(extent["across"]),
        "max_diameter_mm": float(extent["max_diameter"]),
    }


def write_outputs(run: SimulationRun, out_dir) -> dict:
    """Write a run's fields and summary to ``out_dir``; return the summary.

    Files
    -----
    - ``temperature_<t>s.vti`` per snapshot (degC, the solver's grid, world LPS mm);
    - ``min_temperature.vti``: the lowest temperature each cell reached;
    - with a source volume, ``min_temperature_on_source.nii.gz``: the same resampled onto
      the source image's voxels (same affine: 3D Slicer and ITK-SNAP overlay it on the
      CT), body temperature outside the solver's box;
    - ``summary.json``: the returned dict.

    Returns
    -------
    dict
        JSON-ready: ``plan_name``, ``plan_sha256``, ``plan`` (name, sha256, path, probes,
        protocol duration), ``run_time_s`` (whole run), ``solve_time_s``, ``method``,
        ``steps``, ``dt_s``, ``grid`` (cells, finest spacing, box, origin, direction),
        ``isotherms_c``, ``snapshots`` (per snapshot ``time_s``, ``min_temperature_c`` and
        ``isotherms``: a list of ``{level_c, volume_ml, along_mm, across_mm,
        max_diameter_mm}``, ``along`` being the extent along the mean probe axis),
        ``coldest_reached`` (the same list for the lowest temperature each cell reached),
        ``min_temperature_c``, ``notes`` and ``outputs`` (file names relative to ``out_dir``).
    """
    from planner.imaging.formats import write_volume

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = run.result
    plan = run.plan
    outputs: dict[str, object] = {"snapshots": []}

    for index, time_s in enumerate(result.snapshot_times):
        name = _snapshot_name(float(time_s))
        write_volume(result.temperature_volume(index), out_dir / name)
        outputs["snapshots"].append(name)
    write_volume(result.min_temperature_volume(), out_dir / "min_temperature.vti")
    outputs["min_temperature"] = "min_temperature.vti"
    if run.source_volume is not None and not run.source_volume.is_cine:
        on_source = resample_to_volume(result, result.min_temperature, run.source_volume)
        on_source.metadata["quantity"] = "minimum temperature"
        write_volume(on_source, out_dir / "min_temperature_on_source.nii.gz")
        outputs["min_temperature_on_source"] = "min_temperature_on_source.nii.gz"

    levels = list(plan.isotherms_c)
    snapshots = [
        {
            "time_s": float(time_s),
            "min_temperature_c": float(np.min(result.temperatures[index])),
            "isotherms": [_isotherm_facts(result, level, index) for level in levels],
        }
        for index, time_s in enumerate(result.snapshot_times)
    ]
    coldest = [_isotherm_facts(result, level, "min") for level in levels]
    grid = result.grid
    nz, ny, nx = grid.shape
    low, high = grid.bounds_local()
    summary = {
        "disclaimer": NOT_FOR_CLINICAL_USE,
        "cryoplan_version": __version__,
        "plan_name": plan.name,
        "plan_sha256": run.plan_sha256 or plan_sha256(plan),
        "plan": {
            "name": plan.name,
            "sha256": run.plan_sha256 or plan_sha256(plan),
            "path": str(run.plan_path) if run.plan_path else None,
            "probes": [p.name for p in plan.probes],
            "protocol_duration_s": plan.total_duration_s,
        },
        "run_time_s": float(run.wall_time_s),
        "solve_time_s": float(result.run_time_s),
        "method": result.method,
        "steps": int(result.steps),
        "dt_s": float(result.dt),
        "grid": {
            "cells_xyz": [nx, ny, nz],
            "finest_spacing_mm": float(grid.spacing),
            "uniform": bool(grid.is_uniform),
            "solver_layout": "nested" if result.history["solver_levels"] > 1 else "rectilinear",
            "solver_cells": int(result.history["solver_cells"]),
            "box_mm": [float(v) for v in (high - low)],
            "origin_lps_mm": [float(v) for v in grid.origin],
            "direction": np.asarray(grid.direction).tolist(),
        },
        "isotherms_c": levels,
        "snapshots": snapshots,
        "coldest_reached": coldest,
        "min_temperature_c": float(np.min(result.min_temperature)),
        "notes": list(run.notes),
        "outputs": outputs,
    }
    outputs["summary"] = SUMMARY_NAME
    text = format_json(summary) + "\n"
    (out_dir / SUMMARY_NAME).write_text(text, encoding="utf-8")
    return summary
