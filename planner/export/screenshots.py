"""Headless pictures of a simulated plan: the 3D scene and world-oriented slices, annotated.

Every picture has a header strip with the plan's name, the view and time, and the
not-for-clinical-use line, and on the picture a legend of the isotherm and structure
colours and a scale bar. Slices are painted with numpy (:mod:`planner.scene.slices`); the
3D view is rendered off screen by pyvista with a parallel projection, so its scale bar
is exact in the plane through the focal point.

Each picture comes with a ``geometry`` record (JSON-ready) that maps world LPS mm to its
pixels (:func:`world_to_pixel`): the slice plane, or the 3D camera.

World LPS millimetres, seconds, degrees Celsius.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from planner import NOT_FOR_CLINICAL_USE
from planner.errors import InputError
from planner.scene import palette, slices

HEADER_LINES = 2
FOCUS_MARGIN_MM = 8.0
"""Space around the probes and the 0 degC ice (coldest reached) in every view, mm."""
MIN_FOCUS_MM = 30.0
"""Smallest side of the region a view shows, mm."""
CONTEXT_FACTOR = 1.5
"""Tissue surfaces in 3D are built from the label map cropped to the focus box grown by this."""
TISSUE_DISPLAY_VOXELS = 400_000
HOMOGENEOUS_GREY = 48
"""Grey level (0-255) of the tissue on slices of a plan without an image (a homogeneous block)."""
SCALE_BAR_STEPS_MM = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500)


@dataclass(eq=False)
class PlanScene:
    """What the pictures of one simulated plan need.

    Attributes
    ----------
    title : str
        The plan's name.
    result : ThermalResult
    probes : tuple of PlacedProbe
    nerves : list
        Centreline objects (plan nerves) with ``points``, ``radius_mm``.
    vessels : list
        Centreline objects (the demo case's vessels), possibly empty.
    volume : Volume or None
        The image shown on slices (None: a homogeneous block, drawn uniform grey).
    labels : Volume or None
        Tissue map for the 3D tissue surfaces.
    isotherms_c : tuple of float
        Levels drawn, degC.
    focus : (2, 3) ndarray
        World box (mm) every view shows: probes and the 0 degC ice, plus a margin.
    centre : (3,) ndarray
        World point the axial, coronal and sagittal planes pass through: the centre of the
        first probe's active segment (the middle of its ice), mm.
    window : WindowPreset or None
        Grey window of ``volume``.
    protocol : tuple
        The plan's steps (``kind``, ``duration_s``), for naming the phase of a time.
    probe_depth : (3,) ndarray or None
        "Into the body" direction for the probe view (minus the skin normal at the first
        probe's entry), when a tissue map gives one.
    """

    title: str
    result: object
    probes: tuple
    nerves: list
    vessels: list
    volume: object
    labels: object
    isotherms_c: tuple[float, ...]
    focus: np.ndarray
    centre: np.ndarray
    window: object
    protocol: tuple = ()
    probe_depth: np.ndarray | None = None
    _surfaces: dict | None = field(default=None, repr=False)


def focus_box(result, probes, levels_c, *, margin_mm: float = FOCUS_MARGIN_MM,
              min_size_mm: float = MIN_FOCUS_MM) -> np.ndarray:
    """World box ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]`` (mm) around the probes (tip to
    entry) and the warmest isotherm of the lowest temperature reached, grown by ``margin_mm``
    and to at least ``min_size_mm`` per side."""
    points = [np.asarray(p.tip, dtype=float) for p in probes] + [np.asarray(p.entry, dtype=float) for p in probes]
    levels = sorted(float(level) for level in levels_c)
    if levels:
        verts, _ = result.isotherm_mesh(levels[-1], "min")
        if len(verts):
            points += [verts.min(axis=0), verts.max(axis=0)]
    if not points:  # nothing placed: the solver's box
        low, high = result.grid.bounds_local()
        corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
        points = list(result.grid.local_to_world(corners))
    points = np.asarray(points, dtype=float)
    low, high = points.min(axis=0) - margin_mm, points.max(axis=0) + margin_mm
    grow = np.maximum(min_size_mm - (high - low), 0.0) / 2
    return np.stack([low - grow, high + grow])


def plan_scene(run, *, vessels=None) -> PlanScene:
    """A :class:`PlanScene` from a :class:`planner.simulation.SimulationRun`.

    ``vessels`` default: the demo case's vessel centrelines for a demo plan, else none.
    """
    from planner.plan import DemoVolume, placed_probes

    plan = run.plan
    probes = placed_probes(plan)
    if vessels is None:
        vessels = []
        if isinstance(plan.volume, DemoVolume):
            from planner.demo import build_demo_case

            vessels = list(build_demo_case(plan.volume.demo).vessels)
    levels = tuple(float(level) for level in plan.isotherms_c)
    box = focus_box(run.result, probes, levels)
    if probes:
        # Through the first probe, as the probe view: each view then shows that probe's ice
        # (a point between several probes can miss all of them).
        centre = np.mean(probes[0].active_segment(), axis=0)
    else:
        centre = box.mean(axis=0)
    volume = run.source_volume
    window = None
    if volume is not None:
        window = palette.default_window(volume.modality, volume.value_range())
    depth = None
    if probes and run.labels is not None:
        try:
            from planner.anatomy import skin_normal

            normal = skin_normal(run.labels, probes[0].entry)
            if np.all(np.isfinite(normal)) and np.linalg.norm(normal) > 0:
                depth = -np.asarray(normal, dtype=float)
        except Exception:  # no skin near the entry: the probe view falls back to the shaft's main axis
            depth = None
    return PlanScene(
        title=plan.name,
        result=run.result,
        probes=tuple(probes),
        nerves=list(plan.nerves),
        vessels=list(vessels),
        volume=volume,
        labels=run.labels,
        isotherms_c=levels,
        focus=box,
        centre=np.asarray(centre, dtype=float),
        window=window,
        protocol=tuple(plan.protocol),
        probe_depth=depth,
    )


# ---------------------------------------------------------------- text
def phase_at(protocol, time_s: float) -> str:
    """Which protocol step a time falls in, e.g. ``"end of freeze 2"`` or ``"passive thaw 1"``.

    A time on the boundary between two steps belongs to the earlier one (snapshots are
    taken at step ends).
    """
    counts: dict[str, int] = {}
    elapsed = 0.0
    time_s = float(time_s)
    if time_s <= 0:
        return "start"
    for step in protocol:
        counts[step.kind] = counts.get(step.kind, 0) + 1
        start, elapsed = elapsed, elapsed + float(step.duration_s)
        name = f"{step.kind.replace('_', ' ')} {counts[step.kind]}"
        if time_s <= elapsed * (1 + 1e-12):
            if abs(time_s - elapsed) <= 1e-9 * max(1.0, elapsed):
                return f"end of {name}"
            return f"{name}, {time_s - start:g} s in"
    return "after the protocol"


def view_label(view: str) -> str:
    """Human name of a view."""
    return {"3d": "3D", "probe": "along probe 1 (in-plane ultrasound view)"}.get(view, view)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def text_size_px(height: int) -> int:
    """Font size of the burned-in text for a picture ``height`` px tall."""
    return int(max(11, min(40, round(height / 48))))


def header_height_px(height: int) -> int:
    """Height of the header strip, px."""
    return int(round((HEADER_LINES + 0.6) * 1.25 * text_size_px(height)))


def scale_bar_mm(mm_per_px: float, width_px: int, *, fraction: float = 0.2) -> float:
    """The longest round length (:data:`SCALE_BAR_STEPS_MM`) not over ``fraction`` of the width."""
    longest = fraction * width_px * mm_per_px
    fitting = [step for step in SCALE_BAR_STEPS_MM if step <= longest]
    return float(fitting[-1] if fitting else SCALE_BAR_STEPS_MM[0])


def legend_items(scene: PlanScene) -> list[tuple[str, tuple[float, float, float]]]:
    """Legend rows for a scene: its isotherm levels, then the structures it shows."""
    items = palette.legend_entries(scene.isotherms_c)
    if not scene.nerves:
        items = [item for item in items if item[0] != "nerve"]
    if not scene.vessels:
        items = [item for item in items if item[0] != "vessel"]
    if not scene.probes:
        items = [item for item in items if item[0] not in ("probe", "active segment")]
    return items


def _fit_text(draw, text: str, font, max_width: float) -> str:
    if draw.textlength(text, font=font) <= max_width:
        return text
    while text and draw.textlength(text + "\N{HORIZONTAL ELLIPSIS}", font=font) > max_width:
        text = text[:-1]
    return text + "\N{HORIZONTAL ELLIPSIS}"


def compose(picture: np.ndarray, *, title: str, subtitle: str, mm_per_px: float | None,
            legend, header_px: int | None = None, note: str = NOT_FOR_CLINICAL_USE) -> np.ndarray:
    """The final image: a header strip (title, subtitle, note) above ``picture``, with a
    legend (lower right) and a scale bar (lower left) drawn on the picture.

    Parameters
    ----------
    picture : (rows, cols, 3) uint8 ndarray
        The rendered view.
    title, subtitle : str
        Header lines (left); too long ones are cut with an ellipsis.
    mm_per_px : float or None
        Picture scale in mm per pixel (None: no scale bar).
    legend : sequence of (text, colour)
        Rows of the legend (colours 0..1).
    header_px : int, optional
        Height of the header strip (default: :func:`header_height_px` of the picture's height).
    note : str
        The not-for-clinical-use line (header, right).

    Returns
    -------
    (rows + header, cols, 3) uint8 ndarray
    """
    from PIL import Image, ImageDraw

    rows, cols = picture.shape[:2]
    header = header_height_px(rows) if header_px is None else int(header_px)
    size = text_size_px(rows + header)
    image = Image.new("RGB", (cols, rows + header), (12, 13, 18))
    image.paste(Image.fromarray(np.ascontiguousarray(picture)), (0, header))
    draw = ImageDraw.Draw(image, "RGBA")
    font, small = _font(size), _font(max(10, int(round(0.8 * size))))
    pad = max(4, size // 2)
    line = int(round(1.25 * size))

    # Header: the note keeps its full text on the right; the title gives way.
    note_font = small
    while draw.textlength(note, font=note_font) > cols - 2 * pad and note_font.size > 8:
        note_font = _font(note_font.size - 1)
    note_width = draw.textlength(note, font=note_font)
    draw.text((cols - pad, pad), note, fill=(255, 190, 120), font=note_font, anchor="ra")
    room = cols - 3 * pad - note_width
    if room < 0.3 * cols:  # a narrow picture: the title goes under the note
        top, room = pad + line, cols - 2 * pad
    else:
        top = pad
    draw.text((pad, top), _fit_text(draw, title, font, room), fill=(255, 255, 255), font=font, anchor="la")
    draw.text((pad, top + line), _fit_text(draw, subtitle, small, cols - 2 * pad), fill=(200, 205, 215),
              font=small, anchor="la")

    # Legend, lower right of the picture.
    if legend:
        swatch = max(8, int(round(0.7 * size)))
        width = max(draw.textlength(text, font=small) for text, _ in legend) + swatch + 3 * pad
        height = len(legend) * line + pad
        x0, y1 = cols - pad - width, rows + header - pad
        y0 = y1 - height
        draw.rectangle((x0, y0, x0 + width, y1), fill=(10, 10, 14, 200))
        for index, (text, color) in enumerate(legend):
            y = y0 + pad // 2 + index * line + line // 2
            rgb = palette.to_rgb255(color)
            draw.rectangle((x0 + pad, y - swatch // 2, x0 + pad + swatch, y + swatch // 2), fill=rgb,
                           outline=(230, 230, 230))
            draw.text((x0 + 2 * pad + swatch, y), text, fill=(235, 235, 235), font=small, anchor="lm")

    # Scale bar, lower left of the picture.
    if mm_per_px is not None and mm_per_px > 0:
        length_mm = scale_bar_mm(mm_per_px, cols)
        length_px = length_mm / mm_per_px
        x0 = 2 * pad
        y = rows + header - 2 * pad
        thick = max(2, size // 6)
        label = f"{length_mm:g} mm"
        box_w = max(length_px, draw.textlength(label, font=small)) + 2 * pad
        draw.rectangle((x0 - pad, y - line - pad, x0 - pad + box_w, y + thick + pad), fill=(10, 10, 14, 200))
        draw.rectangle((x0, y, x0 + length_px, y + thick), fill=(255, 255, 255))
        for x in (x0, x0 + length_px):
            draw.rectangle((x - thick // 2, y - thick * 2, x + thick // 2, y + thick), fill=(255, 255, 255))
        draw.text((x0 + length_px / 2, y - thick * 2 - 2), label, fill=(255, 255, 255), font=small, anchor="mb")
    return np.asarray(image)


# ---------------------------------------------------------------- slices
def fit_plane(name: str, u, v, through, box, shape) -> slices.SlicePlane:
    """A :class:`~planner.scene.slices.SlicePlane` of ``shape`` (rows, cols) pixels with axes ``u``
    (screen right) and ``v`` (screen down), through the world point ``through``, centred on
    the projection of ``box``'s centre and showing all of ``box`` (square pixels)."""
    u = np.asarray(u, dtype=float) / np.linalg.norm(u)
    v = np.asarray(v, dtype=float) / np.linalg.norm(v)
    normal = np.cross(u, v)
    box = np.asarray(box, dtype=float)
    middle = box.mean(axis=0)
    centre = middle + ((np.asarray(through, dtype=float) - middle) @ normal) * normal
    corners = np.array([[x, y, z] for x in box[:, 0] for y in box[:, 1] for z in box[:, 2]]) - centre
    half_u = float(np.abs(corners @ u).max())
    half_v = float(np.abs(corners @ v).max())
    rows, cols = shape
    spacing = max(2 * half_u / max(cols - 1, 1), 2 * half_v / max(rows - 1, 1), 1e-6)
    origin = centre - 0.5 * (cols - 1) * spacing * u - 0.5 * (rows - 1) * spacing * v
    return slices.SlicePlane(name, origin, u, v, spacing, (int(rows), int(cols)))


def view_plane(scene: PlanScene, view: str, shape) -> slices.SlicePlane:
    """The plane of a slice ``view`` (axial, coronal, sagittal, probe) at ``shape`` pixels.

    Raises
    ------
    InputError
        ``probe`` for a plan without probes, or an unknown view.
    """
    if view in slices.ORTHOGONAL_PLANES:
        axes = slices.orthogonal_plane(view, scene.centre, scene.focus, max_pixels=8)
        return fit_plane(view, axes.u, axes.v, scene.centre, scene.focus, shape)
    if view == "probe":
        if not scene.probes:
            raise InputError("--views probe: the plan has no probe")
        probe = scene.probes[0]
        axes = slices.probe_plane(probe.tip, probe.entry, depth_direction=scene.probe_depth, max_pixels=8)
        return fit_plane("probe", axes.u, axes.v, probe.tip, scene.focus, shape)
    raise InputError(f"view: expected one of axial, coronal, sagittal, probe; got {view!r}")


def plane_geometry(plane: slices.SlicePlane) -> dict:
    """JSON-ready record of a slice plane (for :func:`world_to_pixel`)."""
    return {
        "kind": "slice",
        "plane": plane.name,
        "origin_mm": [float(v) for v in plane.origin],
        "u": [float(v) for v in plane.u],
        "v": [float(v) for v in plane.v],
        "mm_per_px": float(plane.spacing_mm),
        "shape": [int(plane.shape[0]), int(plane.shape[1])],
    }


def render_slice_view(scene: PlanScene, view: str, snapshot: int, shape) -> tuple[np.ndarray, slices.SlicePlane]:
    """A slice picture without the header: the image (or uniform grey), isotherm contours of
    ``snapshot``, vessels, nerves, probes and orientation letters.

    Returns
    -------
    (rgb, plane) : ((rows, cols, 3) uint8 ndarray, SlicePlane)
    """
    plane = view_plane(scene, view, shape)
    rows, cols = plane.shape
    if scene.volume is not None:
        values = slices.sample_plane(scene.volume, plane)
        rgb = slices.window_to_rgb(values, width=scene.window.width, level=scene.window.level)
    else:
        rgb = np.full((rows, cols, 3), HOMOGENEOUS_GREY, dtype=np.uint8)
    temperature = slices.sample_temperature_plane(scene.result, plane, snapshot=snapshot)
    thickness = max(2, int(round(rows / 400)))
    slices.paint_isotherms(rgb, temperature, scene.isotherms_c, thickness=thickness)
    for vessel in scene.vessels:
        slices.paint_tube(rgb, plane, slices.tube_overlay(vessel, palette.VESSEL_COLOR))
    for nerve in scene.nerves:
        slices.paint_tube(rgb, plane, slices.tube_overlay(nerve, palette.NERVE_COLOR))
    for probe in scene.probes:
        slices.paint_probe(rgb, plane, slices.probe_overlay(probe))
    scale = max(1, int(round(rows / 600)))
    rgb = slices.paint_text(rgb, plane, title="", note=None, scale=scale)
    return np.asarray(rgb, dtype=np.uint8), plane


# ---------------------------------------------------------------- 3D
class Scene3D:
    """The 3D view of a plan on one off-screen plotter, reused for every time.

    Shows the skin, bone and lung surfaces of the tissue map near the ice (cropped), the
    vessels, nerves and probes, and the isotherm surfaces of a snapshot, with a parallel
    projection framing :attr:`PlanScene.focus`. The camera looks down the first probe's
    approach, tilted a little (as :func:`planner.scene.view3d.approach_view`); of the tilts
    in :func:`view_candidates` it takes the one that shows most of the ice (bone can hide
    it from one side), so one plan's pictures all share one camera.

    Call :meth:`close` when done (frees the render window).
    """

    def __init__(self, scene: PlanScene, shape) -> None:
        from planner.scene import view3d

        self.scene = scene
        rows, cols = shape
        self.shape = (int(rows), int(cols))
        self.plotter = view3d.new_plotter(window_size=(self.shape[1], self.shape[0]), off_screen=True)
        view3d.build_scene(
            self.plotter,
            tissue_surfaces=self.tissue_surfaces(),
            vessels=scene.vessels,
            nerves=scene.nerves,
            probes=scene.probes,
            isotherm_levels_c=scene.isotherms_c,
            legend=False,
            note=False,
        )
        self.look_from(self._best_direction())

    def tissue_surfaces(self) -> dict:
        """Skin, bone and lung surfaces from the tissue map around the focus box (display only)."""
        scene = self.scene
        if scene.labels is None:
            return {}
        if scene._surfaces is None:
            from planner.anatomy import tissue_surfaces
            from planner.labels import Tissue
            from planner.scene import view3d

            cropped = crop_volume(scene.labels, grown_box(scene.focus, CONTEXT_FACTOR))
            if cropped is None:
                scene._surfaces = {}
            else:
                display = view3d.strided(cropped, max_voxels=TISSUE_DISPLAY_VOXELS)
                wanted = [Tissue[key.upper()] for key in view3d.DEFAULT_VISIBLE_TISSUES]
                scene._surfaces = tissue_surfaces(display, tissues=wanted)
        return scene._surfaces

    def _best_direction(self) -> np.ndarray:
        """The candidate direction that shows the most of the coldest reached ice.

        Each candidate is rendered small with the ice (the second-warmest isotherm, e.g.
        -20 degC, of the lowest temperature reached) painted flat green over the scene;
        the green pixels are counted. Ties keep the earlier candidate.
        """
        candidates = view_candidates(self.scene.probes)
        levels = sorted(self.scene.isotherms_c, reverse=True)
        if len(candidates) == 1 or not levels:
            return candidates[0]
        level = levels[1] if len(levels) > 1 else levels[0]
        surface = self.scene.result.isotherm_surface(level, "min")
        if surface.n_points == 0:
            return candidates[0]
        plotter = self.plotter
        actor = plotter.add_mesh(surface, color=(0.0, 1.0, 0.0), lighting=False, name="view-test",
                                 reset_camera=False, render=False)
        size = list(plotter.window_size)
        plotter.window_size = [max(self.shape[1] // 5, 64), max(self.shape[0] // 5, 48)]
        counts = []
        try:
            for direction in candidates:
                self.look_from(direction)
                plotter.render()
                image = np.asarray(plotter.screenshot(return_img=True)[..., :3], dtype=int)
                green = (image[..., 1] > 150) & (image[..., 0] < 110) & (image[..., 2] < 110)
                counts.append(int(green.sum()))
        finally:
            plotter.remove_actor(actor, render=False)
            plotter.window_size = size
        return candidates[int(np.argmax(counts))]

    def look_from(self, direction) -> dict:
        """Point the camera at the focus box from ``direction`` (world vector from the scene
        towards the camera), parallel projection framing the whole box; superior is up
        unless the camera looks along the body's long axis. Sets and returns
        :attr:`camera`, the picture's geometry record (:func:`world_to_pixel`)."""
        box = self.scene.focus
        direction = np.asarray(direction, dtype=float)
        direction /= np.linalg.norm(direction)
        up = np.array((0.0, -1.0, 0.0) if abs(direction[2]) > 0.9 else (0.0, 0.0, 1.0))
        up = up - (up @ direction) * direction
        up /= np.linalg.norm(up)
        right = np.cross(up, direction)  # screen right for a camera looking along -direction
        centre = box.mean(axis=0)
        corners = np.array([[x, y, z] for x in box[:, 0] for y in box[:, 1] for z in box[:, 2]]) - centre
        rows, cols = self.shape
        half_height = max(float(np.abs(corners @ up).max()), float(np.abs(corners @ right).max()) * rows / cols)
        size = float(np.linalg.norm(box[1] - box[0]))
        camera = self.plotter.camera
        camera.focal_point = tuple(centre)
        camera.position = tuple(centre + 2.0 * size * direction)
        camera.up = tuple(up)
        self.plotter.enable_parallel_projection()
        camera.parallel_scale = half_height
        self.plotter.reset_camera_clipping_range()
        self.camera = {
            "kind": "3d",
            "focal_point_mm": [float(v) for v in centre],
            "towards_camera": [float(v) for v in direction],
            "up": [float(v) for v in up],
            "right": [float(v) for v in right],
            "mm_per_px": 2.0 * half_height / rows,
            "shape": [rows, cols],
        }
        return self.camera

    def render(self, snapshot: int) -> np.ndarray:
        """RGB picture ``(rows, cols, 3)`` uint8 with the isotherms of ``snapshot``."""
        from planner.scene import view3d

        view3d.add_isotherms(self.plotter, view3d.isotherm_surfaces(self.scene.result, self.scene.isotherms_c,
                                                                    snapshot))
        self.plotter.reset_camera_clipping_range()
        # pyvista's screenshot returns the last frame as it was: render the new isotherms first.
        self.plotter.render()
        image = self.plotter.screenshot(return_img=True)
        return np.ascontiguousarray(image[..., :3], dtype=np.uint8)

    def close(self) -> None:
        self.plotter.close()


def view_candidates(probes) -> list[np.ndarray]:
    """Camera directions (from the scene towards the camera) tried for the 3D view.

    With probes: the first probe's approach (tip to entry) tilted by half its length to
    each of four sides, the viewer's default side first
    (:func:`planner.scene.view3d.approach_view`), then the approach itself. Without
    probes: from the front.
    """
    from planner.scene import view3d

    if not len(probes):
        return [np.asarray(view3d.VIEW_DIRECTIONS["anterior"], dtype=float)]
    default = np.asarray(view3d.approach_view(probes), dtype=float)
    approach = np.asarray(probes[0].entry, dtype=float) - np.asarray(probes[0].tip, dtype=float)
    approach /= np.linalg.norm(approach)
    side = default - approach
    side -= (side @ approach) * approach
    side /= np.linalg.norm(side)
    other = np.cross(approach, side)
    return [approach + 0.5 * side, approach - 0.5 * side, approach + 0.5 * other, approach - 0.5 * other,
            approach.copy()]


def grown_box(box, factor: float) -> np.ndarray:
    """``box`` (2, 3) scaled about its centre by ``factor``."""
    box = np.asarray(box, dtype=float)
    centre, half = box.mean(axis=0), (box[1] - box[0]) / 2
    return np.stack([centre - factor * half, centre + factor * half])


def crop_volume(volume, box):
    """The part of ``volume`` whose voxels lie in the world ``box`` (2, 3) mm (a view, affine
    shifted), or None when they do not overlap."""
    from planner.volume import Volume

    box = np.asarray(box, dtype=float)
    corners = np.array([[x, y, z] for x in box[:, 0] for y in box[:, 1] for z in box[:, 2]])
    ijk = volume.world_to_index(corners)
    upper = np.array(volume.shape_xyz) - 1
    start = np.clip(np.floor(ijk.min(axis=0)).astype(int), 0, upper)
    stop = np.clip(np.ceil(ijk.max(axis=0)).astype(int), 0, upper)
    if np.any(ijk.max(axis=0) < 0) or np.any(ijk.min(axis=0) > upper) or np.any(stop <= start):
        return None
    array = volume.array[start[2] : stop[2] + 1, start[1] : stop[1] + 1, start[0] : stop[0] + 1]
    affine = volume.affine.copy()
    affine[:3, 3] = volume.index_to_world(start.astype(float))
    return Volume(array, affine, modality=volume.modality, units=volume.units, metadata=dict(volume.metadata))


# ---------------------------------------------------------------- mapping
def world_to_pixel(geometry: dict, points) -> tuple[np.ndarray, np.ndarray]:
    """Pixel ``rows``, ``cols`` (fractional, in the whole image, header included) of world
    points ``(..., 3)`` mm in a picture described by ``geometry`` (a manifest entry's
    ``geometry``: a slice plane or a parallel-projection 3D camera)."""
    points = np.asarray(points, dtype=float)
    header = float(geometry.get("header_px", 0))
    scale = float(geometry["mm_per_px"])
    if geometry["kind"] == "slice":
        offset = points - np.asarray(geometry["origin_mm"])
        return offset @ np.asarray(geometry["v"]) / scale + header, offset @ np.asarray(geometry["u"]) / scale
    rows, cols = geometry["shape"]
    offset = points - np.asarray(geometry["focal_point_mm"])
    # Pixel centres: the focal point projects to the middle of the picture.
    row = (rows - 1) / 2 - offset @ np.asarray(geometry["up"]) / scale
    col = (cols - 1) / 2 + offset @ np.asarray(geometry["right"]) / scale
    return row + header, col


# ---------------------------------------------------------------- one picture
def render_view(scene: PlanScene, view: str, snapshot: int, *, size=(1600, 1200), scene3d: Scene3D | None = None):
    """One annotated picture of ``view`` at ``snapshot``.

    Parameters
    ----------
    scene : PlanScene
    view : {"3d", "axial", "coronal", "sagittal", "probe"}
    snapshot : int
        Index into ``scene.result.snapshot_times``.
    size : (width, height)
        Final image size, px (header included).
    scene3d : Scene3D, optional
        A 3D scene to reuse (made and closed here when not given).

    Returns
    -------
    (rgb, geometry) : ((height, width, 3) uint8 ndarray, dict)
        ``geometry`` maps world points to pixels (:func:`world_to_pixel`).
    """
    width, height = size
    header = header_height_px(height)
    shape = (height - header, width)
    time_s = float(scene.result.snapshot_times[snapshot])
    if view == "3d":
        own = scene3d is None
        scene3d = scene3d or Scene3D(scene, shape)
        try:
            picture = scene3d.render(snapshot)
            geometry = dict(scene3d.camera)
        finally:
            if own:
                scene3d.close()
    else:
        picture, plane = render_slice_view(scene, view, snapshot, shape)
        geometry = plane_geometry(plane)
    geometry["header_px"] = header
    subtitle = f"{view_label(view)}  |  t = {time_s:g} s ({phase_at(scene.protocol, time_s)})"
    if view == "3d":
        subtitle += "  |  scale at the focal plane"
    rgb = compose(picture, title=scene.title, subtitle=subtitle, mm_per_px=geometry["mm_per_px"],
                  legend=legend_items(scene), header_px=header)
    return rgb, geometry
