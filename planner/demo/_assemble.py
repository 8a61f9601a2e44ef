"""From a case's geometry (a painting function in a local frame) to a :class:`DemoCase`.

Each case module describes its anatomy once, in a local frame in millimetres, as a
function that paints :class:`Material` values at any points. This module samples that
function on the CT grid and on the ultrasound plane, so both images show exactly the
same anatomy, and maps everything (grid, centrelines, landmarks) to world LPS through
one rigid transform.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from planner import NOT_FOR_CLINICAL_USE
from planner.demo._materials import TISSUE_OF
from planner.demo._synth import synthesize_ct, synthesize_ultrasound
from planner.demo.case import DemoCase, NerveLine, VesselLine
from planner.imaging.memory import check_fits_in_memory
from planner.volume import Volume, affine_from_geometry

BYTES_PER_VOXEL_WHILE_BUILDING = 64
"""Peak working memory per CT voxel while painting (float32 coordinates and temporaries)."""


@dataclass
class Centreline:
    """A nerve or vessel centreline in the case's local frame (mm)."""

    name: str
    points: np.ndarray
    radius_mm: float
    kind: str  # "nerve", "artery" or "vein"
    target: bool = False
    radii_mm: np.ndarray | None = None


@dataclass
class UltrasoundView:
    """Where a linear probe sits and looks, in the case's local frame.

    ``probe_centre`` is the middle of the probe face (top centre of the image, mm);
    ``lateral`` the unit direction of the image columns, ``depth`` that of the rows.
    """

    probe_centre: tuple[float, float, float]
    lateral: tuple[float, float, float]
    depth: tuple[float, float, float]
    width_mm: float
    depth_mm: float
    pixel_mm: float = 0.15
    view: str = ""


@dataclass
class CaseModel:
    """Everything a case defines, independent of the voxel size.

    ``paint(x, y, z)`` takes float32 arrays of one shape (local mm) and returns uint8
    :class:`Material` values of that shape. ``rotation`` (3x3, columns = local axes in
    world) and ``translation`` (mm) map local points to world LPS:
    ``world = rotation @ local + translation``.
    """

    name: str
    title: str
    description: str
    seed: int
    box_low: tuple[float, float, float]
    box_high: tuple[float, float, float]
    paint: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    centrelines: list[Centreline] = field(default_factory=list)
    landmarks: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    ultrasound: UltrasoundView | None = None

    def to_world(self, local) -> np.ndarray:
        """Local mm ``(..., 3)`` to world LPS mm ``(..., 3)``."""
        return np.asarray(local, dtype=float) @ np.asarray(self.rotation).T + np.asarray(self.translation)

    def grid_shape(self, spacing_mm: float) -> tuple[int, int, int]:
        """CT array shape ``(nk, nj, ni)`` for an isotropic voxel size (mm)."""
        extent = np.asarray(self.box_high, dtype=float) - np.asarray(self.box_low, dtype=float)
        ni, nj, nk = (int(round(e / spacing_mm)) + 1 for e in extent)
        return (nk, nj, ni)


def _metadata(model: CaseModel, **extra) -> dict:
    return {
        "source": f"demo:{model.name}",
        "synthetic": True,
        "series_description": model.title,
        "notes": [f"Synthetic demo anatomy. {NOT_FOR_CLINICAL_USE}"],
        **extra,
    }


def _inside_box(model: CaseModel, local_points: np.ndarray) -> np.ndarray:
    low = np.asarray(model.box_low) - 1e-6
    high = np.asarray(model.box_high) + 1e-6
    return np.all((local_points >= low) & (local_points <= high), axis=-1)


def _ultrasound(model: CaseModel) -> Volume:
    view = model.ultrasound
    lateral = np.asarray(view.lateral, dtype=float)
    depth = np.asarray(view.depth, dtype=float)
    lateral /= np.linalg.norm(lateral)
    depth /= np.linalg.norm(depth)
    normal = np.cross(lateral, depth)
    n_columns = int(round(view.width_mm / view.pixel_mm))
    n_rows = int(round(view.depth_mm / view.pixel_mm))
    top_left = np.asarray(view.probe_centre, dtype=float) - lateral * view.pixel_mm * (n_columns - 1) / 2
    rows = np.arange(n_rows, dtype=float)[:, None, None] * view.pixel_mm * depth
    columns = np.arange(n_columns, dtype=float)[None, :, None] * view.pixel_mm * lateral
    local = (top_left + rows + columns).astype(np.float32)
    materials = model.paint(local[..., 0], local[..., 1], local[..., 2])
    image = synthesize_ultrasound(materials, pixel_mm=view.pixel_mm, seed=model.seed + 1)
    rotation = np.asarray(model.rotation, dtype=float)
    direction = rotation @ np.stack([lateral, depth, normal], axis=1)
    affine = affine_from_geometry((view.pixel_mm,) * 3, model.to_world(top_left), direction)
    return Volume(
        image[np.newaxis],
        affine,
        modality="US",
        units="",
        metadata=_metadata(model, view=view.view, probe_face_centre_mm=model.to_world(view.probe_centre).tolist()),
    )


def assemble(model: CaseModel, *, spacing_mm: float) -> DemoCase:
    """Sample a case model on an isotropic grid and build its :class:`DemoCase`.

    Parameters
    ----------
    model : CaseModel
        The case's geometry.
    spacing_mm : float
        CT voxel size, mm (isotropic). The ultrasound keeps its own pixel size.
    """
    shape = model.grid_shape(spacing_mm)
    check_fits_in_memory(
        shape, np.uint8, f"demo:{model.name} at {spacing_mm} mm", copies=BYTES_PER_VOXEL_WHILE_BUILDING
    )
    low = np.asarray(model.box_low, dtype=float)
    nk, nj, ni = shape
    axes = [(low[axis] + spacing_mm * np.arange(n)).astype(np.float32) for axis, n in enumerate((ni, nj, nk))]
    z, y, x = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    materials = model.paint(x, y, z)
    del x, y, z
    rotation = np.asarray(model.rotation, dtype=float)
    affine = affine_from_geometry((spacing_mm,) * 3, model.to_world(low), rotation)
    hu = synthesize_ct(materials, spacing_mm=spacing_mm, seed=model.seed)
    labels = TISSUE_OF[materials]
    for array in (hu, labels):
        array.flags.writeable = False
    ct = Volume(hu, affine.copy(), modality="CT", units="HU", metadata=_metadata(model))
    label_volume = Volume(labels, affine.copy(), modality="SEG", units="label", metadata=_metadata(model))

    nerves, vessels = [], []
    for line in model.centrelines:
        inside = _inside_box(model, line.points)
        if inside.sum() < 2:
            continue
        world = model.to_world(line.points[inside])
        if line.kind == "nerve":
            radii = None if line.radii_mm is None else np.asarray(line.radii_mm)[inside]
            nerves.append(NerveLine(line.name, world, line.radius_mm, target=line.target, radii_mm=radii))
        else:
            vessels.append(VesselLine(line.name, world, line.radius_mm, kind=line.kind))
    landmarks = {}
    for key, point in model.landmarks.items():
        world = model.to_world(point)
        world.flags.writeable = False
        landmarks[key] = world
    ultrasound = None
    if model.ultrasound is not None:
        ultrasound = _ultrasound(model)
        ultrasound.array.flags.writeable = False
    return DemoCase(
        name=model.name,
        title=model.title,
        description=model.description,
        ct=ct,
        labels=label_volume,
        nerves=nerves,
        vessels=vessels,
        landmarks=landmarks,
        ultrasound=ultrasound,
    )
