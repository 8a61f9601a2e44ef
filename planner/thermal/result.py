"""What a thermal simulation returns: temperatures on the grid over time, and views of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from planner.thermal.grid import ThermalGrid
from planner.volume import Volume

if TYPE_CHECKING:  # pragma: no cover
    import pyvista


@dataclass(eq=False)
class ThermalResult:
    """Temperatures of one simulation.

    Attributes
    ----------
    grid : ThermalGrid
        The cells the temperatures live on.
    snapshot_times : (n,) ndarray
        s from the start of the protocol; the solver lands its steps on them exactly.
    temperatures : (n, nz, ny, nx) float32 ndarray
        degC at ``snapshot_times``.
    min_temperature : (nz, ny, nx) float32 ndarray
        degC, the lowest temperature each cell reached (checked after every step).
    time_below : dict float -> (nz, ny, nx) float32 ndarray
        For each threshold (degC), the seconds each cell spent below it.
    history : dict
        ``"time"`` (m,) s and ``"volume_ml"`` {level: (m,) ml}: the volume below each
        threshold after every step, for growth plots (on the solver's own cells: on a nested
        grid it differs slightly from the interpolated fields here); ``"stage_updates"`` and
        ``"solver_cells"`` count the solver's work, ``"solver_levels"`` its nested levels (1:
        one rectilinear grid).
    run_time_s : float
        Wall time of the solve, s.
    steps : int
        Number of time steps.
    dt : float
        Largest time step used, s.
    method : str
        Description of the scheme.
    probe_axes : (p, 2, 3) ndarray
        World LPS mm active-segment end points of each probe (empty for validation runs).
    notes : list of str
        Caveats collected during the run (box capped, thin probes, ...).
    stages : int
        Most RKL2 stages in one step (1 for forward Euler).
    final_enthalpy : (nz, ny, nx) ndarray
        J/m3, the solver state at the end, in the solver's precision (for restarts and
        conservation checks).
    """

    grid: ThermalGrid
    snapshot_times: np.ndarray
    temperatures: np.ndarray
    min_temperature: np.ndarray
    time_below: dict[float, np.ndarray]
    history: dict[str, Any]
    run_time_s: float
    steps: int
    dt: float
    method: str
    probe_axes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 3)))
    stages: int = 0
    notes: list[str] = field(default_factory=list)
    final_enthalpy: np.ndarray | None = None

    def __repr__(self) -> str:
        times = ", ".join(f"{t:g}" for t in self.snapshot_times[:6])
        more = ", ..." if len(self.snapshot_times) > 6 else ""
        return (
            f"ThermalResult({self.grid!r}, snapshots at [{times}{more}] s, {self.steps} steps, "
            f"min {float(self.min_temperature.min()):.1f} degC, {self.run_time_s:.2f} s)"
        )

    # --------------------------------------------------------------- volumes
    def _as_volume(self, values: np.ndarray, *, name: str, spacing: float | None = None) -> Volume:
        affine, shape = self.grid.uniform_affine(spacing)
        if self.grid.is_uniform and spacing is None:
            array = np.asarray(values, dtype=np.float32)
        else:
            array = resample_to_lattice(self.grid, values, affine, shape)
        return Volume(array, affine, modality="OT", units="degC", metadata={"quantity": name})

    def temperature_volume(self, index: int = -1, *, spacing: float | None = None) -> Volume:
        """Snapshot ``index`` as a :class:`Volume` (degC) on a uniform lattice (the grid itself
        when it is uniform, else trilinear resampling at ``spacing`` mm, default the finest)."""
        return self._as_volume(self.temperatures[index], name=f"temperature at {self.snapshot_times[index]:g} s",
                               spacing=spacing)

    def min_temperature_volume(self, *, spacing: float | None = None) -> Volume:
        """The lowest temperature reached, as a :class:`Volume` (degC)."""
        return self._as_volume(self.min_temperature, name="minimum temperature", spacing=spacing)

    # --------------------------------------------------------------- isotherms
    def _field(self, snapshot) -> np.ndarray:
        if snapshot == "min":
            return self.min_temperature
        return self.temperatures[snapshot]

    def isotherm_volume_ml(self, level: float, snapshot: int | str = -1) -> float:
        """Volume (ml) of the cells colder than ``level`` degC at ``snapshot`` (or ``"min"``:
        the cells that ever got colder)."""
        cold = self._field(snapshot) < level
        return float(self.grid.cell_volumes()[cold].sum() * 1e-3)

    def isotherm_mesh(self, level: float, snapshot: int | str = -1) -> tuple[np.ndarray, np.ndarray]:
        """Marching-cubes surface at ``level`` degC: vertices (n, 3) world LPS mm and triangles (m, 3).

        Empty arrays when nothing is colder than ``level``.
        """
        from skimage.measure import marching_cubes

        values = np.asarray(self._field(snapshot), dtype=np.float32)
        if not (values.min() < level < values.max()):
            return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
        # Pad with the warmest value so surfaces touching the box edge are closed.
        padded = np.pad(values, 1, mode="constant", constant_values=max(float(values.max()), level + 1.0))
        verts, faces, _, _ = marching_cubes(padded, level=level)
        local = np.empty_like(verts, dtype=float)
        for axis, column in ((0, 2), (1, 1), (2, 0)):
            centres = self.grid.centres(axis)
            widths = self.grid.widths(axis)
            padded_centres = np.concatenate([[centres[0] - widths[0]], centres, [centres[-1] + widths[-1]]])
            local[:, axis] = np.interp(verts[:, column], np.arange(padded_centres.size), padded_centres)
        return self.grid.local_to_world(local), faces.astype(np.int64)

    def isotherm_surface(self, level: float, snapshot: int | str = -1) -> "pyvista.PolyData":
        """The ``level`` degC isotherm at ``snapshot`` as a ``pyvista.PolyData`` in world LPS mm."""
        import pyvista as pv

        verts, faces = self.isotherm_mesh(level, snapshot)
        if len(faces) == 0:
            return pv.PolyData()
        cells = np.hstack([np.full((len(faces), 1), 3, dtype=np.int64), faces]).ravel()
        return pv.PolyData(verts, cells)

    def main_axis(self) -> np.ndarray:
        """Unit world vector: the mean probe direction (grid z when there are no probes)."""
        if len(self.probe_axes) == 0:
            return self.grid.direction[:, 2].copy()
        return mean_probe_axis(self.probe_axes)

    def isotherm_extent_mm(self, level: float, snapshot: int | str = -1) -> dict[str, float]:
        """Size of the ``level`` degC isotherm: ``along`` (extent along the mean probe axis),
        ``across`` (largest extent perpendicular to it), ``max_diameter`` (largest distance
        between two surface points), all mm; zeros when there is no such surface."""
        verts, _ = self.isotherm_mesh(level, snapshot)
        return surface_extent_mm(verts, self.main_axis())

    def summary(self, levels=None) -> dict[str, Any]:
        """JSON-ready facts: run figures and, per threshold, final and worst-case volumes and extents."""
        levels = sorted(self.time_below) if levels is None else list(levels)
        isotherms = {}
        for level in levels:
            isotherms[f"{level:g}"] = {
                "volume_ml_final": self.isotherm_volume_ml(level, -1),
                "volume_ml_ever": self.isotherm_volume_ml(level, "min"),
                "extent_mm_final": self.isotherm_extent_mm(level, -1),
            }
        nz, ny, nx = self.grid.shape
        return {
            "method": self.method,
            "grid_cells": [nx, ny, nz],
            "finest_spacing_mm": self.grid.spacing,
            "steps": int(self.steps),
            "dt_s": float(self.dt),
            "run_time_s": float(self.run_time_s),
            "snapshot_times_s": [float(t) for t in self.snapshot_times],
            "min_temperature_degC": float(self.min_temperature.min()),
            "isotherms": isotherms,
            "notes": list(self.notes),
        }


def mean_probe_axis(probe_axes: np.ndarray) -> np.ndarray:
    """Unit world vector: the mean direction of probes given as (n, 2, 3) tip/entry points,
    each probe's sign aligned with the first so opposite insertions do not cancel."""
    directions = probe_axes[:, 1] - probe_axes[:, 0]
    directions = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    signs = np.sign(directions @ directions[0])
    signs[signs == 0] = 1
    mean = (directions * signs[:, None]).sum(axis=0)
    return mean / np.linalg.norm(mean)


def surface_extent_mm(verts: np.ndarray, axis: np.ndarray) -> dict[str, float]:
    """Size of a surface given by its vertices (n, 3) mm: ``along`` the unit ``axis``,
    ``across`` it (largest extent perpendicular), ``max_diameter`` (largest distance between
    two vertices); zeros for an empty surface."""
    if len(verts) == 0:
        return {"along": 0.0, "across": 0.0, "max_diameter": 0.0}
    along = verts @ axis
    return {
        "along": float(along.max() - along.min()),
        "across": _max_pairwise_distance(verts - along[:, None] * axis),
        "max_diameter": _max_pairwise_distance(verts),
    }


def _max_pairwise_distance(points: np.ndarray) -> float:
    """Largest distance (mm) between two of ``points`` (n, 3): over the convex hull's vertices."""
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist

    points = np.asarray(points, dtype=float)
    if len(points) < 2:
        return 0.0
    try:
        hull = points[ConvexHull(points, qhull_options="QJ").vertices]
    except (QhullError, ValueError):  # flat or degenerate sets: a thinned set of all points
        hull = points[:: max(1, len(points) // 2000)]
    return float(pdist(hull).max()) if len(hull) > 1 else 0.0


def resample_to_lattice(grid: ThermalGrid, values: np.ndarray, affine: np.ndarray, shape) -> np.ndarray:
    """Trilinear resampling of cell values (nz, ny, nx) onto a uniform lattice in the grid's frame."""
    from scipy import ndimage

    nz, ny, nx = shape
    steps = np.linalg.norm(affine[:3, :3], axis=0)
    first = grid.world_to_local(affine[:3, 3])
    coords = []
    for axis, count in ((2, nz), (1, ny), (0, nx)):
        positions = first[axis] + np.arange(count) * steps[axis]
        centres = grid.centres(axis)
        coords.append(np.interp(positions, centres, np.arange(centres.size)))
    kk, jj, ii = np.meshgrid(*coords, indexing="ij")
    out = ndimage.map_coordinates(np.asarray(values, dtype=np.float32), [kk, jj, ii], order=1, mode="nearest")
    return out.astype(np.float32)
