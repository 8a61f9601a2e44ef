"""Fast ice-ball preview from precomputed single-probe fields (an approximation).

The browser app needs an answer on every probe move, far faster than the full solver
(:func:`planner.thermal.simulate`) can give one. The preview trades physics for speed:

1. For each distinct probe model + its own step sequence + tissue, the full solver runs
   ONCE with that probe alone in homogeneous tissue, along a grid axis. Its minimum
   temperature field (and the field at the end of each step) is averaged around the
   probe axis into an axisymmetric table ``T(r, z)``: ``r`` mm from the axis, ``z`` mm
   along the shaft from the tip. Tables are kept in memory (least recently used dropped)
   and on disk (``$CRYOPLAN_CACHE_DIR/preview``, else ``$XDG_CACHE_HOME/cryoplan/preview``
   or ``~/.cache/cryoplan/preview``) as ``.npz`` files named by a hash of the description,
   so a later session is instant. The hash includes the solver's source fingerprint
   (:func:`solver_fingerprint`), so a changed solver computes fresh tables.
2. A placement's preview looks each probe's table up at every query point's ``(r, z)``
   (bilinear) and combines the probes:

   - ``"union"`` (default): the MINIMUM over probes, the union of the single-probe ice
     balls. No interaction: it UNDERESTIMATES the ice of close probes, most for the colder
     isotherms between them (PHYSICS.md: phase change is nonlinear and neighbouring probes
     freeze each other's surroundings). Conservative for "is the target cold enough", not
     for "does the ice stay off the skin".
   - ``"kirchhoff"``: each probe's Kirchhoff deficit ``int_T^body k(T') dT'`` (W/m) is
     added and turned back into a temperature, never colder than the coldest probe. Steady
     conduction with a temperature-dependent conductivity is linear in this variable, so
     the sum estimates the interaction; it is much closer to the full solver for close
     probes but can OVERESTIMATE the 0 degC ice.

What this leaves out, and why it is labelled an approximation everywhere it is returned
(:attr:`PreviewResult.approximate`, :attr:`PreviewResult.caveat`, :data:`CAVEATS`; measured
errors in benchmarks/PREVIEW.md):

- Solved probe interaction (see above).
- Anatomy. Each probe's table is for one homogeneous tissue (the given class, or the
  label at the middle of the probe's active segment); bone, fat, air and vessels around
  the probe are ignored.
- Other probes' insulated shafts inside a neighbour's ice; the full solver's dependence on
  where a thin probe falls within its cells.

Research and education only. Not for clinical use.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numba
import numpy as np

from planner.errors import InputError
from planner.thermal.grid import ThermalGrid
from planner.thermal.probes import PlacedProbe, ProbeBoundary, placed_probes
from planner.thermal.properties import TissueProperties
from planner.thermal.protocol import ProtocolStep, validate_protocol
from planner.thermal.result import mean_probe_axis, surface_extent_mm
from planner.volume import Volume, affine_from_geometry

if TYPE_CHECKING:  # pragma: no cover
    import pyvista

    from planner.thermal.result import ThermalResult  # noqa: F401  (table_from_result's input)

# Bump when the table layout or how it is derived from the solver changes: old files on
# disk are then ignored (the key hash changes).
TABLE_FORMAT = 1

# Table cells warmer than this far below body temperature are not kept: outside the
# table a probe contributes body temperature (degC).
TRIM_TOLERANCE_C = 0.5

# Rays around the axis averaged per table node (the solver's box is Cartesian, so the
# field is only nearly axisymmetric near the probe).
AZIMUTHS = 16

# Measured against the full solver (benchmarks/bench_preview.py; the table is in
# benchmarks/PREVIEW.md) and quoted in every preview's caveat.
MEASURED_ERRORS = {
    "union": (
        "underestimates the -20 degC volume by ~32% for two 16 G N2O probes 6 mm apart in muscle "
        "(0 degC -25%, -40 degC -41%) and by ~51% for three 17 G argon probes on a 15 mm triangle; "
        "one probe alone within ~1% at 0 and -20 degC (up to ~4% at -40 degC) in homogeneous tissue, "
        "~13% in the demo chest wall"
    ),
    "kirchhoff": (
        "-20 degC volume +5% for two 16 G N2O probes 6 mm apart in muscle (0 degC +14%, -40 degC +21%) "
        "and -17% for three 17 G argon probes on a 15 mm triangle (0 degC -2%, -40 degC -15%); "
        "one probe alone within ~1% at 0 and -20 degC (up to ~4% at -40 degC) in homogeneous tissue, "
        "~13% in the demo chest wall"
    ),
}

_COMBINED_BY = {
    "union": "union of single-probe ice balls (no interaction between probes)",
    "kirchhoff": "single-probe fields added as Kirchhoff deficits (interaction estimated, not solved)",
}

CAVEATS = {
    mode: (
        f"APPROXIMATE PREVIEW, not the full solver: {_COMBINED_BY[mode]}, from precomputed axisymmetric "
        f"fields in homogeneous tissue per probe; {MEASURED_ERRORS[mode]}. Run the full simulation before "
        "drawing conclusions. Research and education only."
    )
    for mode in MEASURED_ERRORS
}

DEFAULT_LEVELS = (0.0, -20.0, -40.0)


# ============================================================================ tables
@dataclass(frozen=True)
class ProbeFieldKey:
    """Everything that determines one probe's precomputed field (hashable, for the caches).

    Attributes
    ----------
    diameter_mm, active_length_mm, tip_offset_mm : float
        The probe's geometry, mm.
    boundary : ProbeBoundary
        How it cools.
    steps : tuple of ProtocolStep
        The probe's own step sequence: the protocol with every step that does not drive
        this probe turned into a passive thaw of the same duration (``probes=None``).
    tissue : TissueProperties
        The homogeneous tissue around it.
    body_temperature : float
        degC.
    solver_spacing_mm : float or None
        Core cell size of the precompute run (None: the solver's default for the probe).
    times : tuple of float
        s, snapshot times kept besides the minimum (always the end of every step).
    """

    diameter_mm: float
    active_length_mm: float
    tip_offset_mm: float
    boundary: ProbeBoundary
    steps: tuple[ProtocolStep, ...]
    tissue: TissueProperties
    body_temperature: float
    solver_spacing_mm: float | None
    times: tuple[float, ...]

    def as_json(self) -> str:
        """Canonical JSON text of the key, with the table format, the planner version and the
        solver's source fingerprint (so a changed solver never reuses an old table)."""
        from planner import __version__

        payload = dataclasses.asdict(self)
        payload["table_format"] = TABLE_FORMAT
        payload["planner_version"] = __version__
        payload["solver"] = solver_fingerprint()
        return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=repr)

    def digest(self) -> str:
        """SHA-256 (hex, 32 characters) of :meth:`as_json`: the cache file's name."""
        return hashlib.sha256(self.as_json().encode("utf-8")).hexdigest()[:32]


@functools.lru_cache(maxsize=1)
def solver_fingerprint() -> str:
    """SHA-256 (16 hex characters) of the thermal solver's source files (every module of
    :mod:`planner.thermal` but this one): part of every table's cache key."""
    digest = hashlib.sha256()
    folder = Path(__file__).resolve().parent
    for path in sorted(folder.glob("*.py")):
        if path.name != Path(__file__).name:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass(eq=False)
class ProbeFieldTable:
    """One probe's axisymmetric temperature field, from a single-probe full-solver run.

    Attributes
    ----------
    key : ProbeFieldKey
    min_temperature : (nz, nr) float32 ndarray
        degC, the lowest temperature reached at node ``(z0 + iz * step, ir * step)``.
    temperatures : (n, nz, nr) float32 ndarray
        degC at :attr:`times`.
    times : (n,) ndarray
        s.
    step_mm : float
        Node spacing in ``r`` and ``z``, mm.
    z0_mm : float
        ``z`` of the first row, mm along the shaft from the tip (negative: beyond the tip).
    body_temperature : float
        degC, the value outside the table.
    precompute_s : float
        Wall time of the solver run that made the table, s.
    solver_spacing_mm : float
        Core cell size the solver used, mm.
    solver_method : str
    notes : list of str
        The solver's notes.
    """

    key: ProbeFieldKey
    min_temperature: np.ndarray
    temperatures: np.ndarray
    times: np.ndarray
    step_mm: float
    z0_mm: float
    body_temperature: float
    precompute_s: float
    solver_spacing_mm: float
    solver_method: str = ""
    notes: list[str] = field(default_factory=list)
    derived: dict = field(default_factory=dict, repr=False)

    @property
    def r_max_mm(self) -> float:
        """Radius of the last column, mm (beyond it: body temperature)."""
        return (self.min_temperature.shape[1] - 1) * self.step_mm

    @property
    def z_range_mm(self) -> tuple[float, float]:
        """``z`` of the first and last rows, mm along the shaft from the tip."""
        return self.z0_mm, self.z0_mm + (self.min_temperature.shape[0] - 1) * self.step_mm

    def field(self, time_s: float | None = None) -> np.ndarray:
        """The ``(nz, nr)`` table: the minimum reached (``None``) or the one at ``time_s``."""
        if time_s is None:
            return self.min_temperature
        index = _time_index(self.times, time_s)
        if index < 0:
            raise InputError(
                f"snapshot time {time_s:g} s: not precomputed; available "
                f"{', '.join(f'{t:g}' for t in self.times)} s"
            )
        return self.temperatures[index]

    def cold_extent(self, level: float, *, time_s: float | None = None) -> tuple[float, float, float] | None:
        """``(r_max, z_min, z_max)`` mm of the nodes colder than ``level`` degC; None if none."""
        cold = self.field(time_s) < level
        if not cold.any():
            return None
        rows = np.flatnonzero(cold.any(axis=1))
        cols = np.flatnonzero(cold.any(axis=0))
        return (
            float(cols[-1] * self.step_mm),
            float(self.z0_mm + rows[0] * self.step_mm),
            float(self.z0_mm + rows[-1] * self.step_mm),
        )

    def lookup(self, r_mm, z_mm, *, time_s: float | None = None) -> np.ndarray:
        """Bilinear value (degC) at probe-frame ``r`` (mm from the axis) and ``z`` (mm up the
        shaft from the tip), body temperature outside the table. Plain numpy; for checks."""
        table = self.field(time_s)
        r = np.asarray(r_mm, dtype=float) / self.step_mm
        z = (np.asarray(z_mm, dtype=float) - self.z0_mm) / self.step_mm
        nz, nr = table.shape
        inside = (r >= 0) & (r < nr - 1) & (z >= 0) & (z < nz - 1)
        ir = np.clip(np.floor(r).astype(np.int64), 0, nr - 2)
        iz = np.clip(np.floor(z).astype(np.int64), 0, nz - 2)
        tr, tz = r - ir, z - iz
        value = (1 - tz) * ((1 - tr) * table[iz, ir] + tr * table[iz, ir + 1]) + tz * (
            (1 - tr) * table[iz + 1, ir] + tr * table[iz + 1, ir + 1]
        )
        return np.where(inside, value, self.body_temperature)


def _time_index(times: np.ndarray, time_s: float) -> int:
    matches = np.flatnonzero(np.abs(np.asarray(times) - float(time_s)) <= 1e-6 * max(1.0, abs(time_s)))
    return int(matches[0]) if matches.size else -1


def cache_folder() -> Path:
    """Folder of the on-disk table cache: ``$CRYOPLAN_CACHE_DIR/preview``, else
    ``$XDG_CACHE_HOME/cryoplan/preview``, else ``~/.cache/cryoplan/preview``."""
    explicit = os.environ.get("CRYOPLAN_CACHE_DIR")
    if explicit:
        return Path(explicit) / "preview"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cryoplan" / "preview"


def _save_table(table: ProbeFieldTable, path: Path) -> None:
    """Write ``table`` to ``path`` atomically (temp file + rename). A folder that cannot be
    written costs a recompute next time, nothing more, so failures are ignored."""
    meta = {
        "key": table.key.as_json(),
        "step_mm": table.step_mm,
        "z0_mm": table.z0_mm,
        "body_temperature": table.body_temperature,
        "precompute_s": table.precompute_s,
        "solver_spacing_mm": table.solver_spacing_mm,
        "solver_method": table.solver_method,
        "notes": table.notes,
    }
    temp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=path.parent)
        with os.fdopen(handle, "wb") as stream:
            np.savez(
                stream,
                min_temperature=table.min_temperature,
                temperatures=table.temperatures,
                times=table.times,
                meta=np.array(json.dumps(meta)),
            )
        os.replace(temp, path)
    except OSError:
        if temp is not None and os.path.exists(temp):
            os.unlink(temp)


def _load_table(key: ProbeFieldKey, path: Path) -> ProbeFieldTable | None:
    """The table stored at ``path`` if it is readable and was made for ``key``, else None."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("key") != key.as_json():
                return None
            return ProbeFieldTable(
                key=key,
                min_temperature=np.asarray(data["min_temperature"], dtype=np.float32),
                temperatures=np.asarray(data["temperatures"], dtype=np.float32),
                times=np.asarray(data["times"], dtype=float),
                step_mm=float(meta["step_mm"]),
                z0_mm=float(meta["z0_mm"]),
                body_temperature=float(meta["body_temperature"]),
                precompute_s=float(meta["precompute_s"]),
                solver_spacing_mm=float(meta["solver_spacing_mm"]),
                solver_method=str(meta.get("solver_method", "")),
                notes=list(meta.get("notes", [])),
            )
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None


def _solve_table(
    key: ProbeFieldKey,
    *,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> ProbeFieldTable:
    """Run the full solver for ``key``'s probe alone and reduce its fields to ``T(r, z)``."""
    from planner.thermal.simulation import simulate

    # Tip at the world origin, shaft up +z, long enough to leave the solver's box (an
    # insulated shaft all the way out, as in the body).
    shaft = key.tip_offset_mm + key.active_length_mm + 500.0
    probe = PlacedProbe(
        name="preview",
        tip=(0.0, 0.0, 0.0),
        entry=(0.0, 0.0, shaft),
        diameter_mm=key.diameter_mm,
        active_length_mm=key.active_length_mm,
        boundary=key.boundary,
        tip_offset_mm=key.tip_offset_mm,
    )
    started = time.perf_counter()
    result = simulate(
        [probe],
        list(key.steps),
        tissue=1,  # any label: the block is homogeneous
        properties={1: key.tissue},
        spacing_mm=key.solver_spacing_mm,
        snapshot_times=key.times,
        body_temperature=key.body_temperature,
        progress=progress,
        cancel=cancel,
    )
    elapsed = time.perf_counter() - started
    return table_from_result(result, key, precompute_s=elapsed)


def table_from_result(result: "ThermalResult", key: ProbeFieldKey, *, precompute_s: float = 0.0) -> ProbeFieldTable:
    """Reduce a single-probe :class:`ThermalResult` (probe tip at the world origin, shaft
    along world +z) to its azimuthally averaged ``T(r, z)`` table.

    The table's nodes are half the solver's core cell apart and cover every cell that got
    more than :data:`TRIM_TOLERANCE_C` below body temperature, plus two nodes.
    """
    from scipy import ndimage

    grid = result.grid
    body = key.body_temperature
    step = 0.5 * grid.spacing
    # Where anything happened: the cells that got colder than body temperature.
    cold = np.asarray(result.min_temperature) < body - TRIM_TOLERANCE_C
    if not cold.any():
        r_hi, z_lo, z_hi = 2 * step, -2 * step, 2 * step
    else:
        k, j, i = np.nonzero(cold)
        local = np.stack([grid.centres(0)[i], grid.centres(1)[j], grid.centres(2)[k]], axis=-1)
        world = grid.local_to_world(local)
        r_hi = float(np.hypot(world[:, 0], world[:, 1]).max())
        z_lo, z_hi = float(world[:, 2].min()), float(world[:, 2].max())
    margin = 2 * grid.spacing + 2 * step
    n_r = int(math.ceil((r_hi + margin) / step)) + 1
    z0 = math.floor((z_lo - margin) / step) * step
    n_z = int(math.ceil((z_hi + margin - z0) / step)) + 1
    radii = np.arange(n_r) * step
    heights = z0 + np.arange(n_z) * step
    angles = 2 * np.pi * (np.arange(AZIMUTHS) + 0.5) / AZIMUTHS
    zz, rr, aa = np.meshgrid(heights, radii, angles, indexing="ij")
    world = np.stack([rr * np.cos(aa), rr * np.sin(aa), zz], axis=-1).reshape(-1, 3)
    local = grid.world_to_local(world)
    coords = [np.interp(local[:, axis], grid.centres(axis), np.arange(grid.centres(axis).size)) for axis in (2, 1, 0)]
    low, high = grid.bounds_local()
    outside = np.any((local < low) | (local > high), axis=1)

    def reduce(values: np.ndarray) -> np.ndarray:
        sampled = ndimage.map_coordinates(np.asarray(values, dtype=np.float32), coords, order=1, mode="nearest")
        sampled[outside] = body
        table = sampled.reshape(n_z, n_r, AZIMUTHS).mean(axis=2)
        # The outermost ring and rows are body temperature by construction of the margin;
        # pin them so the table meets the "outside" value without a step.
        table[:, -1] = body
        table[0, :] = body
        table[-1, :] = body
        return table.astype(np.float32)

    times = np.asarray(result.snapshot_times, dtype=float)
    temperatures = np.stack([reduce(result.temperatures[i]) for i in range(times.size)]) if times.size else (
        np.zeros((0, n_z, n_r), dtype=np.float32)
    )
    return ProbeFieldTable(
        key=key,
        min_temperature=reduce(result.min_temperature),
        temperatures=temperatures,
        times=times,
        step_mm=float(step),
        z0_mm=float(z0),
        body_temperature=float(body),
        precompute_s=float(precompute_s),
        solver_spacing_mm=float(grid.spacing),
        solver_method=str(result.method),
        notes=list(result.notes),
    )


# Tables held in memory, most recently used last (a few hundred kB each).
MEMORY_TABLES = 64
_MEMORY: OrderedDict[ProbeFieldKey, ProbeFieldTable] = OrderedDict()
_MEMORY_LOCK = threading.Lock()


def _get_table(key: ProbeFieldKey, folder: Path, use_disk: bool, progress, cancel) -> ProbeFieldTable:
    """``key``'s table from memory, else from ``folder``, else from a solver run (then stored)."""
    with _MEMORY_LOCK:
        if key in _MEMORY:
            _MEMORY.move_to_end(key)
            return _MEMORY[key]
    path = folder / f"{key.digest()}.npz"
    table = _load_table(key, path) if use_disk else None
    if table is None:
        table = _solve_table(key, progress=progress, cancel=cancel)
        if use_disk:
            _save_table(table, path)
    with _MEMORY_LOCK:
        _MEMORY[key] = table
        while len(_MEMORY) > MEMORY_TABLES:
            _MEMORY.popitem(last=False)
    return table


def clear_preview_cache(*, disk: bool = False, cache_dir=None) -> None:
    """Forget the tables held in memory; with ``disk=True`` also delete the ``.npz`` files
    in the cache folder (``cache_dir`` or :func:`cache_folder`)."""
    with _MEMORY_LOCK:
        _MEMORY.clear()
    if disk:
        folder = Path(cache_dir) if cache_dir is not None else cache_folder()
        if folder.is_dir():
            for path in folder.glob("*.npz"):
                try:
                    path.unlink()
                except OSError:
                    pass


def probe_steps(protocol: Sequence[ProtocolStep], probe_index: int) -> tuple[ProtocolStep, ...]:
    """The step sequence probe ``probe_index`` follows: steps that do not drive it become
    passive thaws of the same duration; the thaw temperature is kept only for active thaws."""
    steps = []
    for step in protocol:
        driven = step.probes is None or probe_index in step.probes
        kind = step.kind if driven else "passive_thaw"
        thaw = step.thaw_temperature if kind == "active_thaw" else 20.0
        steps.append(ProtocolStep(kind, float(step.duration), None, float(thaw)))
    return tuple(steps)


def probe_field_table(
    probe: PlacedProbe,
    steps: Sequence[ProtocolStep],
    *,
    tissue: TissueProperties,
    body_temperature: float = 37.0,
    solver_spacing_mm: float | None = None,
    snapshot_times: Sequence[float] = (),
    cache_dir=None,
    use_disk_cache: bool = True,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> ProbeFieldTable:
    """The precomputed ``T(r, z)`` field of ``probe``'s model running ``steps`` alone in ``tissue``.

    Only the probe's model matters (diameter, active length, tip offset, boundary), not
    where it is. The first call for a description runs the full solver (seconds to
    minutes); later calls return the table from memory or from the disk cache.

    Parameters
    ----------
    probe : PlacedProbe
    steps : sequence of ProtocolStep
        The steps this probe follows (see :func:`probe_steps`); ``probes`` must be None.
    tissue : TissueProperties
        Homogeneous tissue around the probe.
    body_temperature : float
        degC.
    solver_spacing_mm : float, optional
        Core cell size of the solver run, mm (default: the solver's choice for the probe).
    snapshot_times : sequence of float
        s, extra times to keep besides the end of every step.
    cache_dir : str or Path, optional
        Disk cache folder (default :func:`cache_folder`).
    use_disk_cache : bool
        Read and write the disk cache.
    progress, cancel : callable, optional
        Passed to the solver when it has to run.

    Returns
    -------
    ProbeFieldTable
    """
    steps = tuple(steps)
    validate_protocol(steps, 1)
    if any(step.probes is not None for step in steps):
        raise InputError("steps: a single probe's steps must not name probes (use probe_steps())")
    if not isinstance(tissue, TissueProperties):
        raise InputError(f"tissue: must be TissueProperties, got {type(tissue).__name__}")
    if not math.isfinite(body_temperature):
        raise InputError("body_temperature must be finite")
    if solver_spacing_mm is not None and not (solver_spacing_mm > 0 and math.isfinite(solver_spacing_mm)):
        raise InputError(f"solver_spacing_mm must be > 0 mm, got {solver_spacing_mm!r}")
    total = sum(step.duration for step in steps)
    ends = np.cumsum([step.duration for step in steps])
    extra = []
    for t in snapshot_times:
        if not (isinstance(t, (int, float)) and math.isfinite(t) and 0 < t <= total + 1e-9):
            raise InputError(f"snapshot_times: {t!r} is not a time within the protocol (0 to {total:g} s)")
        extra.append(float(t))
    times = tuple(sorted({round(float(t), 9) for t in list(ends) + extra}))
    key = ProbeFieldKey(
        diameter_mm=float(probe.diameter_mm),
        active_length_mm=float(probe.active_length_mm),
        tip_offset_mm=float(probe.tip_offset_mm),
        boundary=probe.boundary,
        steps=steps,
        tissue=tissue,
        body_temperature=float(body_temperature),
        solver_spacing_mm=None if solver_spacing_mm is None else float(solver_spacing_mm),
        times=times,
    )
    folder = Path(cache_dir) if cache_dir is not None else cache_folder()
    return _get_table(key, folder, bool(use_disk_cache), progress, cancel)


# ============================================================================ lookups
# The kernels run on one thread: a few milliseconds per probe, and on a 2-core machine
# that also serves the browser a thread team costs more than it saves (measured).
@numba.njit(cache=True, fastmath=True)
def _bilinear(table, step, z0, dx, dy, dz, ax, ay, az, outside):
    """The table's value at offset (dx, dy, dz) mm from the tip of a probe along (ax, ay, az);
    ``outside`` beyond the table."""
    # Probe frame: z along the shaft from the tip, r from the axis. Cheap rejections first:
    # most lattice voxels of a far probe fall outside its table.
    nz, nr = table.shape
    inverse = 1.0 / step
    fz = (dx * ax + dy * ay + dz * az - z0) * inverse
    if fz < 0.0 or fz >= nz - 1:
        return outside
    z = fz * step + z0
    r2 = (dx * dx + dy * dy + dz * dz - z * z) * (inverse * inverse)
    if r2 >= (nr - 1) * (nr - 1):
        return outside
    fr = math.sqrt(r2) if r2 > 0.0 else 0.0
    ir = int(fr)
    iz = int(fz)
    tr = fr - ir
    tz = fz - iz
    low = table[iz, ir] + tr * (table[iz, ir + 1] - table[iz, ir])
    high = table[iz + 1, ir] + tr * (table[iz + 1, ir + 1] - table[iz + 1, ir])
    return low + tz * (high - low)


@numba.njit(cache=True, inline="always")
def _row_start(origin, steps, tip, j, k):
    """Offset (mm) from the probe tip of voxel (i = 0, j, k) of a lattice with voxel ``steps``
    (3, 3: columns i, j, k) from ``origin``."""
    return (origin[0] + j * steps[0, 1] + k * steps[0, 2] - tip[0],
            origin[1] + j * steps[1, 1] + k * steps[1, 2] - tip[1],
            origin[2] + j * steps[2, 1] + k * steps[2, 2] - tip[2])


@numba.njit(cache=True, fastmath=True)
def _lattice_min(out, k0, k1, j0, j1, i0, i1, origin, steps, tip, axis, table, step, z0):
    """out[k, j, i] = min(out, table at the voxel centre origin + i ex + j ey + k ez) over the sub-box."""
    ax, ay, az = axis[0], axis[1], axis[2]
    for k in range(k0, k1):
        for j in range(j0, j1):
            bx, by, bz = _row_start(origin, steps, tip, j, k)
            for i in range(i0, i1):
                value = _bilinear(table, step, z0, bx + i * steps[0, 0], by + i * steps[1, 0],
                                  bz + i * steps[2, 0], ax, ay, az, np.inf)
                if value < out[k, j, i]:
                    out[k, j, i] = value


@numba.njit(cache=True, fastmath=True)
def _lattice_sum(total, largest, owner, index, k0, k1, j0, j1, i0, i1, origin, steps, tip, axis, table, step, z0):
    """total += table (a deficit, 0 outside) over the sub-box; ``owner`` = ``index`` where this
    probe's deficit is the largest so far."""
    ax, ay, az = axis[0], axis[1], axis[2]
    for k in range(k0, k1):
        for j in range(j0, j1):
            bx, by, bz = _row_start(origin, steps, tip, j, k)
            for i in range(i0, i1):
                value = _bilinear(table, step, z0, bx + i * steps[0, 0], by + i * steps[1, 0],
                                  bz + i * steps[2, 0], ax, ay, az, 0.0)
                total[k, j, i] += value
                if value > largest[k, j, i]:
                    largest[k, j, i] = value
                    owner[k, j, i] = index


@numba.njit(cache=True, fastmath=True)
def _lattice_add(total, k0, k1, j0, j1, i0, i1, origin, steps, tip, axis, table, step, z0):
    """total += table (a deficit, 0 outside) over the sub-box (all probes in one tissue)."""
    ax, ay, az = axis[0], axis[1], axis[2]
    for k in range(k0, k1):
        for j in range(j0, j1):
            bx, by, bz = _row_start(origin, steps, tip, j, k)
            for i in range(i0, i1):
                total[k, j, i] += _bilinear(table, step, z0, bx + i * steps[0, 0], by + i * steps[1, 0],
                                            bz + i * steps[2, 0], ax, ay, az, 0.0)


@numba.njit(cache=True, fastmath=True)
def _points_min(out, points, tip, axis, table, step, z0):
    """out[n] = min(out[n], table at world point n)."""
    ax, ay, az = axis[0], axis[1], axis[2]
    for n in range(points.shape[0]):
        value = _bilinear(table, step, z0, points[n, 0] - tip[0], points[n, 1] - tip[1], points[n, 2] - tip[2],
                          ax, ay, az, np.inf)
        if value < out[n]:
            out[n] = value


@numba.njit(cache=True, fastmath=True)
def _points_sum(total, largest, owner, index, points, tip, axis, table, step, z0):
    """:func:`_lattice_sum` at world points."""
    ax, ay, az = axis[0], axis[1], axis[2]
    for n in range(points.shape[0]):
        value = _bilinear(table, step, z0, points[n, 0] - tip[0], points[n, 1] - tip[1], points[n, 2] - tip[2],
                          ax, ay, az, 0.0)
        total[n] += value
        if value > largest[n]:
            largest[n] = value
            owner[n] = index


@numba.njit(cache=True, fastmath=True)
def _invert(total, owner, first, spacing, temperatures, out):
    """out[n] = the temperature whose deficit is total[n], from probe owner[n]'s tissue curve
    (``temperatures[o]`` sampled at deficits ``first[o] + m * spacing[o]``; clamped at its ends)."""
    last = temperatures.shape[1] - 1
    for n in range(total.shape[0]):
        o = owner[n]
        f = (total[n] - first[o]) / spacing[o]
        if f <= 0.0:
            out[n] = temperatures[o, 0]
        elif f >= last:
            out[n] = temperatures[o, last]
        else:
            m = int(f)
            t = f - m
            out[n] = (1.0 - t) * temperatures[o, m] + t * temperatures[o, m + 1]


# ============================================================================ combining
COMBINE_MODES = ("union", "kirchhoff")


@functools.lru_cache(maxsize=32)
def _kirchhoff_curve(tissue: TissueProperties, body_temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Temperatures (ascending, degC) and their Kirchhoff deficit ``int_T^body k(T') dT'`` (W/m,
    decreasing; 0 at body temperature, negative above it), sampled every 0.01 degC."""
    temperatures = np.arange(-250.0, body_temperature + 60.0, 0.01)
    conductivity = np.asarray(tissue.conductivity(temperatures), dtype=float)
    integral = np.concatenate([[0.0], np.cumsum(0.5 * (conductivity[1:] + conductivity[:-1]) * 0.01)])
    deficit = np.interp(body_temperature, temperatures, integral) - integral
    return temperatures, deficit


def _deficit_table(table: ProbeFieldTable, time_s: float | None) -> np.ndarray:
    """The table as Kirchhoff deficits (W/m), cached on the table."""
    cache_key = ("deficit", time_s)
    if cache_key not in table.derived:
        temperatures, deficit = _kirchhoff_curve(table.key.tissue, table.body_temperature)
        values = np.interp(table.field(time_s), temperatures, deficit)
        table.derived[cache_key] = np.ascontiguousarray(values, dtype=np.float32)
    return table.derived[cache_key]


def _inverse_curves(tables, time_s: float | None, samples: int = 8192):
    """Per table, deficit -> temperature sampled uniformly: (first, spacing, temperatures (n, samples)).

    Clamped at the coldest value any table reaches (no superposition is colder than the
    coldest probe) and at the warmest."""
    coldest = min(float(t.field(time_s).min()) for t in tables)
    warmest = max(max(float(t.field(time_s).max()) for t in tables), tables[0].body_temperature) + 1.0
    first, spacing, curves = [], [], []
    for table in tables:
        temperatures, deficit = _kirchhoff_curve(table.key.tissue, table.body_temperature)
        low = float(np.interp(warmest, temperatures, deficit))
        high = float(np.interp(coldest, temperatures, deficit))
        axis = np.linspace(low, high, samples)
        curves.append(np.interp(axis, deficit[::-1], temperatures[::-1]))
        first.append(low)
        spacing.append((high - low) / (samples - 1))
    return np.array(first), np.array(spacing), np.ascontiguousarray(curves, dtype=np.float32)


def _combine_at_points(prepared: "_Prepared", points: np.ndarray, time_s: float | None, combine: str) -> np.ndarray:
    """Combined field at world points ``(n, 3)`` (float64, contiguous): ``(n,)`` float32 degC."""
    active = [(probe, table) for probe, table in zip(prepared.probes, prepared.tables) if table is not None]
    n = points.shape[0]
    if combine == "union":
        out = np.full(n, prepared.body_temperature, dtype=np.float32)
        for probe, table in active:
            _points_min(out, points, np.asarray(probe.tip, dtype=np.float64), probe.axis.astype(np.float64),
                        np.ascontiguousarray(table.field(time_s), dtype=np.float32), float(table.step_mm),
                        float(table.z0_mm))
        return out
    total = np.zeros(n, dtype=np.float32)
    largest = np.zeros(n, dtype=np.float32)
    owner = np.zeros(n, dtype=np.int32)
    for index, (probe, table) in enumerate(active):
        _points_sum(total, largest, owner, index, points, np.asarray(probe.tip, dtype=np.float64),
                    probe.axis.astype(np.float64), _deficit_table(table, time_s), float(table.step_mm),
                    float(table.z0_mm))
    out = np.empty(n, dtype=np.float32)
    _invert(total, owner, *_inverse_curves([t for _, t in active], time_s), out)
    return out


# ============================================================================ placements
@dataclass(frozen=True)
class _Prepared:
    probes: tuple[PlacedProbe, ...]
    tables: tuple[ProbeFieldTable | None, ...]  # None: a probe no step ever freezes
    body_temperature: float
    precompute_s: float
    notes: tuple[str, ...]


def _tissue_per_probe(
    probes: Sequence[PlacedProbe],
    *,
    properties: Mapping[int, TissueProperties],
    tissue: int | None,
    tissue_labels: Volume | None,
) -> list[TissueProperties]:
    if not properties:
        raise InputError("properties: need at least one tissue entry")
    for label, props in properties.items():
        if not isinstance(props, TissueProperties):
            raise InputError(f"properties[{label}]: must be TissueProperties, got {type(props).__name__}")
    if tissue is not None:
        if tissue not in properties:
            raise InputError(f"tissue: no properties for tissue label {tissue}")
        return [properties[tissue]] * len(probes)
    if tissue_labels is None:
        if len(properties) == 1:
            return [next(iter(properties.values()))] * len(probes)
        raise InputError("tissue: give a homogeneous tissue label (tissue) or a label volume (tissue_labels)")
    chosen = []
    for probe in probes:
        start, end = probe.active_segment()
        middle = 0.5 * (start + end)
        if not tissue_labels.contains(middle, margin_voxels=0.5):
            raise InputError(f"probe {probe.name!r}: active segment lies outside the tissue label volume")
        upper = np.array(tissue_labels.shape_xyz) - 1
        ijk = np.clip(np.rint(tissue_labels.world_to_index(middle)).astype(np.int64), 0, upper)
        label = int(np.asarray(tissue_labels.array)[ijk[2], ijk[1], ijk[0]])
        if label not in properties:
            raise InputError(
                f"probe {probe.name!r}: the tissue at its active segment (label {label}) has no entry in properties"
            )
        chosen.append(properties[label])
    return chosen


def _prepare(
    probes,
    protocol,
    *,
    properties,
    tissue,
    tissue_labels,
    body_temperature,
    solver_spacing_mm,
    snapshot_times,
    cache_dir,
    use_disk_cache,
    progress,
    cancel,
) -> _Prepared:
    probes = placed_probes(probes)
    protocol = tuple(protocol)
    validate_protocol(protocol, len(probes))
    tissues = _tissue_per_probe(probes, properties=properties, tissue=tissue, tissue_labels=tissue_labels)
    per_probe = [probe_steps(protocol, i) for i in range(len(probes))]
    frozen = [any(step.kind == "freeze" for step in steps) for steps in per_probe]
    if not any(frozen):
        raise InputError("protocol: no freeze step drives any probe; there is no ice ball to preview")
    tables: list[ProbeFieldTable | None] = []
    started = time.perf_counter()
    # Count the distinct descriptions still to compute, for one progress bar over all.
    done = [0]
    total = max(1, len({(p.diameter_mm, p.active_length_mm, p.tip_offset_mm, p.boundary, s, t)
                        for p, s, t, f in zip(probes, per_probe, tissues, frozen) if f}))

    def scaled(fraction: float) -> None:
        if progress is not None:
            progress(min(1.0, (done[0] + fraction) / total))

    notes: list[str] = []
    for probe, steps, props, is_frozen in zip(probes, per_probe, tissues, frozen):
        if not is_frozen:
            tables.append(None)
            notes.append(f"probe {probe.name!r}: no freeze step drives it; it adds no ice")
            continue
        table = probe_field_table(
            probe,
            steps,
            tissue=props,
            body_temperature=body_temperature,
            solver_spacing_mm=solver_spacing_mm,
            snapshot_times=snapshot_times,
            cache_dir=cache_dir,
            use_disk_cache=use_disk_cache,
            progress=scaled if progress is not None else None,
            cancel=cancel,
        )
        done[0] += 1
        tables.append(table)
    return _Prepared(probes, tuple(tables), float(body_temperature), time.perf_counter() - started, tuple(notes))


def preview_at_points(
    probes: Sequence[PlacedProbe],
    protocol: Sequence[ProtocolStep],
    points,
    *,
    properties: Mapping[int, TissueProperties],
    tissue: int | None = None,
    tissue_labels: Volume | None = None,
    time_s: float | None = None,
    combine: str = "union",
    body_temperature: float = 37.0,
    solver_spacing_mm: float | None = None,
    cache_dir=None,
    use_disk_cache: bool = True,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """APPROXIMATE temperature at world points from each probe's precomputed single-probe
    field (see the module notes and :data:`CAVEATS`). Fast: about a microsecond per point
    and probe once the tables are cached.

    Parameters
    ----------
    probes : sequence of PlacedProbe
        World LPS mm, any orientation.
    protocol : sequence of ProtocolStep
    points : (..., 3) array_like
        World LPS mm.
    properties : mapping int -> TissueProperties
    tissue : int, optional
        Homogeneous tissue label for every probe. Without it, each probe takes the label of
        ``tissue_labels`` at the middle of its active segment (or the single entry of
        ``properties``).
    tissue_labels : Volume, optional
    time_s : float, optional
        None: the lowest temperature reached over the protocol; else the temperature at this
        time (s; the end of a step, or a time precomputed through :func:`preview_ice_ball`'s
        ``snapshot_times``; another time costs a new precompute).
    combine : {"union", "kirchhoff"}
        How the probes' fields combine; see :func:`preview_ice_ball`.
    body_temperature : float
        degC.
    solver_spacing_mm : float, optional
        Core cell size of the precompute runs, mm.
    cache_dir, use_disk_cache, progress, cancel
        See :func:`probe_field_table`.

    Returns
    -------
    (...) float32 ndarray
        degC, the shape of ``points`` without its last axis.
    """
    points = np.asarray(points, dtype=float)
    if points.shape[-1:] != (3,):
        raise InputError(f"points: must have shape (..., 3) in world mm, got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise InputError("points: must be finite (world mm)")
    _check_combine(combine)
    extra = () if time_s is None else (float(time_s),)
    prepared = _prepare(
        probes, protocol, properties=properties, tissue=tissue, tissue_labels=tissue_labels,
        body_temperature=body_temperature, solver_spacing_mm=solver_spacing_mm, snapshot_times=extra,
        cache_dir=cache_dir, use_disk_cache=use_disk_cache, progress=progress, cancel=cancel,
    )
    flat = np.ascontiguousarray(points.reshape(-1, 3), dtype=np.float64)
    return _combine_at_points(prepared, flat, time_s, combine).reshape(points.shape[:-1])


def _check_combine(combine: str) -> None:
    if combine not in COMBINE_MODES:
        raise InputError(f"combine must be one of {', '.join(COMBINE_MODES)}; got {combine!r}")


@dataclass(eq=False)
class PreviewResult:
    """An APPROXIMATE ice ball on a uniform lattice around the probes (see :data:`CAVEATS`).

    Shaped like :class:`~planner.thermal.result.ThermalResult` where it can be (``grid``,
    ``min_temperature``, ``snapshot_times``, ``temperatures``, ``isotherm_*``), so views
    written for full results draw a preview too; :attr:`approximate` and :attr:`caveat`
    say what it is.

    Attributes
    ----------
    grid : ThermalGrid
        The uniform lattice: cell centres are the voxels (``spacing_mm`` apart).
    affine : (4, 4) ndarray
        ``(i, j, k, 1)`` -> world LPS mm of the voxel centres.
    min_temperature : (nz, ny, nx) float32 ndarray
        degC, the approximate lowest temperature reached (body temperature where no probe's
        table reaches).
    snapshot_times : (n,) ndarray
        s, the times of :attr:`temperatures` (empty unless asked for).
    temperatures : (n, nz, ny, nx) float32 ndarray
        degC, approximate temperature at ``snapshot_times``.
    probe_axes : (p, 2, 3) ndarray
        World LPS mm active-segment end points of each probe.
    levels : tuple of float
        degC isotherms the lattice was sized for and the summary reports.
    combine : {"union", "kirchhoff"}
        How the single-probe fields were combined (see :func:`preview_ice_ball`).
    approximate : bool
        Always True: this is not a full-solver result.
    caveat : str
        What the approximation leaves out and its measured error (:data:`CAVEATS`).
    run_time_s : float
        Wall time of this preview excluding any precompute, s.
    precompute_s : float
        Wall time spent getting the probes' tables in this call, s (near 0 when cached;
        a full single-probe solve per missing table otherwise).
    tables : tuple of ProbeFieldTable or None
        The table each probe used (None for a probe no step freezes).
    notes : list of str
    """

    grid: ThermalGrid
    affine: np.ndarray
    min_temperature: np.ndarray
    snapshot_times: np.ndarray
    temperatures: np.ndarray
    probe_axes: np.ndarray
    levels: tuple[float, ...] = DEFAULT_LEVELS
    combine: str = "union"
    approximate: bool = True
    caveat: str = ""
    run_time_s: float = 0.0
    precompute_s: float = 0.0
    tables: tuple = ()
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.caveat:
            self.caveat = CAVEATS.get(self.combine, CAVEATS["union"])

    @property
    def shape(self) -> tuple[int, int, int]:
        """Voxels ``(nz, ny, nx)``."""
        return tuple(self.min_temperature.shape)

    @property
    def spacing_mm(self) -> float:
        """Voxel size, mm."""
        return float(self.grid.spacing)

    # ------------------------------------------------------------ volumes
    def _values(self, snapshot) -> np.ndarray:
        if isinstance(snapshot, str):
            if snapshot != "min":
                raise InputError(f"snapshot: an index or 'min', got {snapshot!r}")
            return self.min_temperature
        return self.temperatures[snapshot]

    def to_volume(self, snapshot: int | str = "min") -> Volume:
        """The field as a :class:`Volume` (degC, world LPS), the caveat in its metadata."""
        name = "minimum temperature" if snapshot == "min" else f"temperature at {self.snapshot_times[snapshot]:g} s"
        return Volume(
            np.asarray(self._values(snapshot), dtype=np.float32),
            self.affine.copy(),
            modality="OT",
            units="degC",
            metadata={"quantity": f"{name} (approximate preview)", "approximate": True, "caveat": self.caveat},
        )

    def min_temperature_volume(self, **_ignored) -> Volume:
        """:meth:`to_volume` of the minimum temperature (named as on ThermalResult)."""
        return self.to_volume("min")

    def temperature_volume(self, index: int = -1, **_ignored) -> Volume:
        """:meth:`to_volume` of snapshot ``index`` (named as on ThermalResult)."""
        return self.to_volume(index)

    # ------------------------------------------------------------ isotherms
    def isotherm_volume_ml(self, level: float, snapshot: int | str = "min") -> float:
        """Volume (ml) of the voxels colder than ``level`` degC."""
        voxel_ml = self.spacing_mm**3 * 1e-3
        return float(np.count_nonzero(self._values(snapshot) < level) * voxel_ml)

    def isotherm_mesh(self, level: float, snapshot: int | str = "min") -> tuple[np.ndarray, np.ndarray]:
        """Marching-cubes surface at ``level`` degC: vertices (n, 3) world LPS mm and triangles
        (m, 3); empty arrays when nothing is colder. Only the voxels around the cold region
        are processed (fast enough to redraw on every probe move)."""
        from skimage.measure import marching_cubes

        values = np.asarray(self._values(snapshot), dtype=np.float32)
        cold = values < level
        if not cold.any() or cold.all():
            return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
        lo = [int(np.flatnonzero(cold.any(axis=tuple(a for a in range(3) if a != axis)))[0]) for axis in range(3)]
        hi = [int(np.flatnonzero(cold.any(axis=tuple(a for a in range(3) if a != axis)))[-1]) for axis in range(3)]
        lo = [max(0, v - 1) for v in lo]
        block = values[lo[0] : hi[0] + 2, lo[1] : hi[1] + 2, lo[2] : hi[2] + 2]
        # Pad with a warm value so a surface touching the lattice edge is closed.
        padded = np.pad(block, 1, mode="constant", constant_values=max(float(values.max()), level + 1.0))
        verts, faces, _, _ = marching_cubes(padded, level=level)
        kji = verts - 1.0 + np.array(lo, dtype=float)
        ijk1 = np.column_stack([kji[:, 2], kji[:, 1], kji[:, 0], np.ones(len(kji))])
        return ijk1 @ self.affine[:3].T, faces.astype(np.int64)

    def isotherm_surface(self, level: float, snapshot: int | str = "min") -> "pyvista.PolyData":
        """The ``level`` degC isotherm as a ``pyvista.PolyData`` in world LPS mm (pyvista loaded here)."""
        import pyvista as pv

        verts, faces = self.isotherm_mesh(level, snapshot)
        if len(faces) == 0:
            return pv.PolyData()
        cells = np.hstack([np.full((len(faces), 1), 3, dtype=np.int64), faces]).ravel()
        return pv.PolyData(verts, cells)

    def main_axis(self) -> np.ndarray:
        """Unit world vector: the mean probe direction (signs aligned with the first probe)."""
        return mean_probe_axis(self.probe_axes)

    def isotherm_extent_mm(self, level: float, snapshot: int | str = "min") -> dict[str, float]:
        """Size of the ``level`` degC isotherm, mm, defined as on ThermalResult: ``along`` the
        mean probe axis, ``across`` it (largest extent perpendicular) and ``max_diameter``
        (largest distance between two surface points); zeros when there is no surface."""
        verts, _ = self.isotherm_mesh(level, snapshot)
        return surface_extent_mm(verts, self.main_axis())

    def summary(self, levels: Sequence[float] | None = None, *, extents: bool = True) -> dict[str, Any]:
        """JSON-ready facts, flagged approximate: per level the volume (ml) of the coldest
        reached and, with ``extents``, its sizes (mm; marching cubes, slower)."""
        levels = self.levels if levels is None else tuple(levels)
        isotherms = []
        for level in levels:
            entry = {"level_c": float(level), "volume_ml": self.isotherm_volume_ml(level)}
            if extents:
                extent = self.isotherm_extent_mm(level)
                entry.update(along_mm=extent["along"], across_mm=extent["across"],
                             max_diameter_mm=extent["max_diameter"])
            isotherms.append(entry)
        nz, ny, nx = self.shape
        return {
            "approximate": True,
            "caveat": self.caveat,
            "method": f"preview: precomputed single-probe fields combined by {self.combine}",
            "grid_cells": [nx, ny, nz],
            "spacing_mm": self.spacing_mm,
            "run_time_s": float(self.run_time_s),
            "precompute_s": float(self.precompute_s),
            "min_temperature_degC": float(self.min_temperature.min()),
            "coldest_reached": isotherms,
            "notes": list(self.notes),
        }

    def __repr__(self) -> str:
        nz, ny, nx = self.shape
        return (
            f"PreviewResult(APPROXIMATE, {nx}x{ny}x{nz} voxels at {self.spacing_mm:g} mm, "
            f"min {float(self.min_temperature.min()):.1f} degC, {len(self.probe_axes)} probes)"
        )


def preview_ice_ball(
    probes: Sequence[PlacedProbe],
    protocol: Sequence[ProtocolStep],
    *,
    properties: Mapping[int, TissueProperties],
    tissue: int | None = None,
    tissue_labels: Volume | None = None,
    spacing_mm: float = 0.5,
    levels: Sequence[float] = DEFAULT_LEVELS,
    cover_level: float | None = None,
    margin_mm: float = 2.0,
    direction=None,
    snapshot_times: Sequence[float] = (),
    combine: str = "union",
    body_temperature: float = 37.0,
    solver_spacing_mm: float | None = None,
    cache_dir=None,
    use_disk_cache: bool = True,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> PreviewResult:
    """APPROXIMATE ice ball of ``probes`` on a lattice, combined from precomputed single-probe
    fields. For interactive use; not the full solver (see :data:`CAVEATS`).

    Parameters
    ----------
    probes : sequence of PlacedProbe
        World LPS mm, any orientation.
    protocol : sequence of ProtocolStep
        As for :func:`planner.thermal.simulate`; steps that do not drive a probe leave it passive.
    properties : mapping int -> TissueProperties
    tissue : int, optional
        Homogeneous tissue label for every probe; without it each probe takes the label of
        ``tissue_labels`` at the middle of its active segment (or the single entry of
        ``properties``).
    tissue_labels : Volume, optional
    spacing_mm : float
        Lattice voxel size, mm.
    levels : sequence of float
        degC isotherms of interest (summary; the warmest sets the default ``cover_level``).
    cover_level : float, optional
        degC; the lattice covers every place any probe's field gets colder than this, plus
        ``margin_mm``. Default: the warmest of ``levels``.
    margin_mm : float
        mm added around the covered region.
    direction : (3, 3) array_like, optional
        Columns: the lattice axes in world (orthonormal); default the world LPS axes (pass a
        volume's direction to match its slices). Voxel centres sit on multiples of
        ``spacing_mm`` along these axes, so moving a probe never shifts the lattice.
    snapshot_times : sequence of float
        s; also return the temperature at these times (each adds a lookup pass; a time that
        is not the end of a step costs a new precompute).
    combine : {"union", "kirchhoff"}
        ``"union"``: the minimum over probes, i.e. the union of the single-probe ice balls
        (no interaction; underestimates the cold isotherms of close probes, conservative for
        "is the target cold enough"). ``"kirchhoff"``: the probes' Kirchhoff deficits
        ``int_T^body k dT`` are added and turned back into a temperature, never colder than
        the coldest probe (steady conduction with temperature-dependent conductivity is
        linear in that variable); much closer to the full solver for close probes, but it
        can overestimate the 0 degC volume (benchmarks/PREVIEW.md).
    body_temperature : float
        degC.
    solver_spacing_mm : float, optional
        Core cell size of the precompute runs, mm (default: the solver's choice per probe).
    cache_dir, use_disk_cache, progress, cancel
        See :func:`probe_field_table`.

    Returns
    -------
    PreviewResult
        ``approximate=True`` with its ``caveat``.

    Raises
    ------
    InputError
        No probes, an empty protocol or one that freezes no probe, bad spacing or direction,
        missing tissue properties, a lattice too large for memory.
    """
    if not (isinstance(spacing_mm, (int, float)) and math.isfinite(spacing_mm) and spacing_mm > 0):
        raise InputError(f"spacing_mm must be > 0 mm, got {spacing_mm!r}")
    if not (isinstance(margin_mm, (int, float)) and math.isfinite(margin_mm) and margin_mm >= 0):
        raise InputError(f"margin_mm must be >= 0 mm, got {margin_mm!r}")
    levels = tuple(float(level) for level in levels)
    if not levels and cover_level is None:
        raise InputError("levels: give at least one isotherm (degC) or a cover_level")
    if not all(math.isfinite(level) for level in levels):
        raise InputError("levels: must be finite degC values")
    cover = max(levels) if cover_level is None else float(cover_level)
    if not math.isfinite(cover):
        raise InputError("cover_level must be finite (degC)")
    axes = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    if axes.shape != (3, 3) or not np.all(np.isfinite(axes)) or not np.allclose(axes.T @ axes, np.eye(3), atol=1e-5):
        raise InputError("direction: must be an orthonormal 3x3 matrix (columns: lattice axes in world)")
    _check_combine(combine)
    times = tuple(float(t) for t in snapshot_times)
    prepared = _prepare(
        probes, protocol, properties=properties, tissue=tissue, tissue_labels=tissue_labels,
        body_temperature=body_temperature, solver_spacing_mm=solver_spacing_mm, snapshot_times=times,
        cache_dir=cache_dir, use_disk_cache=use_disk_cache, progress=progress, cancel=cancel,
    )
    return _lattice_preview(prepared, spacing_mm=float(spacing_mm), levels=levels, cover=cover,
                            margin_mm=float(margin_mm), axes=axes, times=times, combine=combine)


def _cylinder_bounds(tip, axis, r, z_lo, z_hi, axes) -> np.ndarray:
    """Lattice-frame box ``[[lo x, y, z], [hi ...]]`` of a cylinder of radius ``r`` around the
    probe axis from ``z_lo`` to ``z_hi`` mm up the shaft from ``tip``."""
    ends = np.array([tip + z_lo * axis, tip + z_hi * axis]) @ axes
    axis_lattice = axis @ axes
    half = r * np.sqrt(np.clip(1.0 - axis_lattice**2, 0.0, 1.0))
    return np.stack([ends.min(axis=0) - half, ends.max(axis=0) + half])


@dataclass(frozen=True)
class _Lattice:
    """A uniform lattice along ``axes`` (world columns) whose voxel centres sit on multiples of
    ``spacing`` mm: index ``first`` (x, y, z) is the first voxel."""

    first: np.ndarray
    shape: tuple[int, int, int]
    spacing: float
    axes: np.ndarray

    @classmethod
    def covering(cls, lo, hi, spacing, axes) -> "_Lattice":
        first = np.floor(np.asarray(lo) / spacing).astype(np.int64)
        last = np.ceil(np.asarray(hi) / spacing).astype(np.int64)
        nx, ny, nz = (last - first + 1).tolist()
        return cls(first, (nz, ny, nx), float(spacing), axes)

    @property
    def origin_world(self) -> np.ndarray:
        return self.axes @ (self.first * self.spacing)

    def sub_box(self, probe: PlacedProbe, table: ProbeFieldTable):
        """Index ranges (k0, k1, j0, j1, i0, i1) the probe's table reaches, or None."""
        z_lo, z_hi = table.z_range_mm
        box = _cylinder_bounds(np.asarray(probe.tip, dtype=float), probe.axis, table.r_max_mm, z_lo, z_hi, self.axes)
        nz, ny, nx = self.shape
        i_lo = np.clip(np.floor(box[0] / self.spacing).astype(np.int64) - self.first, 0, [nx, ny, nz])
        i_hi = np.clip(np.ceil(box[1] / self.spacing).astype(np.int64) - self.first + 1, 0, [nx, ny, nz])
        if np.any(i_hi <= i_lo):
            return None
        return int(i_lo[2]), int(i_hi[2]), int(i_lo[1]), int(i_hi[1]), int(i_lo[0]), int(i_hi[0])

    def fill(self, active, combine: str, time_s: float | None, body_temperature: float) -> np.ndarray:
        """The combined field of ``active`` (probe, table) pairs on the lattice, (nz, ny, nx) float32."""
        origin = self.origin_world
        steps = np.ascontiguousarray(self.axes * self.spacing)  # columns: world step per i, j, k
        if combine == "union":
            out = np.full(self.shape, body_temperature, dtype=np.float32)
            for probe, table in active:
                ranges = self.sub_box(probe, table)
                if ranges is not None:
                    values = np.ascontiguousarray(table.field(time_s), dtype=np.float32)
                    _lattice_min(out, *ranges, origin, steps, np.asarray(probe.tip, dtype=np.float64),
                                 probe.axis.astype(np.float64), values, float(table.step_mm), float(table.z0_mm))
            return out
        total = np.zeros(self.shape, dtype=np.float32)
        owner = np.zeros(self.shape, dtype=np.int32)
        # With one tissue for all probes every deficit turns back through the same curve.
        one_tissue = len({table.key.tissue for _, table in active}) == 1
        largest = None if one_tissue else np.zeros(self.shape, dtype=np.float32)
        for index, (probe, table) in enumerate(active):
            ranges = self.sub_box(probe, table)
            if ranges is None:
                continue
            where = (np.asarray(probe.tip, dtype=np.float64), probe.axis.astype(np.float64),
                     _deficit_table(table, time_s), float(table.step_mm), float(table.z0_mm))
            if one_tissue:
                _lattice_add(total, *ranges, origin, steps, *where)
            else:
                _lattice_sum(total, largest, owner, index, *ranges, origin, steps, *where)
        out = np.empty(self.shape, dtype=np.float32)
        _invert(total.reshape(-1), owner.reshape(-1), *_inverse_curves([t for _, t in active], time_s),
                out.reshape(-1))
        return out

    def voxel_bounds(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lattice-frame box (mm) of the voxel centres where ``mask`` (nz, ny, nx) is True."""
        k, j, i = np.nonzero(mask)
        index = np.stack([i, j, k], axis=-1) + self.first
        return index.min(axis=0) * self.spacing, index.max(axis=0) * self.spacing


def _lattice_preview(prepared: _Prepared, *, spacing_mm, levels, cover, margin_mm, axes, times,
                     combine) -> PreviewResult:
    from planner.imaging.memory import check_fits_in_memory

    started = time.perf_counter()
    active = [(probe, table) for probe, table in zip(prepared.probes, prepared.tables) if table is not None]
    body = prepared.body_temperature

    def boxes_colder_than(level_of):
        boxes = []
        for probe, table in active:
            for time_s in [None, *times]:
                extent = table.cold_extent(level_of(table), time_s=time_s)
                if extent is not None:
                    boxes.append(_cylinder_bounds(np.asarray(probe.tip, dtype=float), probe.axis, *extent, axes))
        return np.array(boxes).reshape(-1, 2, 3)

    boxes = boxes_colder_than(lambda table: cover)
    lo = boxes[:, 0].min(axis=0) if len(boxes) else None
    hi = boxes[:, 1].max(axis=0) if len(boxes) else None
    if combine == "kirchhoff" and len(active) > 1:
        # A sum of n deficits reaches the cover level's deficit only where one of them reaches
        # 1/n of it. Find where the sum gets that cold on a coarse lattice over those (larger)
        # regions first, then fill the fine lattice there only.
        def share_level(table):
            temperatures, deficit = _kirchhoff_curve(table.key.tissue, table.body_temperature)
            share = float(np.interp(cover, temperatures, deficit)) / len(active)
            return float(np.interp(share, deficit[::-1], temperatures[::-1]))

        wide = boxes_colder_than(share_level)
        if len(wide):
            coarse = _Lattice.covering(wide[:, 0].min(axis=0), wide[:, 1].max(axis=0), 4 * spacing_mm, axes)
            check_fits_in_memory(coarse.shape, np.float32, "preview lattice", copies=4.0)
            cold = np.zeros(coarse.shape, dtype=bool)
            for time_s in [None, *times]:
                cold |= coarse.fill(active, combine, time_s, body) < cover
            if cold.any():
                lo, hi = coarse.voxel_bounds(cold)
                lo, hi = lo - coarse.spacing, hi + coarse.spacing
    if lo is None:  # nothing that cold: a small lattice around the active segments
        segments = np.array([_cylinder_bounds(np.asarray(p.tip, dtype=float), p.axis, p.radius_mm, p.tip_offset_mm,
                                              p.tip_offset_mm + p.active_length_mm, axes) for p in prepared.probes])
        lo, hi = segments[:, 0].min(axis=0), segments[:, 1].max(axis=0)
    lattice = _Lattice.covering(lo - margin_mm, hi + margin_mm, spacing_mm, axes)
    shape = lattice.shape
    copies = (1 + len(times)) * (1.0 if combine == "union" else 4.0)
    check_fits_in_memory(shape, np.float32, "preview lattice", copies=copies)
    origin_world = lattice.origin_world

    def fill(time_s):
        return lattice.fill(active, combine, time_s, body)

    min_temperature = fill(None)
    temperatures = np.stack([fill(t) for t in times]) if times else np.zeros((0,) + shape, dtype=np.float32)
    grid = ThermalGrid.uniform(shape, spacing_mm, origin=origin_world, direction=axes,
                               lower=(-0.5 * spacing_mm,) * 3)
    affine = affine_from_geometry(np.full(3, spacing_mm), origin_world, axes)
    probe_axes = np.array([np.array(p.active_segment()) for p in prepared.probes])
    return PreviewResult(
        grid=grid,
        affine=affine,
        min_temperature=min_temperature,
        snapshot_times=np.asarray(times, dtype=float),
        temperatures=temperatures,
        probe_axes=probe_axes,
        levels=levels,
        combine=combine,
        caveat=CAVEATS[combine],
        run_time_s=time.perf_counter() - started,
        precompute_s=prepared.precompute_s,
        tables=prepared.tables,
        notes=list(prepared.notes),
    )


__all__ = [
    "CAVEATS",
    "COMBINE_MODES",
    "PreviewResult",
    "ProbeFieldKey",
    "ProbeFieldTable",
    "cache_folder",
    "solver_fingerprint",
    "clear_preview_cache",
    "preview_at_points",
    "preview_ice_ball",
    "probe_field_table",
    "probe_steps",
    "table_from_result",
]
