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


@dataclass(eq=False)
class NestedGrid:
    """Boxes of cells nested one in another: a composite grid that puts fine cells only
    where they are needed, instead of along whole rows, columns and planes as a rectilinear
    grid must.

    Level 0 is any :class:`ThermalGrid` (a uniform core, stretched towards the edge). Each
    further level is a uniform box of cells half as wide as its parent's, whose faces are
    faces of its parent and which lies inside its parent's uniform cells (those beside it
    too), at least one parent cell in from the parent's box (so it never touches a held outer layer or a coarser
    level). The parent's cells it covers take no part in the solve; heat crosses between a
    level and its parent through links from each boundary cell of the child to the parent
    cell beside it (conservative: what one side loses, the other gains).

    All levels share one frame (``origin``, ``direction``). A field on a nested grid is one
    flat array, level after level, each level in C order over its ``(nz, ny, nx)``.
    """

    levels: list[ThermalGrid]

    def __post_init__(self) -> None:
        self.levels = list(self.levels)
        if not self.levels:
            raise ValueError("a nested grid needs at least one level")
        first = self.levels[0]
        for number, (parent, child) in enumerate(zip(self.levels[:-1], self.levels[1:]), start=1):
            if not (np.allclose(child.origin, first.origin) and np.allclose(child.direction, first.direction)):
                raise ValueError(f"level {number}: must share level 0's origin and direction")
            if not child.is_uniform:
                raise ValueError(f"level {number}: must be uniform")
            for axis in range(3):
                parent_faces = (parent.x_faces, parent.y_faces, parent.z_faces)[axis]
                child_faces = (child.x_faces, child.y_faces, child.z_faces)[axis]
                lo, hi = self._parent_range(parent_faces, child_faces, number, axis)
                if lo < 1 or hi > parent_faces.size - 2:
                    raise ValueError(f"level {number}: must lie at least one parent cell inside level {number - 1} "
                                     f"along {'xyz'[axis]}")
                widths = np.diff(parent_faces)[lo - 1:hi + 1]
                if not np.allclose(widths, 2.0 * child.widths(axis)[0], rtol=1e-6):
                    raise ValueError(f"level {number}: the parent cells it covers and those beside it must be "
                                     f"twice its cell width along {'xyz'[axis]}")
        sizes = [level.size for level in self.levels]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    @staticmethod
    def _parent_range(parent_faces, child_faces, number, axis) -> tuple[int, int]:
        """Parent cell indices ``[lo, hi)`` that the child covers along one axis."""
        tolerance = 1e-6 * max(1.0, float(np.abs(parent_faces).max()))
        lo = int(np.argmin(np.abs(parent_faces - child_faces[0])))
        hi = int(np.argmin(np.abs(parent_faces - child_faces[-1])))
        if abs(parent_faces[lo] - child_faces[0]) > tolerance or abs(parent_faces[hi] - child_faces[-1]) > tolerance:
            raise ValueError(f"level {number}: its box faces along {'xyz'[axis]} must be faces of level {number - 1}")
        return lo, hi

    # ------------------------------------------------------------ layout
    @property
    def size(self) -> int:
        """Number of cells over all levels (covered ones included)."""
        return int(self.offsets[-1])

    @property
    def origin(self) -> np.ndarray:
        return self.levels[0].origin

    @property
    def direction(self) -> np.ndarray:
        return self.levels[0].direction

    @property
    def spacing(self) -> float:
        """The finest cell width, mm."""
        return min(level.spacing for level in self.levels)

    def split(self, flat: np.ndarray) -> list[np.ndarray]:
        """Views of a flat field ``(size, ...)`` as one ``(nz, ny, nx, ...)`` array per level."""
        return [flat[a:b].reshape(level.shape + flat.shape[1:])
                for level, a, b in zip(self.levels, self.offsets[:-1], self.offsets[1:])]

    def flatten(self, per_level) -> np.ndarray:
        """One flat array from a list of per-level arrays (the inverse of :meth:`split`)."""
        return np.concatenate([np.asarray(a).reshape(level.size) for level, a in zip(self.levels, per_level)])

    def cell_volumes(self) -> np.ndarray:
        """Flat cell volumes, mm3."""
        return self.flatten([level.cell_volumes() for level in self.levels])

    def child_ranges(self, number: int) -> list[tuple[int, int]]:
        """Cell index ranges ``[lo, hi)`` along x, y, z of level ``number - 1`` that level ``number`` covers."""
        parent, child = self.levels[number - 1], self.levels[number]
        return [self._parent_range((parent.x_faces, parent.y_faces, parent.z_faces)[axis],
                                   (child.x_faces, child.y_faces, child.z_faces)[axis], number, axis)
                for axis in range(3)]

    def covered(self) -> np.ndarray:
        """Flat bool mask of the cells a finer level covers (they take no part in the solve)."""
        masks = [np.zeros(level.shape, dtype=bool) for level in self.levels]
        for number in range(1, len(self.levels)):
            (x0, x1), (y0, y1), (z0, z1) = self.child_ranges(number)
            masks[number - 1][z0:z1, y0:y1, x0:x1] = True
        return self.flatten(masks)

    # ------------------------------------------------------------ coupling
    def interface_links(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Links across each level's box to its parent: flat indices ``(child, parent)`` and the
        finite-volume coefficients ``1 / (w d)`` of the child side and ``A / (d V)`` of the
        parent side (1/m2; ``A`` the child cell's face, ``d`` the centre distance along the
        axis, ``V`` the parent cell) and the child's share of ``d`` (for the series
        conductivity). A link's heat flow ``A k_face (T_parent - T_child) / d`` enters the two
        rates with opposite signs, so the coupling conserves heat. Sorted by parent cell."""
        parts = [[], [], [], [], []]
        for number in range(1, len(self.levels)):
            parent, child = self.levels[number - 1], self.levels[number]
            ranges = self.child_ranges(number)
            h = child.widths(0)[0]
            nz, ny, nx = child.shape
            pw = [parent.widths(a) for a in range(3)]
            for axis in range(3):
                for side in (0, 1):
                    # child cells on this face, as (k, j, i) index grids
                    index = [np.arange(nx), np.arange(ny), np.arange(nz)]
                    index[axis] = np.array([0 if side == 0 else child.shape[2 - axis] - 1])
                    kk, jj, ii = np.meshgrid(index[2], index[1], index[0], indexing="ij")
                    child_ijk = [ii.ravel(), jj.ravel(), kk.ravel()]
                    parent_ijk = [ranges[a][0] + child_ijk[a] // 2 for a in range(3)]
                    parent_ijk[axis] = np.full(ii.size, ranges[axis][0] - 1 if side == 0 else ranges[axis][1])
                    width_across = pw[axis][parent_ijk[axis]]
                    distance = 0.5 * (h + width_across)
                    volume = pw[0][parent_ijk[0]] * pw[1][parent_ijk[1]] * pw[2][parent_ijk[2]]
                    parts[0].append(self.offsets[number]
                                    + np.ravel_multi_index((child_ijk[2], child_ijk[1], child_ijk[0]), child.shape))
                    parts[1].append(self.offsets[number - 1]
                                    + np.ravel_multi_index((parent_ijk[2], parent_ijk[1], parent_ijk[0]), parent.shape))
                    parts[2].append(1e6 / (h * distance))
                    parts[3].append(1e6 * h * h / (distance * volume))
                    parts[4].append(0.5 * h / distance)
        if not parts[0]:
            empty = np.zeros(0)
            return empty.astype(np.int64), empty.astype(np.int64), empty, empty, empty
        child_cells, parent_cells, c_child, c_parent, share = (np.concatenate(p) for p in parts)
        order = np.argsort(parent_cells, kind="stable")  # by parent: each parent's links together
        return (child_cells[order].astype(np.int64), parent_cells[order].astype(np.int64),
                c_child[order].astype(np.float64), c_parent[order].astype(np.float64), share[order].astype(np.float64))

    # ------------------------------------------------------------ one grid for results
    def output_grid(self) -> ThermalGrid:
        """The rectilinear grid that results are given on: along each axis, each level's faces
        within its box and its parent's beyond (so every output cell lies inside one cell of
        the finest level there). For one level, that level itself."""
        if len(self.levels) == 1:
            return self.levels[0]
        faces = []
        for axis in range(3):
            merged = (self.levels[0].x_faces, self.levels[0].y_faces, self.levels[0].z_faces)[axis]
            for level in self.levels[1:]:
                own = (level.x_faces, level.y_faces, level.z_faces)[axis]
                tolerance = 1e-6 * level.widths(axis)[0]
                merged = np.concatenate([merged[merged < own[0] - tolerance], own, merged[merged > own[-1] + tolerance]])
            faces.append(merged)
        return ThermalGrid(faces[0], faces[1], faces[2], self.origin, self.direction)

    def restrict(self, flat: np.ndarray) -> np.ndarray:
        """A copy of ``flat`` whose covered cells hold the mean of the eight cells that cover
        them (finest first, so a level covered twice over gets the finest values)."""
        out = np.array(flat, copy=True)
        views = self.split(out)
        for number in range(len(self.levels) - 1, 0, -1):
            (x0, x1), (y0, y1), (z0, z1) = self.child_ranges(number)
            child = views[number]
            nz, ny, nx = child.shape[:3]
            means = child.reshape((nz // 2, 2, ny // 2, 2, nx // 2, 2) + child.shape[3:]).mean(axis=(1, 3, 5))
            views[number - 1][z0:z1, y0:y1, x0:x1] = means
        return out

    def to_output(self, flat: np.ndarray, *, order: int = 1) -> np.ndarray:
        """A flat field as an array on :meth:`output_grid`: in each output cell the value of the
        finest level there, interpolated trilinearly between that level's cell centres
        (``order=1``; exact at its own cells) or that of the level cell containing it
        (``order=0``; keeps volume integrals exact)."""
        if len(self.levels) == 1:
            return np.asarray(flat).reshape(self.levels[0].shape)
        output = self.output_grid()
        values = self.split(self.restrict(flat) if order == 1 else np.asarray(flat))
        out_centres = [output.centres(axis) for axis in range(3)]
        result = np.empty(output.shape, dtype=np.result_type(flat.dtype, np.float32))
        for number, level in enumerate(self.levels):
            # output cells whose centre lies inside this level's box (all of them for level 0)
            window = []
            for axis in range(3):
                faces = (level.x_faces, level.y_faces, level.z_faces)[axis]
                inside = np.flatnonzero((out_centres[axis] > faces[0]) & (out_centres[axis] < faces[-1]))
                window.append(slice(int(inside[0]), int(inside[-1]) + 1))
            block = values[number]
            for axis in range(3):
                positions = out_centres[axis][window[axis]]
                array_axis = 2 - axis
                if order == 1:
                    centres = level.centres(axis)
                    fraction = np.interp(positions, centres, np.arange(centres.size))
                    below = np.clip(np.floor(fraction).astype(np.int64), 0, max(centres.size - 2, 0))
                    above = np.minimum(below + 1, centres.size - 1)
                    weight = (fraction - below).reshape([-1 if a == array_axis else 1 for a in range(3)])
                    block = block.take(below, axis=array_axis) * (1 - weight) + block.take(above, axis=array_axis) * weight
                else:
                    faces = (level.x_faces, level.y_faces, level.z_faces)[axis]
                    cell = np.clip(np.searchsorted(faces, positions, side="right") - 1, 0, faces.size - 2)
                    block = block.take(cell, axis=array_axis)
            result[window[2], window[1], window[0]] = block
        return result

    def __repr__(self) -> str:
        parts = ", ".join(f"{level.shape[2]}x{level.shape[1]}x{level.shape[0]} at {level.spacing:.3g} mm"
                          for level in self.levels)
        return f"NestedGrid({len(self.levels)} levels: {parts}; {self.size} cells)"
