"""The solver's grid: a box of cells, uniform near the probes, coarser towards the edge.

The grid is rectilinear in its own frame: cell faces along each axis are given
explicitly, so the fine core (where the ice and the steep gradients are) and a
geometrically stretched far field share one 7-point finite-volume stencil. A uniform
grid is the special case of no stretching. The frame is placed in the world (LPS)
by an origin and a direction matrix like :class:`planner.volume.Volume`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.volume import affine_from_geometry


def uniform_faces(lo: float, hi: float, spacing: float) -> np.ndarray:
    """Faces of cells of size ``spacing`` from ``lo`` on, covering ``[lo, hi]`` (mm)."""
    n = max(1, int(np.ceil((hi - lo) / spacing - 1e-9)))
    return lo + np.arange(n + 1) * spacing


def stretched_faces(
    core_lo: float,
    core_hi: float,
    outer_lo: float,
    outer_hi: float,
    spacing: float,
    *,
    ratio: float = 1.15,
    max_cell: float | None = None,
) -> np.ndarray:
    """Faces (mm) of a uniform core ``[core_lo, core_hi]`` at ``spacing`` and cells growing by
    ``ratio`` (up to ``max_cell`` mm, at least ``spacing``) outwards until ``[outer_lo, outer_hi]``
    is covered: :func:`zoned_faces` without a middle zone."""
    return zoned_faces(core_lo, core_hi, core_lo, core_hi, outer_lo, outer_hi, spacing, spacing,
                       outer_ratio=ratio, max_cell=max_cell)


def zoned_faces(
    fine_lo: float,
    fine_hi: float,
    middle_lo: float,
    middle_hi: float,
    outer_lo: float,
    outer_hi: float,
    spacing: float,
    middle_spacing: float,
    *,
    middle_ratio: float = 1.25,
    outer_ratio: float = 1.5,
    max_cell: float | None = None,
) -> np.ndarray:
    """Faces (mm) of three zones along one axis: a uniform core ``[fine_lo, fine_hi]`` at
    ``spacing``; cells growing by ``middle_ratio`` up to ``middle_spacing`` while inside
    ``[middle_lo, middle_hi]``; then growing by ``outer_ratio`` (up to ``max_cell``) until
    ``[outer_lo, outer_hi]`` is covered.

    Near a probe the gradients are steepest (the frozen profile is logarithmic in the
    distance from the axis), across the rest of the ice the front needs only a moderate
    cell, and beyond it the slow, smooth cooling needs few cells; the stencil takes any
    rectilinear widths.
    """
    if middle_spacing < spacing:
        raise ValueError("middle_spacing must be at least spacing")
    core = uniform_faces(fine_lo, fine_hi, spacing)
    max_cell = np.inf if max_cell is None else max_cell

    def grow(position, limit_middle, limit_outer, sign):
        faces, width = [], spacing
        while sign * (limit_outer - position) > 1e-9:
            if sign * (limit_middle - position) > 1e-9:
                width = min(width * middle_ratio, middle_spacing)
            else:
                width = min(max(width, middle_spacing) * outer_ratio, max(max_cell, middle_spacing))
            position += sign * width
            faces.append(position)
        return faces

    lower = grow(core[0], middle_lo, outer_lo, -1.0)
    upper = grow(core[-1], middle_hi, outer_hi, 1.0)
    return np.concatenate([np.array(lower[::-1]), core, np.array(upper)])


@dataclass(eq=False)
class ThermalGrid:
    """A rectilinear box of cells placed in the world.

    Parameters
    ----------
    x_faces, y_faces, z_faces : 1D ndarray
        Cell faces along the grid's own axes, mm, increasing; ``n + 1`` faces for
        ``n`` cells. The array shape is ``(nz, ny, nx)``.
    origin : (3,) ndarray
        World LPS mm of the grid frame's zero.
    direction : (3, 3) ndarray
        Columns are the grid's x, y, z axes in world (LPS).
    """

    x_faces: np.ndarray
    y_faces: np.ndarray
    z_faces: np.ndarray
    origin: np.ndarray
    direction: np.ndarray

    def __post_init__(self) -> None:
        for name in ("x_faces", "y_faces", "z_faces"):
            faces = np.asarray(getattr(self, name), dtype=float)
            if faces.ndim != 1 or faces.size < 2 or np.any(np.diff(faces) <= 0):
                raise ValueError(f"{name} must be at least two increasing values")
            setattr(self, name, faces)
        self.origin = np.asarray(self.origin, dtype=float).reshape(3)
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if not np.allclose(self.direction.T @ self.direction, np.eye(3), atol=1e-6):
            raise ValueError("direction must be orthonormal")

    @classmethod
    def uniform(cls, shape, spacing, *, origin=(0.0, 0.0, 0.0), direction=None, lower=(0.0, 0.0, 0.0)):
        """A uniform grid of ``shape`` ``(nz, ny, nx)`` cells of ``spacing`` mm (scalar or
        per-axis ``(sx, sy, sz)``), the lower corner at ``lower`` (grid frame, mm)."""
        nz, ny, nx = shape
        sx, sy, sz = np.broadcast_to(np.asarray(spacing, dtype=float), (3,))
        direction = np.eye(3) if direction is None else direction
        return cls(
            lower[0] + np.arange(nx + 1) * sx,
            lower[1] + np.arange(ny + 1) * sy,
            lower[2] + np.arange(nz + 1) * sz,
            origin,
            direction,
        )

    # ------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        """Number of cells ``(nz, ny, nx)``."""
        return (self.z_faces.size - 1, self.y_faces.size - 1, self.x_faces.size - 1)

    @property
    def size(self) -> int:
        """Number of cells."""
        nz, ny, nx = self.shape
        return nz * ny * nx

    def centres(self, axis: int) -> np.ndarray:
        """Cell centres along grid axis ``axis`` (0 = x, 1 = y, 2 = z), mm."""
        faces = (self.x_faces, self.y_faces, self.z_faces)[axis]
        return 0.5 * (faces[1:] + faces[:-1])

    def widths(self, axis: int) -> np.ndarray:
        """Cell widths along grid axis ``axis`` (0 = x, 1 = y, 2 = z), mm."""
        return np.diff((self.x_faces, self.y_faces, self.z_faces)[axis])

    @property
    def spacing(self) -> float:
        """The finest cell width, mm (the core spacing of a stretched grid)."""
        return float(min(self.widths(a).min() for a in range(3)))

    @property
    def is_uniform(self) -> bool:
        """True when every cell has the same size along each axis."""
        return all(np.allclose(self.widths(a), self.widths(a)[0], rtol=1e-9, atol=1e-12) for a in range(3))

    def cell_volumes(self) -> np.ndarray:
        """Cell volumes, (nz, ny, nx) ndarray, mm3."""
        wx, wy, wz = (self.widths(a) for a in range(3))
        return wz[:, None, None] * wy[None, :, None] * wx[None, None, :]

    def local_to_world(self, points) -> np.ndarray:
        """Grid-frame mm ``(..., 3)`` as ``(x, y, z)`` to world LPS mm."""
        return np.asarray(points, dtype=float) @ self.direction.T + self.origin

    def world_to_local(self, points) -> np.ndarray:
        """World LPS mm ``(..., 3)`` to grid-frame mm ``(x, y, z)``."""
        return (np.asarray(points, dtype=float) - self.origin) @ self.direction

    def cell_centres_local(self) -> np.ndarray:
        """Grid-frame centres of all cells, (nz, ny, nx, 3) as ``(x, y, z)`` mm."""
        z, y, x = np.meshgrid(self.centres(2), self.centres(1), self.centres(0), indexing="ij")
        return np.stack([x, y, z], axis=-1)

    def locate(self, points_local) -> np.ndarray:
        """Cell index ``(k, j, i)`` containing each grid-frame point ``(n, 3)``; -1 outside."""
        points_local = np.atleast_2d(np.asarray(points_local, dtype=float))
        out = np.empty((points_local.shape[0], 3), dtype=np.int64)
        for axis, faces in enumerate((self.x_faces, self.y_faces, self.z_faces)):
            index = np.searchsorted(faces, points_local[:, axis], side="right") - 1
            index[(index < 0) | (index >= faces.size - 1)] = -1
            out[:, 2 - axis] = index
        out[np.any(out < 0, axis=1)] = -1
        return out

    def bounds_local(self) -> np.ndarray:
        """``[[xmin, ymin, zmin], [xmax, ymax, zmax]]`` of the box faces, grid frame mm."""
        return np.array(
            [
                [self.x_faces[0], self.y_faces[0], self.z_faces[0]],
                [self.x_faces[-1], self.y_faces[-1], self.z_faces[-1]],
            ]
        )

    @property
    def affine(self) -> np.ndarray:
        """4x4 affine ``(i, j, k, 1)`` -> world LPS mm of the cell centres when the grid is
        uniform (as :class:`planner.volume.Volume`'s); for a stretched grid, that of the
        uniform lattice at the finest spacing that :meth:`uniform_affine` describes."""
        return self.uniform_affine()[0]

    def uniform_affine(self, spacing: float | None = None) -> tuple[np.ndarray, tuple[int, int, int]]:
        """Affine (4x4, ``(i, j, k, 1)`` -> world LPS mm) and shape ``(nz, ny, nx)`` of a uniform
        lattice of ``spacing`` mm (default: the finest cell width) whose voxel centres span
        this grid's cell centres. For a uniform grid this is the grid itself."""
        if spacing is None and self.is_uniform:
            steps = np.array([self.widths(a)[0] for a in range(3)])
            shape = self.shape
        else:
            spacing = self.spacing if spacing is None else float(spacing)
            steps = np.full(3, spacing)
            extent = np.array([self.centres(a)[-1] - self.centres(a)[0] for a in range(3)])
            counts = np.floor(extent / spacing + 1e-9).astype(int) + 1
            shape = (int(counts[2]), int(counts[1]), int(counts[0]))
        first = np.array([self.centres(a)[0] for a in range(3)])
        affine = affine_from_geometry(steps, self.local_to_world(first), self.direction)
        return affine, shape

    def __repr__(self) -> str:
        nz, ny, nx = self.shape
        kind = "uniform" if self.is_uniform else "stretched"
        extent = np.diff(self.bounds_local(), axis=0).ravel()
        return (
            f"ThermalGrid({nx}x{ny}x{nz} cells, {kind}, finest {self.spacing:.3g} mm, "
            f"box {extent[0]:.1f}x{extent[1]:.1f}x{extent[2]:.1f} mm)"
        )
