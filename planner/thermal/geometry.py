"""Boundary shapes and their rasterisation onto a :class:`~planner.thermal.grid.ThermalGrid`.

A shape (a probe's active segment, a sphere, a half-space for the planar validation
case) becomes a :class:`Region`: the cells that carry the boundary condition, and
the *links* between those cells and their tissue neighbours.

How a prescribed surface temperature is applied (documented here once):

- Cells whose centre lies inside the shape are held at the surface temperature. For a
  cylinder, the cells its axis passes through are held too, so a probe thinner than a
  cell (a 27 G needle on a 0.5 mm grid) still has a line of cells.
- The true surface lies between a held cell and its tissue neighbour, not on the
  held cell's centre. Each such link's conductance is scaled by ``d / d_s``, the centre
  distance over the distance from the tissue cell's centre to the surface along the
  link (the Shortley-Weller cut-cell rule); this makes a staircase cylinder of any
  orientation behave like the smooth one.
- A probe thinner than a cell (radius below the finest cell size) is a line of held
  cells, and the cut-cell rule would overstate it (a held line already acts like a
  cylinder of radius ``0.208 h``, the Peaceman well radius). Its links instead follow the
  logarithmic radial profile around a line: scale ``(pi / 2) / ln(d_N / r)``, with ``d_N``
  the tissue cell centre's distance from the axis and ``r`` the probe radius, which is 1
  for ``r = 0.208 h`` and makes the line act as radius ``r`` (Peaceman's well model).
- Scale factors are clamped to ``[0.1, max_link_scale]`` (default 4) so a surface
  passing very close to a tissue centre cannot make the problem arbitrarily stiff.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from planner.thermal.grid import ThermalGrid


# ----------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class Cylinder:
    """A solid cylinder with flat ends around the segment ``start`` -> ``end`` (grid frame, mm)."""

    start: tuple[float, float, float]
    end: tuple[float, float, float]
    radius: float

    def _axial_radial(self, points):
        start = np.asarray(self.start, dtype=float)
        axis = np.asarray(self.end, dtype=float) - start
        length = float(np.linalg.norm(axis))
        axis = axis / length
        rel = np.asarray(points, dtype=float) - start
        along = rel @ axis
        radial = np.linalg.norm(rel - along[..., None] * axis, axis=-1)
        return along, radial, length

    def inside(self, points) -> np.ndarray:
        along, radial, length = self._axial_radial(points)
        return (along >= 0) & (along <= length) & (radial <= self.radius)

    def axis_distance(self, points) -> np.ndarray:
        """Distance (mm) from the axis segment (clamped to its ends)."""
        along, radial, length = self._axial_radial(points)
        beyond = np.clip(along, 0.0, length) - along
        return np.hypot(radial, beyond)

    def bounds(self) -> np.ndarray:
        ends = np.array([self.start, self.end], dtype=float)
        return np.stack([ends.min(axis=0) - self.radius, ends.max(axis=0) + self.radius])

    def axis_samples(self, step: float) -> tuple[np.ndarray, float]:
        """Points along the axis at most ``step`` mm apart, and the length each stands for."""
        start, end = np.asarray(self.start, dtype=float), np.asarray(self.end, dtype=float)
        length = float(np.linalg.norm(end - start))
        n = max(2, int(np.ceil(length / step)))
        fractions = (np.arange(n) + 0.5) / n
        return start + fractions[:, None] * (end - start), length / n


@dataclass(frozen=True)
class Sphere:
    """A solid sphere (grid frame, mm)."""

    centre: tuple[float, float, float]
    radius: float

    def inside(self, points) -> np.ndarray:
        return np.linalg.norm(np.asarray(points, dtype=float) - np.asarray(self.centre), axis=-1) <= self.radius

    def bounds(self) -> np.ndarray:
        centre = np.asarray(self.centre, dtype=float)
        return np.stack([centre - self.radius, centre + self.radius])


@dataclass(frozen=True)
class HalfSpace:
    """The half-space ``(p - point) . normal <= 0`` (grid frame, mm); ``normal`` points out of it."""

    point: tuple[float, float, float]
    normal: tuple[float, float, float]

    def inside(self, points) -> np.ndarray:
        normal = np.asarray(self.normal, dtype=float)
        normal = normal / np.linalg.norm(normal)
        return (np.asarray(points, dtype=float) - np.asarray(self.point)) @ normal <= 0

    def bounds(self) -> np.ndarray:
        return np.array([[-np.inf] * 3, [np.inf] * 3])


# ----------------------------------------------------------------------- regions
@dataclass(eq=False)
class Region:
    """A shape rasterised onto a grid.

    Attributes
    ----------
    cells : (n,) int64 ndarray
        Flat indices (C order over ``(nz, ny, nx)``) of the cells that carry the boundary.
    weights : (n,) float64 ndarray
        Share of the shape carried by each cell (sums to 1): by volume for cells whose
        centre is inside, by axis length for a probe thinner than a cell.
    link_tissue, link_held : (m,) int64 ndarray
        Flat indices of the tissue cell and the held cell of each link to the surface.
    link_coefficient : (m,) float64 ndarray
        ``1 / (w_N d)`` in 1/m2: the link's finite-volume coefficient (tissue cell width
        ``w_N`` along the link, centre distance ``d``).
    link_scale : (m,) float64 ndarray
        Conductance scale of each link (see the module notes).
    surface_area_mm2 : float
        Area of the shape's lateral surface (cylinders), for convective boundaries.
    """

    cells: np.ndarray
    weights: np.ndarray
    link_tissue: np.ndarray
    link_held: np.ndarray
    link_coefficient: np.ndarray
    link_scale: np.ndarray
    surface_area_mm2: float = 0.0
    notes: list[str] = field(default_factory=list)


def _sub_box(grid: ThermalGrid, bounds: np.ndarray) -> list[slice]:
    """Index slices (x, y, z) of the cells overlapping ``bounds`` plus one cell each side."""
    slices = []
    for axis, faces in enumerate((grid.x_faces, grid.y_faces, grid.z_faces)):
        lo = max(0, int(np.searchsorted(faces, bounds[0, axis], side="right")) - 2)
        hi = min(faces.size - 1, int(np.searchsorted(faces, bounds[1, axis], side="left")) + 1)
        slices.append(slice(lo, max(lo, hi)))
    return slices


def held_cell_mask(
    grid: ThermalGrid, shape, *, axis_step: float | None = None, include_axis: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean ``(nz, ny, nx)`` mask of the cells carrying ``shape``, and per-cell share weights.

    Cells whose centre is inside, plus (``include_axis``) those a cylinder's axis runs through."""
    mask = np.zeros(grid.shape, dtype=bool)
    weights = np.zeros(grid.shape, dtype=float)
    sx, sy, sz = _sub_box(grid, shape.bounds())
    if sx.stop <= sx.start or sy.stop <= sy.start or sz.stop <= sz.start:
        return mask, weights
    zc, yc, xc = grid.centres(2)[sz], grid.centres(1)[sy], grid.centres(0)[sx]
    zz, yy, xx = np.meshgrid(zc, yc, xc, indexing="ij")
    points = np.stack([xx, yy, zz], axis=-1)
    inside = shape.inside(points)
    mask[sz, sy, sx] = inside
    volumes = grid.cell_volumes()
    weights[mask] = volumes[mask]
    if isinstance(shape, Cylinder) and include_axis:
        step = (axis_step or grid.spacing) / 8.0
        samples, length_each = shape.axis_samples(step)
        index = grid.locate(samples)
        index = index[index[:, 0] >= 0]
        chain = np.zeros(grid.shape, dtype=float)
        np.add.at(chain, (index[:, 0], index[:, 1], index[:, 2]), length_each)
        if not mask.any():
            weights = chain
        mask |= chain > 0
    total = weights.sum()
    if total > 0:
        weights = weights / total
    return mask, weights


def rasterise(grid: ThermalGrid, shape, *, max_link_scale: float = 4.0) -> Region:
    """Rasterise ``shape`` (grid frame) onto ``grid``: held cells, share weights and surface links."""
    mask, weights = held_cell_mask(grid, shape)
    nz, ny, nx = grid.shape
    held = np.flatnonzero(mask)
    centres_by_axis = [grid.centres(a) for a in range(3)]
    widths_by_axis = [grid.widths(a) for a in range(3)]
    link_tissue, link_held, link_coef, link_scale = [], [], [], []
    k, j, i = np.unravel_index(held, grid.shape)
    notes = []
    # A needle thinner than a cell is a line of held cells: every link follows the log profile.
    thin = isinstance(shape, Cylinder) and shape.radius < grid.spacing
    for axis, (index, size) in enumerate(((i, nx), (j, ny), (k, nz))):
        for sign in (-1, 1):
            neighbour = index + sign
            ok = (neighbour >= 0) & (neighbour < size)
            kk, jj, ii = k[ok].copy(), j[ok].copy(), i[ok].copy()
            held_here = held[ok]
            (ii, jj, kk)[axis][...] = neighbour[ok]
            tissue_flat = np.ravel_multi_index((kk, jj, ii), grid.shape)
            free = ~mask.ravel()[tissue_flat]
            if not free.any():
                continue
            tissue_flat, held_here = tissue_flat[free], held_here[free]
            kk, jj, ii = kk[free], jj[free], ii[free]
            held_index = (ii - sign, jj, kk) if axis == 0 else (ii, jj - sign, kk) if axis == 1 else (ii, jj, kk - sign)
            centre_n = np.stack([centres_by_axis[0][ii], centres_by_axis[1][jj], centres_by_axis[2][kk]], axis=-1)
            centre_p = np.stack(
                [centres_by_axis[0][held_index[0]], centres_by_axis[1][held_index[1]], centres_by_axis[2][held_index[2]]],
                axis=-1,
            )
            distance = np.linalg.norm(centre_p - centre_n, axis=-1)
            width = widths_by_axis[axis][(ii, jj, kk)[axis]]
            scale = np.ones(distance.shape)
            if thin:
                d_n = shape.axis_distance(centre_n)
                scale = (np.pi / 2) / np.log(np.maximum(d_n / shape.radius, 1.0 + 1e-6))
                link_tissue.append(tissue_flat)
                link_held.append(held_here)
                link_coef.append(1.0 / (width * distance) * 1e6)  # 1/mm2 -> 1/m2
                link_scale.append(np.clip(scale, 0.1, max_link_scale))
                continue
            p_inside = shape.inside(centre_p)
            if p_inside.any():
                lo = np.zeros(int(p_inside.sum()))
                hi = np.ones_like(lo)
                a, b = centre_n[p_inside], centre_p[p_inside]
                for _ in range(40):
                    mid = 0.5 * (lo + hi)
                    now_inside = shape.inside(a + mid[:, None] * (b - a))
                    hi = np.where(now_inside, mid, hi)
                    lo = np.where(now_inside, lo, mid)
                scale[p_inside] = 1.0 / np.maximum(hi, 1e-6)
            # Cells held because a thick probe's axis runs through them although their centre
            # is outside (only at the capped ends) keep the plain link.
            link_tissue.append(tissue_flat)
            link_held.append(held_here)
            link_coef.append(1.0 / (width * distance) * 1e6)  # 1/mm2 -> 1/m2
            link_scale.append(np.clip(scale, 0.1, max_link_scale))
    if isinstance(shape, Cylinder) and shape.radius < grid.spacing:
        notes.append(
            f"probe radius {shape.radius:.3g} mm is below the cell size {grid.spacing:.3g} mm: held as a line "
            "of cells, its links to the tissue corrected to the true radius (cut-cell / log-profile)"
        )
    cat = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)  # noqa: E731
    area = 0.0
    if isinstance(shape, Cylinder):
        area = 2 * np.pi * shape.radius * float(np.linalg.norm(np.subtract(shape.end, shape.start)))
    return Region(
        cells=held.astype(np.int64),
        weights=weights.ravel()[held],
        link_tissue=cat(link_tissue, np.int64),
        link_held=cat(link_held, np.int64),
        link_coefficient=cat(link_coef, np.float64),
        link_scale=cat(link_scale, np.float64),
        surface_area_mm2=area,
        notes=notes,
    )
