"""The one image type of the planner: a voxel array with a 4x4 affine in world mm.

World frame: DICOM patient coordinates (LPS), millimetres. The affine maps voxel
indices ``(i, j, k, 1)`` (column, row, slice) to world ``(x, y, z, 1)``; the array
is stored in numpy C order indexed ``[k, j, i]``, so ``array.ravel()`` runs with
``i`` fastest, exactly as VTK orders image points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only; pyvista is imported lazily
    import pyvista


def affine_from_geometry(spacing, origin, direction=None) -> np.ndarray:
    """Build a 4x4 affine from spacing ``(si, sj, sk)`` mm, origin ``(x, y, z)`` mm and
    a 3x3 direction matrix whose columns are the unit i, j, k axes in world (LPS)."""
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(np.asarray(spacing, dtype=float))
    affine[:3, 3] = np.asarray(origin, dtype=float)
    return affine


@dataclass(eq=False)
class Volume:
    """A 3D image (or a 2D cine loop) with its geometry.

    Parameters
    ----------
    array : (nk, nj, ni) ndarray
        Voxel values indexed ``[k, j, i]`` (slice, row, column). For a cine loop
        (``frame_times`` set) axis 0 is time, not depth.
    affine : (4, 4) ndarray
        Maps ``(i, j, k, 1)`` to world LPS millimetres.
    modality : str
        DICOM-style modality: ``"CT"``, ``"US"``, ``"MR"``, ``"SEG"`` (label map), ``"OT"``.
    units : str
        Units of the values: ``"HU"`` for CT, ``"label"`` for a label map, ``""`` if unknown.
    frame_times : (nk,) ndarray or None
        Seconds from the first frame, for a cine loop; ``None`` for a spatial volume.
    metadata : dict
        Reader-specific facts (patient, series description, source file, notes).
    """

    array: np.ndarray
    affine: np.ndarray
    modality: str = "OT"
    units: str = ""
    frame_times: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim == 2:
            self.array = self.array[np.newaxis]
        if self.array.ndim != 3:
            raise ValueError(f"Volume array must be 3D [k, j, i], got shape {self.array.shape}")
        self.affine = np.asarray(self.affine, dtype=float)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        if not np.all(np.isfinite(self.affine)) or abs(np.linalg.det(self.affine[:3, :3])) < 1e-12:
            raise ValueError("affine must be finite and invertible")
        if self.frame_times is not None:
            self.frame_times = np.asarray(self.frame_times, dtype=float)
            if self.frame_times.shape != (self.array.shape[0],):
                raise ValueError("frame_times needs one entry per frame (axis 0)")

    # ------------------------------------------------------------------ geometry
    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        """Number of voxels along ``(i, j, k)``, i.e. ``(columns, rows, slices)``."""
        nk, nj, ni = self.array.shape
        return (ni, nj, nk)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along ``(i, j, k)`` in mm, shape (3,)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """World position (LPS mm) of voxel ``(0, 0, 0)``'s centre, shape (3,)."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit i, j, k axes in world (LPS)."""
        return self.affine[:3, :3] / self.spacing

    @property
    def is_cine(self) -> bool:
        """True when axis 0 is time (an ultrasound cine loop)."""
        return self.frame_times is not None

    @property
    def n_frames(self) -> int:
        """Number of frames of a cine loop (1 for a spatial volume)."""
        return self.array.shape[0] if self.is_cine else 1

    def index_to_world(self, ijk) -> np.ndarray:
        """Map voxel indices ``(..., 3)`` as ``(i, j, k)`` to world LPS mm ``(..., 3)``."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_index(self, xyz) -> np.ndarray:
        """Map world LPS mm ``(..., 3)`` to continuous voxel indices ``(i, j, k)``."""
        xyz = np.asarray(xyz, dtype=float)
        inverse = np.linalg.inv(self.affine)
        return xyz @ inverse[:3, :3].T + inverse[:3, 3]

    def bounds_world(self) -> np.ndarray:
        """Axis-aligned world bounding box of the voxel centres: ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]``."""
        ni, nj, nk = self.shape_xyz
        corners = np.array([[i, j, k] for i in (0, ni - 1) for j in (0, nj - 1) for k in (0, nk - 1)])
        world = self.index_to_world(corners)
        return np.stack([world.min(axis=0), world.max(axis=0)])

    def contains(self, xyz, *, margin_voxels: float = 1e-6) -> np.ndarray:
        """True where world points ``(..., 3)`` lie inside the volume (voxel-centre extent,
        widened by ``margin_voxels`` so round-off on the last centre does not count as outside)."""
        ijk = self.world_to_index(xyz)
        upper = np.array(self.shape_xyz, dtype=float) - 1
        return np.all((ijk >= -margin_voxels) & (ijk <= upper + margin_voxels), axis=-1)

    def sample(self, xyz, *, order: int = 1, fill_value: float = np.nan) -> np.ndarray:
        """Values at world points ``(..., 3)`` mm: linear (``order=1``) or nearest (``order=0``).

        Points outside the volume get ``fill_value``.
        """
        from scipy import ndimage

        xyz = np.asarray(xyz, dtype=float)
        ijk = self.world_to_index(xyz.reshape(-1, 3))
        coords = ijk[:, ::-1].T  # array axes are (k, j, i)
        # No float copy of the whole array: map_coordinates reads any dtype and writes float64.
        values = ndimage.map_coordinates(self.array, coords, order=order, mode="nearest", output=np.float64)
        # Round-off puts points on the last voxel centre a hair outside; allow for it.
        values[~self.contains(xyz.reshape(-1, 3), margin_voxels=1e-3)] = fill_value
        return values.reshape(xyz.shape[:-1])

    def value_range(self) -> tuple[float, float]:
        """Minimum and maximum voxel value."""
        return float(self.array.min()), float(self.array.max())

    def frame(self, index: int) -> "Volume":
        """One frame of a cine loop as a single-slice spatial volume."""
        if not self.is_cine:
            raise ValueError("frame() needs a cine loop; this volume is spatial")
        return Volume(
            self.array[index : index + 1].copy(),
            self.affine.copy(),
            modality=self.modality,
            units=self.units,
            metadata={**self.metadata, "frame_index": index},
        )

    # ------------------------------------------------------------------ pyvista
    def to_pyvista(self, name: str = "values") -> "pyvista.ImageData":
        """Convert to a ``pyvista.ImageData`` that keeps spacing, origin and direction.

        A cine loop converts its first frame only (use :meth:`frame` for others).
        """
        import pyvista as pv

        source = self.frame(0) if self.is_cine else self
        grid = pv.ImageData(
            dimensions=source.shape_xyz,
            spacing=tuple(source.spacing),
            origin=tuple(source.origin),
            direction_matrix=source.direction,
        )
        grid.point_data[name] = np.ascontiguousarray(source.array).ravel(order="C")
        return grid

    @classmethod
    def from_pyvista(cls, grid: "pyvista.ImageData", name: str | None = None, **kwargs) -> "Volume":
        """Build a volume from a ``pyvista.ImageData`` point array (the active one by default)."""
        name = name or grid.point_data.active_scalars_name or grid.point_data.keys()[0]
        ni, nj, nk = grid.dimensions
        array = np.asarray(grid.point_data[name]).reshape(nk, nj, ni)
        direction = np.asarray(grid.direction_matrix, dtype=float)
        affine = affine_from_geometry(grid.spacing, grid.origin, direction)
        return cls(array, affine, **kwargs)

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        ni, nj, nk = self.shape_xyz
        sx, sy, sz = self.spacing
        kind = f"{self.n_frames} frames" if self.is_cine else f"{ni}x{nj}x{nk}"
        return (
            f"Volume({self.modality}, {kind}, spacing=({sx:.3g}, {sy:.3g}, {sz:.3g}) mm, "
            f"dtype={self.array.dtype}, units={self.units or '?'})"
        )
