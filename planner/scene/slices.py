"""Slice pictures in world orientation: axial, coronal, sagittal and along a probe.

A slice is a :class:`SlicePlane` (a world-placed grid of pixels) and the image values
sampled on it. Planes are world-aligned (LPS axes), not voxel-aligned, so an oblique
volume shows the patient the right way up; the values come from resampling the volume
on the plane's pixel centres. Overlays (isotherm contour lines, nerve and vessel
cross-sections, probes, the crosshair) are painted onto an RGB picture with numpy, so
a slice update costs a few milliseconds and needs no OpenGL.

Screen conventions (radiological): the axial view is seen from the feet (patient's
right on the screen's left, anterior up); the coronal view from the front (right on
the left, superior up); the sagittal view from the patient's left (anterior on the
left, superior up). World LPS: +x patient left, +y posterior, +z superior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.errors import InputError
from planner.scene import palette

ORTHOGONAL_PLANES = ("axial", "coronal", "sagittal")

# (u = screen right, v = screen down) in world LPS for each orthogonal view.
_PLANE_AXES = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}
_AXIS_LETTERS = ((("R", "L")), ("A", "P"), ("I", "S"))  # (negative, positive) end of x, y, z


@dataclass(frozen=True, eq=False)
class SlicePlane:
    """A rectangle of pixels placed in the world.

    Parameters
    ----------
    name : str
        ``"axial"``, ``"coronal"``, ``"sagittal"`` or ``"probe"``.
    origin : (3,) ndarray, mm
        World LPS position of the centre of pixel ``(row 0, column 0)`` (top left).
    u, v : (3,) ndarray
        Unit world vectors along the columns (screen right) and rows (screen down).
    spacing_mm : float
        Pixel size, mm (square pixels).
    shape : (rows, cols)
        Picture size in pixels.
    """

    name: str
    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    spacing_mm: float
    shape: tuple[int, int]

    @property
    def normal(self) -> np.ndarray:
        """Unit normal ``u x v`` (towards the viewer for the standard views... or away; only its
        line matters for distances)."""
        return np.cross(self.u, self.v)

    def pixel_to_world(self, rows, cols) -> np.ndarray:
        """World LPS mm ``(..., 3)`` of (fractional) pixel positions ``rows``, ``cols``."""
        rows = np.asarray(rows, dtype=float)[..., None]
        cols = np.asarray(cols, dtype=float)[..., None]
        return self.origin + self.spacing_mm * (cols * self.u + rows * self.v)

    def world_to_pixel(self, points) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixel ``rows``, ``cols`` (fractional) of world points ``(..., 3)`` projected on the
        plane, and their signed distance from the plane along :attr:`normal`, mm."""
        offset = np.asarray(points, dtype=float) - self.origin
        return offset @ self.v / self.spacing_mm, offset @ self.u / self.spacing_mm, offset @ self.normal

    def pixel_centres(self) -> np.ndarray:
        """World LPS mm of every pixel centre, shape ``(rows, cols, 3)``."""
        rows, cols = np.meshgrid(np.arange(self.shape[0]), np.arange(self.shape[1]), indexing="ij")
        return self.pixel_to_world(rows, cols)

    def edge_letters(self) -> dict[str, str]:
        """Patient-direction letters for the picture's ``left``, ``right``, ``top``, ``bottom``
        edges (e.g. R, L, A, P), from the dominant world axis of ``u`` and ``v``."""

        def letter(vector) -> str:
            axis = int(np.argmax(np.abs(vector)))
            return _AXIS_LETTERS[axis][1 if vector[axis] > 0 else 0]

        return {"left": letter(-self.u), "right": letter(self.u), "top": letter(-self.v), "bottom": letter(self.v)}

    def __repr__(self) -> str:
        rows, cols = self.shape
        return f"SlicePlane({self.name}, {cols}x{rows} px at {self.spacing_mm:.3g} mm)"


def _choose_spacing(extent_mm, spacing_mm, max_pixels) -> float:
    if spacing_mm is not None:
        if not np.isfinite(spacing_mm) or spacing_mm <= 0:
            raise InputError(f"slice spacing_mm: must be a positive number of mm, got {spacing_mm!r}")
        return float(spacing_mm)
    return max(float(max(extent_mm)) / max_pixels, 1e-3)


def orthogonal_plane(name: str, point, bounds, *, spacing_mm: float | None = None, max_pixels: int = 400) -> SlicePlane:
    """The axial, coronal or sagittal plane through ``point`` covering ``bounds``.

    Parameters
    ----------
    name : {"axial", "coronal", "sagittal"}
    point : (3,) array_like, mm
        World LPS point the plane passes through (the crosshair).
    bounds : (2, 3) array_like, mm
        ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]`` world box the picture covers (e.g.
        :meth:`planner.volume.Volume.bounds_world`).
    spacing_mm : float, optional
        Pixel size; default: the box's largest in-plane extent over ``max_pixels``.
    max_pixels : int
        Longest picture side when ``spacing_mm`` is not given.
    """
    if name not in _PLANE_AXES:
        raise InputError(f"slice plane: expected one of {', '.join(ORTHOGONAL_PLANES)}, got {name!r}")
    u, v = (np.array(axis) for axis in _PLANE_AXES[name])
    bounds = np.asarray(bounds, dtype=float)
    point = np.asarray(point, dtype=float)
    u_axis, v_axis = int(np.argmax(np.abs(u))), int(np.argmax(np.abs(v)))
    extent = (bounds[1, u_axis] - bounds[0, u_axis], bounds[1, v_axis] - bounds[0, v_axis])
    spacing = _choose_spacing(extent, spacing_mm, max_pixels)
    cols = int(np.floor(extent[0] / spacing + 1e-9)) + 1
    rows = int(np.floor(extent[1] / spacing + 1e-9)) + 1
    origin = point.copy()
    # Start at the box corner that is the picture's top left.
    origin[u_axis] = bounds[0, u_axis] if u[u_axis] > 0 else bounds[1, u_axis]
    origin[v_axis] = bounds[0, v_axis] if v[v_axis] > 0 else bounds[1, v_axis]
    return SlicePlane(name, origin, u, v, spacing, (rows, cols))


def probe_plane(
    tip,
    entry,
    *,
    depth_direction=None,
    margin_mm: float = 20.0,
    min_size_mm: float = 60.0,
    spacing_mm: float | None = None,
    max_pixels: int = 400,
) -> SlicePlane:
    """The plane that holds a probe's shaft, as an in-plane ultrasound approach shows it.

    Depth (into the body) points down the picture and the shaft runs from the entry near
    the top towards the tip, so the probe appears as an ultrasound user sees a needle
    advanced in plane.

    Parameters
    ----------
    tip, entry : (3,) array_like, mm
        World LPS physical tip and entry point.
    depth_direction : (3,) array_like, optional
        The direction "into the body" (e.g. minus the skin normal at the entry). Default:
        the world axis closest to the shaft, pointing from entry to tip.
    margin_mm : float
        Extra space around the shaft, mm.
    min_size_mm : float
        Smallest side of the picture, mm.
    spacing_mm, max_pixels
        As for :func:`orthogonal_plane`.
    """
    tip = np.asarray(tip, dtype=float)
    entry = np.asarray(entry, dtype=float)
    shaft = tip - entry
    length = float(np.linalg.norm(shaft))
    if length < 1e-6:
        raise InputError("probe plane: entry must differ from tip")
    axis = shaft / length
    if depth_direction is None:
        dominant = int(np.argmax(np.abs(axis)))
        depth = np.zeros(3)
        depth[dominant] = np.sign(axis[dominant])
    else:
        depth = np.asarray(depth_direction, dtype=float)
        depth = depth / np.linalg.norm(depth)
    if depth @ axis < 0:  # the shaft goes down the picture, from the entry to the tip
        depth = -depth
    lateral = axis - (axis @ depth) * depth
    if np.linalg.norm(lateral) < 1e-6:  # shaft straight down: any lateral axis perpendicular to it
        helper = np.eye(3)[int(np.argmin(np.abs(depth)))]
        lateral = helper - (helper @ depth) * depth
    lateral /= np.linalg.norm(lateral)
    # The shaft is a combination of lateral and depth, so the plane (lateral, depth) holds it.
    along = np.array([0.0, (tip - entry) @ lateral])
    down = np.array([0.0, (tip - entry) @ depth])
    width = max(along.max() - along.min() + 2 * margin_mm, min_size_mm)
    height = max(down.max() - down.min() + 2 * margin_mm, min_size_mm)
    spacing = _choose_spacing((width, height), spacing_mm, max_pixels)
    cols = int(np.ceil(width / spacing)) + 1
    rows = int(np.ceil(height / spacing)) + 1
    centre = 0.5 * (tip + entry)
    origin = centre - 0.5 * (cols - 1) * spacing * lateral - 0.5 * (rows - 1) * spacing * depth
    return SlicePlane("probe", origin, lateral, depth, spacing, (rows, cols))


# ---------------------------------------------------------------- sampling
def sample_volume(volume, points, *, order: int = 1, fill_value: float = np.nan) -> np.ndarray:
    """Values of ``volume`` at world points ``(..., 3)`` mm, float32.

    A point counts as inside when it lies within the voxels' own extent (half a voxel
    beyond the outer centres), so a single-slice volume (an ultrasound frame) shows on
    planes that cut it within half its slice thickness. The array is not copied to
    float (big CTs stay cheap to slice).
    """
    from scipy import ndimage

    points = np.asarray(points, dtype=float)
    source = volume.frame(0) if volume.is_cine else volume
    ijk = source.world_to_index(points.reshape(-1, 3))
    upper = np.array(source.shape_xyz, dtype=float) - 1
    inside = np.all((ijk >= -0.5) & (ijk <= upper + 0.5), axis=1)
    coords = np.clip(ijk, 0, upper)[:, ::-1].T  # array axes are (k, j, i)
    array = source.array
    if array.dtype == bool:
        array = array.view(np.uint8)
    values = ndimage.map_coordinates(array, coords, order=order, mode="nearest", output=np.float32, prefilter=False)
    values[~inside] = fill_value
    return values.reshape(points.shape[:-1])


def _plane_coords(plane: SlicePlane, linear: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``linear @ world + offset`` for every pixel centre, ``(rows, cols, 3)``; the map is affine,
    so it is built from the plane's origin and two steps instead of transforming each pixel."""
    start = linear @ plane.origin + offset
    down = linear @ plane.v * plane.spacing_mm
    right = linear @ plane.u * plane.spacing_mm
    rows = np.arange(plane.shape[0], dtype=float)[:, None, None]
    cols = np.arange(plane.shape[1], dtype=float)[None, :, None]
    return start + rows * down + cols * right


def sample_plane(volume, plane: SlicePlane, *, order: int = 1, fill_value: float = np.nan) -> np.ndarray:
    """The volume resampled on the plane's pixel centres, ``(rows, cols)`` float32."""
    from scipy import ndimage

    source = volume.frame(0) if volume.is_cine else volume
    inverse = np.linalg.inv(source.affine)
    ijk = _plane_coords(plane, inverse[:3, :3], inverse[:3, 3]).reshape(-1, 3)
    upper = np.array(source.shape_xyz, dtype=float) - 1
    inside = np.all((ijk >= -0.5) & (ijk <= upper + 0.5), axis=1)
    coords = np.clip(ijk, 0, upper)[:, ::-1].T
    array = source.array.view(np.uint8) if source.array.dtype == bool else source.array
    values = ndimage.map_coordinates(array, coords, order=order, mode="nearest", output=np.float32, prefilter=False)
    values[~inside] = fill_value
    return values.reshape(plane.shape)


def _sample_grid(result, local: np.ndarray, snapshot, outside_c: float) -> np.ndarray:
    from scipy import ndimage

    grid = result.grid
    values = result.min_temperature if snapshot == "min" else result.temperatures[snapshot]
    low, high = grid.bounds_local()
    coords = []
    for axis in (2, 1, 0):  # array axes (z, y, x)
        centres = grid.centres(axis)
        coords.append(np.interp(local[:, axis], centres, np.arange(centres.size)))
    sampled = ndimage.map_coordinates(np.asarray(values, dtype=np.float32), coords, order=1, mode="nearest",
                                      output=np.float32)
    inside = np.all((local >= low) & (local <= high), axis=1)
    sampled[~inside] = outside_c
    return sampled


def sample_temperature_plane(result, plane: SlicePlane, *, snapshot: int | str = -1,
                             outside_c: float = 37.0) -> np.ndarray:
    """:func:`sample_temperature` on the plane's pixel centres, ``(rows, cols)`` degC."""
    grid = result.grid
    local = _plane_coords(plane, grid.direction.T, -grid.direction.T @ grid.origin).reshape(-1, 3)
    return _sample_grid(result, local, snapshot, outside_c).reshape(plane.shape)


def sample_temperature(result, points, *, snapshot: int | str = -1, outside_c: float = 37.0) -> np.ndarray:
    """Temperature (degC) of a :class:`planner.thermal.result.ThermalResult` at world points.

    Trilinear between cell centres of the solver's (possibly stretched) grid; points
    outside the solver's box get ``outside_c`` (body temperature).

    Parameters
    ----------
    result : ThermalResult
    points : (..., 3) array_like, mm
    snapshot : int or "min"
        Snapshot index, or ``"min"`` for the lowest temperature each cell reached.
    """
    points = np.asarray(points, dtype=float)
    local = result.grid.world_to_local(points.reshape(-1, 3))
    return _sample_grid(result, local, snapshot, outside_c).reshape(points.shape[:-1])


# ---------------------------------------------------------------- painting
def window_to_rgb(values: np.ndarray, *, width: float, level: float, background=(0, 0, 0)) -> np.ndarray:
    """Grey picture ``(rows, cols, 3)`` uint8 of ``values`` through a window (``level`` +- ``width``/2).

    NaN (outside the volume) is painted ``background`` (0..255).
    """
    width = max(float(width), 1e-6)
    grey = np.clip((np.asarray(values, dtype=np.float32) - (level - width / 2)) / width, 0.0, 1.0)
    grey = np.nan_to_num(grey, nan=0.0)
    rgb = np.repeat((grey * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=2)
    outside = np.isnan(values)
    if np.any(outside):
        rgb[outside] = background
    return rgb


def _blend(rgb: np.ndarray, mask: np.ndarray, color, alpha: float) -> None:
    target = np.asarray(palette.to_rgb255(color), dtype=np.float32)
    if not rgb.flags.c_contiguous:
        if np.any(mask):
            rgb[mask] = (rgb[mask] * (1.0 - alpha) + target * alpha + 0.5).astype(np.uint8)
        return
    # Flat indices into a (pixels, 3) view: several times faster than a 2D boolean mask on
    # an (rows, cols, 3) array (this runs a dozen times per slice picture).
    index = np.flatnonzero(mask)
    if index.size == 0:
        return
    flat = rgb.reshape(-1, 3)
    if alpha >= 1.0:
        flat[index] = (target + 0.5).astype(np.uint8)
    else:
        flat[index] = (flat[index] * (1.0 - alpha) + target * alpha + 0.5).astype(np.uint8)


def _paint_polyline(rgb, rows, cols, color, *, thickness: int = 2, alpha: float = 1.0) -> None:
    """Paint a polyline through fractional pixel positions (clipped to the picture)."""
    from skimage.draw import line

    height, width = rgb.shape[:2]
    rows = np.asarray(rows, dtype=float)
    cols = np.asarray(cols, dtype=float)
    if rows.size < 2:
        return
    mask = np.zeros((height, width), dtype=bool)
    r0, c0 = np.rint(rows[:-1]).astype(int), np.rint(cols[:-1]).astype(int)
    r1, c1 = np.rint(rows[1:]).astype(int), np.rint(cols[1:]).astype(int)
    limit = 4 * (height + width)
    for a, b, c, d in zip(r0, c0, r1, c1):
        if max(abs(a), abs(b), abs(c), abs(d)) > limit:  # far outside: skip (keeps line() cheap)
            continue
        rr, cc = line(a, b, c, d)
        keep = (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
        mask[rr[keep], cc[keep]] = True
    if thickness > 1:
        from scipy import ndimage

        mask = ndimage.binary_dilation(mask, iterations=thickness - 1)
    _blend(rgb, mask, color, alpha)


def _tube_section_mask(plane: SlicePlane, points: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Pixels inside the cross-section of a tube (centreline ``points`` (n, 3), ``radii`` (n,) mm)
    with the plane, as the union of the spheres centred on a densely resampled centreline."""
    rows, cols = plane.shape
    mask = np.zeros((rows, cols), dtype=bool)
    points = np.asarray(points, dtype=float)
    radii = np.broadcast_to(np.asarray(radii, dtype=float), (len(points),))
    if len(points) == 0:
        return mask
    if len(points) == 1:
        dense, dense_r = points, radii
    else:
        # Only segments that reach the plane matter (both ends beyond it on one side: skip).
        _, _, distance = plane.world_to_pixel(points)
        reach = np.maximum(radii[:-1], radii[1:])
        low, high = np.minimum(distance[:-1], distance[1:]), np.maximum(distance[:-1], distance[1:])
        crossing = np.flatnonzero((low <= reach) & (high >= -reach))
        if crossing.size == 0:
            return mask
        # Resample so that neighbouring spheres overlap well (step <= a quarter of the radius and the pixel).
        step = max(min(0.25 * float(radii.min()), 0.5 * plane.spacing_mm), 0.02)
        dense, dense_r = [], []
        for index in crossing:
            a, b, ra, rb = points[index], points[index + 1], radii[index], radii[index + 1]
            n = max(int(np.ceil(np.linalg.norm(b - a) / step)), 1)
            t = np.arange(n + 1) / n
            dense.append(a + t[:, None] * (b - a))
            dense_r.append(ra + t * (rb - ra))
        dense = np.concatenate(dense)
        dense_r = np.concatenate(dense_r)
    prow, pcol, distance = plane.world_to_pixel(dense)
    near = np.abs(distance) < dense_r
    if not np.any(near):
        return mask
    section = np.sqrt(dense_r[near] ** 2 - distance[near] ** 2) / plane.spacing_mm  # disc radius, px
    prow, pcol = prow[near], pcol[near]
    # Discs drawn all at once over the pixels of their common bounding box (in chunks of
    # points to bound memory): the union of (row - r)^2 + (col - c)^2 <= radius^2, with at
    # least the nearest pixel, so a thin structure never vanishes at coarse pixels.
    r_lo = max(int(np.floor((prow - section).min())), 0)
    r_hi = min(int(np.ceil((prow + section).max())), rows - 1)
    c_lo = max(int(np.floor((pcol - section).min())), 0)
    c_hi = min(int(np.ceil((pcol + section).max())), cols - 1)
    if r_lo > r_hi or c_lo > c_hi:
        return mask
    rr = np.arange(r_lo, r_hi + 1, dtype=np.float32)[:, None, None]
    cc = np.arange(c_lo, c_hi + 1, dtype=np.float32)[None, :, None]
    box = np.zeros((r_hi - r_lo + 1, c_hi - c_lo + 1), dtype=bool)
    limit = np.maximum(section, 0.5).astype(np.float32) ** 2
    chunk = max(1, 2_000_000 // box.size)
    for start in range(0, len(prow), chunk):
        part = slice(start, start + chunk)
        d2 = (rr - prow[part].astype(np.float32)) ** 2 + (cc - pcol[part].astype(np.float32)) ** 2
        box |= np.any(d2 <= limit[part], axis=2)
    mask[r_lo : r_hi + 1, c_lo : c_hi + 1] = box
    return mask


@dataclass(frozen=True)
class TubeOverlay:
    """A nerve or vessel for slice pictures: centreline ``points`` (n, 3) mm and ``radii`` (n,) mm."""

    name: str
    points: np.ndarray
    radii: np.ndarray
    color: tuple[float, float, float]


@dataclass(frozen=True)
class ProbeOverlay:
    """A probe for slice pictures: tip, entry, active-segment end points (world mm), radius mm."""

    name: str
    tip: np.ndarray
    entry: np.ndarray
    active_start: np.ndarray
    active_end: np.ndarray
    radius_mm: float
    selected: bool = False


def tube_overlay(line, color) -> TubeOverlay:
    """A :class:`TubeOverlay` from any centreline object: a :class:`planner.anatomy.Nerve`
    (``centreline``), a demo ``NerveLine``/``VesselLine`` or a plan nerve (``points``), with
    ``radius_mm`` and optional per-point radii (``local_radii_mm()`` or ``radii_mm``). A
    TubeOverlay is recoloured."""
    if isinstance(line, TubeOverlay):
        return TubeOverlay(line.name, line.points, line.radii, tuple(color))
    points = np.asarray(getattr(line, "centreline", None) if hasattr(line, "centreline") else line.points, dtype=float)
    if hasattr(line, "local_radii_mm"):
        radii = np.asarray(line.local_radii_mm(), dtype=float)
    elif getattr(line, "radii_mm", None) is not None:
        radii = np.asarray(line.radii_mm, dtype=float)
    else:
        radii = np.full(len(points), float(line.radius_mm))
    return TubeOverlay(str(getattr(line, "name", "")), points, radii, tuple(color))


def probe_overlay(probe, *, selected: bool = False) -> ProbeOverlay:
    """A :class:`ProbeOverlay` from a :class:`planner.thermal.probes.PlacedProbe`."""
    start, end = probe.active_segment()
    return ProbeOverlay(probe.name, np.asarray(probe.tip, float), np.asarray(probe.entry, float),
                        np.asarray(start), np.asarray(end), float(probe.radius_mm), selected)


def paint_isotherms(rgb: np.ndarray, temperature: np.ndarray, levels_c, *, thickness: int = 2,
                    fill_alpha: float = 0.18) -> None:
    """Paint isotherm contour lines (and a light tint of the coldest region) on ``rgb`` in place.

    ``temperature`` is ``(rows, cols)`` degC on the same pixels. Colours from
    :func:`planner.scene.palette.isotherm_color`; the region below the warmest level is
    tinted with that level's colour so the ice ball reads at a glance.
    """
    from skimage.measure import find_contours

    temperature = np.asarray(temperature, dtype=np.float32)
    levels = sorted((float(level) for level in levels_c), reverse=True)
    if not levels or not np.any(temperature < levels[0]):
        return
    if fill_alpha > 0:
        _blend(rgb, temperature < levels[0], palette.isotherm_color(levels[0]), fill_alpha)
    # Pad with the warmest value so contours touching the picture's edge are closed.
    padded = np.pad(temperature, 1, mode="constant", constant_values=max(float(np.nanmax(temperature)), levels[0] + 1))
    for level in levels:
        if not np.any(temperature < level):
            continue
        for contour in find_contours(padded, level):
            _paint_polyline(rgb, contour[:, 0] - 1, contour[:, 1] - 1, palette.isotherm_color(level),
                            thickness=thickness)


def paint_tube(rgb: np.ndarray, plane: SlicePlane, tube: TubeOverlay, *, alpha: float = 0.85) -> None:
    """Paint a nerve or vessel's cross-section with the plane, in its colour, with a dark rim."""
    mask = _tube_section_mask(plane, tube.points, tube.radii)
    if not np.any(mask):
        return
    from scipy import ndimage

    rim = mask & ~ndimage.binary_erosion(mask)
    _blend(rgb, mask, tube.color, alpha)
    _blend(rgb, rim, tuple(0.5 * c for c in tube.color), 1.0)


def paint_probe(rgb: np.ndarray, plane: SlicePlane, probe: ProbeOverlay) -> None:
    """Paint a probe: its projected axis as a thin line, then where its shaft and its active
    segment cut the plane (grey and cyan), outlined in orange when ``probe.selected``."""
    rows, cols, _ = plane.world_to_pixel(np.stack([probe.entry, probe.tip]))
    color = palette.PROBE_SELECTED_COLOR if probe.selected else palette.PROBE_SHAFT_COLOR
    _paint_polyline(rgb, rows, cols, color, thickness=1, alpha=0.7)
    # A minimum visible radius (1 px) so a 27 G needle still shows on a coarse picture.
    radius = max(probe.radius_mm, 0.5 * plane.spacing_mm)
    shaft = _tube_section_mask(plane, np.stack([probe.entry, probe.tip]), np.array([radius, radius]))
    active = _tube_section_mask(plane, np.stack([probe.active_start, probe.active_end]), np.array([radius, radius]))
    _blend(rgb, shaft & ~active, palette.PROBE_SHAFT_COLOR, 1.0)
    _blend(rgb, active, palette.PROBE_ACTIVE_COLOR, 1.0)
    if probe.selected:
        from scipy import ndimage

        both = shaft | active
        outline = ndimage.binary_dilation(both) & ~both
        _blend(rgb, outline, palette.PROBE_SELECTED_COLOR, 1.0)


def paint_crosshair(rgb: np.ndarray, plane: SlicePlane, point, *, alpha: float = 0.55) -> None:
    """Paint thin crosshair lines through the projection of ``point`` (world mm)."""
    row, col, _ = plane.world_to_pixel(np.asarray(point, dtype=float))
    height, width = rgb.shape[:2]
    r, c = int(round(float(row))), int(round(float(col)))
    mask = np.zeros((height, width), dtype=bool)
    gap = 6  # leave the point itself visible
    if 0 <= r < height:
        mask[r, : max(c - gap, 0)] = True
        mask[r, max(c + gap + 1, 0) :] = True
    if 0 <= c < width:
        mask[: max(r - gap, 0), c] = True
        mask[max(r + gap + 1, 0) :, c] = True
    _blend(rgb, mask, palette.CROSSHAIR_COLOR, alpha)


def paint_text(rgb: np.ndarray, plane: SlicePlane, *, title: str = "", note: str | None = palette.NOTE,
               scale: int = 1) -> np.ndarray:
    """Orientation letters at the edges, a title top left and the not-for-clinical-use note at
    the bottom. Returns a new array (PIL draws on a copy)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    height, width = rgb.shape[:2]
    size = max(10, min(16, width // 28)) * scale
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow without FreeType
        font = ImageFont.load_default()
    letters = plane.edge_letters()
    white = (255, 255, 255)
    draw.text((3, height // 2), letters["left"], fill=white, font=font, anchor="lm", stroke_width=1, stroke_fill=(0, 0, 0))
    draw.text((width - 3, height // 2), letters["right"], fill=white, font=font, anchor="rm", stroke_width=1,
              stroke_fill=(0, 0, 0))
    draw.text((width // 2, 2), letters["top"], fill=white, font=font, anchor="mt", stroke_width=1, stroke_fill=(0, 0, 0))
    draw.text((width // 2, height - 2), letters["bottom"], fill=white, font=font, anchor="mb", stroke_width=1,
              stroke_fill=(0, 0, 0))
    if title:
        draw.text((3, 2), title, fill=(255, 255, 160), font=font, anchor="lt", stroke_width=1, stroke_fill=(0, 0, 0))
    if note:
        small = ImageFont.load_default(size=max(9, size - 3)) if hasattr(ImageFont, "FreeTypeFont") else font
        draw.text((width - 3, height - 2 - size), note, fill=(255, 190, 120), font=small, anchor="rb",
                  stroke_width=1, stroke_fill=(0, 0, 0))
    return np.asarray(image)


def render_slice(
    volume,
    plane: SlicePlane,
    *,
    window: float,
    level: float,
    temperature: np.ndarray | None = None,
    isotherms_c=(0.0, -20.0, -40.0),
    nerves=(),
    vessels=(),
    probes=(),
    crosshair=None,
    title: str | None = None,
    note: str | None = palette.NOTE,
    values: np.ndarray | None = None,
) -> np.ndarray:
    """One slice picture with its overlays.

    Parameters
    ----------
    volume : Volume or None
        The image to show (None: a black background, e.g. for a homogeneous block).
    plane : SlicePlane
    window, level : float
        Grey window width and centre, in the volume's units.
    temperature : (rows, cols) ndarray, degC, optional
        Temperatures on the plane's pixels (:func:`sample_temperature` of
        ``plane.pixel_centres()``); draws the isotherm contours.
    isotherms_c : sequence of float
        Levels to draw, degC.
    nerves, vessels : sequence of TubeOverlay or centreline objects
        Drawn as their cross-sections with the plane (nerves yellow, vessels red).
    probes : sequence of ProbeOverlay
    crosshair : (3,) array_like, optional
        World point drawn as crosshair lines.
    title : str, optional
        Top-left label (default: the plane's name).
    note : str or None
        Bottom text (the not-for-clinical-use note by default).
    values : (rows, cols) ndarray, optional
        Already sampled image values (skips resampling ``volume``).

    Returns
    -------
    (rows, cols, 3) uint8 ndarray
    """
    if values is None:
        values = sample_plane(volume, plane) if volume is not None else np.full(plane.shape, np.nan, np.float32)
    rgb = window_to_rgb(values, width=window, level=level)
    if temperature is not None:
        paint_isotherms(rgb, temperature, isotherms_c)
    for vessel in vessels:
        paint_tube(rgb, plane, vessel if isinstance(vessel, TubeOverlay) else tube_overlay(vessel, palette.VESSEL_COLOR))
    for nerve in nerves:
        paint_tube(rgb, plane, nerve if isinstance(nerve, TubeOverlay) else tube_overlay(nerve, palette.NERVE_COLOR))
    for probe in probes:
        paint_probe(rgb, plane, probe if isinstance(probe, ProbeOverlay) else probe_overlay(probe))
    if crosshair is not None:
        paint_crosshair(rgb, plane, crosshair)
    return paint_text(rgb, plane, title=plane.name if title is None else title, note=note)


def encode_png(rgb: np.ndarray, *, compress_level: int = 1) -> bytes:
    """PNG bytes of an ``(rows, cols, 3)`` uint8 picture (fast compression by default)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()
