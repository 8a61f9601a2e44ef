"""Surfaces of the tissue classes of a label map, in world millimetres.

VTK's surface nets (``pyvista.ImageData.contour_labels``) build all the label
boundaries at once, so neighbouring tissues share their faces and nothing overlaps or
leaves gaps. The filter runs in voxel index space and the points are then mapped
through the volume's full affine: VTK's image filters do not all honour the direction
matrix, and doing the mapping here keeps oblique and left-handed grids right.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from planner.errors import InputError
from planner.labels import Tissue
from planner.volume import Volume

if TYPE_CHECKING:  # pragma: no cover - typing only; pyvista is imported lazily
    import pyvista

SMOOTHING_ITERATIONS = 16
"""Light smoothing: the staircase goes, the surface stays within a voxel of the label edge."""


def _tissue_name(value: int) -> str:
    try:
        return Tissue(value).key
    except ValueError:
        return f"label_{value}"


def tissue_surfaces(
    labels: Volume,
    *,
    tissues=None,
    smoothing_iterations: int = SMOOTHING_ITERATIONS,
    smoothing_relaxation: float = 0.5,
) -> dict[str, "pyvista.PolyData"]:
    """One closed triangle surface per tissue class, in world LPS mm.

    Parameters
    ----------
    labels : Volume
        Tissue label map, array ``(nk, nj, ni)`` of :class:`Tissue` values; any
        affine (oblique, anisotropic, left-handed).
    tissues : iterable of Tissue or int, optional
        Classes to return; by default every class present except :attr:`Tissue.AIR`.
    smoothing_iterations : int
        Constrained smoothing passes of the surface nets (0: the voxel staircase).
    smoothing_relaxation : float
        Step of each smoothing pass, 0 to 1.

    Returns
    -------
    dict of str to pyvista.PolyData
        Keyed by :attr:`Tissue.key` (``"bone"``, ``"nerve"``...; ``"label_<n>"`` for a
        value that is not a Tissue), for classes present in the map. Each surface has
        the cell array ``"boundary_labels"`` (the two labels either side of each
        triangle) and lies half a voxel outside the outermost voxel centres of its class,
        as the voxels' own faces do. A face shared by two classes appears in both
        surfaces with one winding, so normals are not oriented outwards per class (compute
        them with ``auto_orient_normals`` where lighting needs it).

    Raises
    ------
    InputError
        When ``labels`` is a cine loop or not integer-valued.
    """
    import pyvista as pv

    source = labels.metadata.get("source", "label map")
    if labels.is_cine:
        raise InputError(f"{source}: a cine loop has no tissue surfaces")
    array = np.asarray(labels.array)
    if array.dtype.kind not in "iub":
        raise InputError(f"{source}: tissue surfaces need an integer label map, got {array.dtype}")
    present = [int(v) for v in np.unique(array) if int(v) != Tissue.AIR]
    wanted = present if tissues is None else [int(t) for t in tissues if int(t) in present]
    if not wanted:
        return {}

    # Index space: unit spacing, no direction; the affine is applied to the points below.
    grid = pv.ImageData(dimensions=labels.shape_xyz)
    grid.point_data["labels"] = np.ascontiguousarray(array, dtype=np.int32).ravel(order="C")
    nets = grid.contour_labels(
        "all",
        background_value=int(Tissue.AIR),
        output_mesh_type="triangles",
        smoothing=smoothing_iterations > 0,
        smoothing_iterations=max(int(smoothing_iterations), 1),
        smoothing_relaxation=float(smoothing_relaxation),
    )
    if nets.n_cells == 0:
        return {}
    world_points = labels.index_to_world(np.asarray(nets.points, dtype=float))
    triangles = np.asarray(nets.faces).reshape(-1, 4)[:, 1:]
    sides = np.asarray(nets.cell_data["boundary_labels"])

    surfaces: dict[str, pv.PolyData] = {}
    for value in wanted:
        keep = np.any(sides == value, axis=1)
        if not np.any(keep):
            continue
        chosen = triangles[keep]
        used, inverse = np.unique(chosen, return_inverse=True)
        local = inverse.reshape(-1, 3)
        faces = np.hstack([np.full((len(local), 1), 3), local]).ravel()
        surface = pv.PolyData(world_points[used], faces=faces)
        surface.cell_data["boundary_labels"] = sides[keep]
        surfaces[_tissue_name(value)] = surface
    return surfaces
