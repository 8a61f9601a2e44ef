"""Built-in demo anatomy: synthetic, deterministic cases drawn by code.

Each case is a small patch of a body region in realistic sizes (millimetres), drawn
from signed distance functions (layers, tubes along centrelines, ellipsoids), with a
CT-like image in HU, a tissue label map, nerve and vessel centrelines, named landmarks
and a B-mode-like ultrasound frame of the same anatomy. Nothing is downloaded, and the
only randomness (CT noise, ultrasound speckle) comes from fixed seeds, so a case is the
same bytes on every run.

>>> from planner.demo import build_demo_case, list_demo_cases
>>> list_demo_cases()
['intercostal', 'lfcn', 'morton']
>>> case = build_demo_case("intercostal")
>>> case.target_nerve.name
'intercostal_nerve_T7'

Not anatomy to learn measurements from: sizes are typical adult values chosen to look
right, not an atlas.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

from planner.demo.case import DemoCase, NerveLine, VesselLine
from planner.errors import InputError

__all__ = ["DemoCase", "NerveLine", "VesselLine", "build_demo_case", "list_demo_cases", "write_demo_case"]

MIN_SPACING_MM = 0.1
MAX_SPACING_MM = 4.0
"""Coarser grids lose the nerves (2-3 mm across) entirely."""


def _case_modules() -> dict:
    from planner.demo import intercostal, lfcn, morton

    return {module.NAME: module for module in (intercostal, lfcn, morton)}


def list_demo_cases() -> list[str]:
    """Names of the built-in demo cases, in a fixed order."""
    return list(_case_modules())


def _check_spacing(spacing_mm) -> float:
    try:
        spacing = float(spacing_mm)
    except (TypeError, ValueError):
        raise InputError(f"demo spacing_mm: expected a number of millimetres, got {spacing_mm!r}") from None
    if not math.isfinite(spacing) or not MIN_SPACING_MM <= spacing <= MAX_SPACING_MM:
        raise InputError(
            f"demo spacing_mm: {spacing_mm!r} is outside {MIN_SPACING_MM}-{MAX_SPACING_MM} mm"
        )
    return round(spacing, 6)


@functools.lru_cache(maxsize=8)
def _build_cached(name: str, spacing_mm: float) -> DemoCase:
    from planner.demo._assemble import assemble

    return assemble(_case_modules()[name].model(), spacing_mm=spacing_mm)


def _fresh_view(case: DemoCase) -> DemoCase:
    """A new DemoCase sharing the cached read-only arrays, so a caller who changes a
    Volume's metadata or a list does not change the cache."""

    def volume_copy(volume):
        if volume is None:
            return None
        return dataclasses.replace(volume, affine=volume.affine.copy(), metadata=dict(volume.metadata))

    return dataclasses.replace(
        case,
        ct=volume_copy(case.ct),
        labels=volume_copy(case.labels),
        ultrasound=volume_copy(case.ultrasound),
        nerves=list(case.nerves),
        vessels=list(case.vessels),
        landmarks=dict(case.landmarks),
    )


def build_demo_case(name: str, *, spacing_mm: float = 0.5) -> DemoCase:
    """Build a demo case.

    Parameters
    ----------
    name : str
        One of :func:`list_demo_cases` (case-insensitive).
    spacing_mm : float
        CT and label-map voxel size, mm (isotropic), 0.1 to 4. The ultrasound frame
        keeps its own 0.15 mm pixels.

    Returns
    -------
    DemoCase
        With read-only arrays (built once per name and spacing, then cached).

    Raises
    ------
    InputError
        For an unknown name (the message lists the known ones), a spacing out of range,
        or a grid too large for the memory available.
    """
    modules = _case_modules()
    key = str(name).strip().lower()
    if key not in modules:
        raise InputError(f"unknown demo case {name!r}; known cases: {', '.join(modules)}")
    return _fresh_view(_build_cached(key, _check_spacing(spacing_mm)))


def _line_record(line) -> dict:
    record = {"name": line.name, "radius_mm": float(line.radius_mm)}
    if isinstance(line, NerveLine):
        record["target"] = bool(line.target)
        if line.radii_mm is not None:
            record["radii_mm"] = [round(float(r), 4) for r in line.radii_mm]
    else:
        record["kind"] = line.kind
    record["points_mm"] = [[round(float(c), 4) for c in point] for point in line.points]
    return record


def write_demo_case(name: str, folder, *, spacing_mm: float = 0.5) -> dict[str, Path]:
    """Write a demo case's images and centrelines into a folder (created if needed).

    Files: ``ct.nii.gz`` (int16 HU), ``labels.nii.gz`` (uint8 tissue labels),
    ``ultrasound.nii.gz`` (uint8, one slice, placed in the same world frame) when the
    case has one, and ``nerves.json`` (nerve and vessel centrelines and landmarks in
    world LPS mm, with the case's title and teaching note).

    Returns
    -------
    dict of str to Path
        ``{"ct": ..., "labels": ..., "ultrasound": ..., "nerves": ...}`` for the files written.
    """
    from planner.imaging.formats import write_volume

    case = build_demo_case(name, spacing_mm=spacing_mm)
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{folder}: cannot create the folder: {error.strerror or error}") from None
    written = {
        "ct": write_volume(case.ct, folder / "ct.nii.gz"),
        "labels": write_volume(case.labels, folder / "labels.nii.gz"),
    }
    if case.ultrasound is not None:
        written["ultrasound"] = write_volume(case.ultrasound, folder / "ultrasound.nii.gz")
    description = {
        "case": case.name,
        "title": case.title,
        "description": case.description,
        "frame": "LPS",
        "units": "mm",
        "nerves": [_line_record(nerve) for nerve in case.nerves],
        "vessels": [_line_record(vessel) for vessel in case.vessels],
        "landmarks": {key: [round(float(c), 4) for c in point] for key, point in case.landmarks.items()},
    }
    nerves_path = folder / "nerves.json"
    try:
        nerves_path.write_text(json.dumps(description, indent=1) + "\n")
    except OSError as error:
        raise InputError(f"{nerves_path}: cannot write: {error.strerror or error}") from None
    written["nerves"] = nerves_path
    return written
