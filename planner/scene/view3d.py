"""3D scene content on a ``pyvista.Plotter``: volume rendering, tissue surfaces, nerves,
vessels, probes, isotherm surfaces, legend and the not-for-clinical-use note.

Every ``add_*`` function takes plain data and a plotter, names its actors (so calling it
again replaces them: the viewer updates one layer without rebuilding the scene) and
returns the actors it added. Colours come from :mod:`planner.scene.palette`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from planner.errors import InputError
from planner.scene import palette

if TYPE_CHECKING:  # pragma: no cover
    import pyvista

BACKGROUND = (0.08, 0.09, 0.12)
DEFAULT_VISIBLE_TISSUES = ("skin", "bone", "lung")
"""Tissue surfaces shown at first: the skin (translucent) for orientation, bone and lung as
the structures to avoid. Fat and muscle hide the nerve; the user can turn them on."""


def new_plotter(*, window_size=(800, 600), off_screen: bool = True, interactive: bool = False) -> "pyvista.Plotter":
    """An empty plotter with the scene's background, lighting and camera defaults.

    ``interactive=True`` attaches a trackball interactor that is never started, so a
    remote view (trame) can forward mouse events to it while rendering off screen.
    """
    import pyvista as pv

    plotter = pv.Plotter(off_screen=off_screen, window_size=list(window_size))
    plotter.set_background(BACKGROUND)
    # No depth peeling: on a software renderer it multiplies the frame time; translucent
    # shells are sorted well enough for a few nested surfaces.
    if interactive:
        # 4x multisampling (pyvista's default) costs ~2.5x the frame time on a software
        # renderer (demo: 260 -> 108 ms per frame at 900x640): off while the view is turned.
        plotter.render_window.SetMultiSamples(0)
        from vtkmodules.vtkInteractionStyle import vtkInteractorStyleTrackballCamera
        from vtkmodules.vtkRenderingCore import vtkRenderWindowInteractor

        interactor = vtkRenderWindowInteractor()
        interactor.SetRenderWindow(plotter.render_window)
        interactor.SetInteractorStyle(vtkInteractorStyleTrackballCamera())
        plotter._cryoplan_interactor = interactor  # keep it alive with the plotter
    return plotter


def remove_layer(plotter, prefix: str) -> None:
    """Remove every actor whose name starts with ``prefix``."""
    for name in [name for name in plotter.actors if name.startswith(prefix)]:
        plotter.remove_actor(name, render=False)


# ---------------------------------------------------------------- volume
def strided(volume, *, max_voxels: int = 1_000_000):
    """``volume`` with every n-th voxel along each axis (n the smallest stride that brings it
    under ``max_voxels``), affine adjusted; the volume itself when it is small enough.

    Nearest-neighbour by construction, so label maps stay label maps. For display only
    (3D surfaces and volume rendering at interactive speed).
    """
    from planner.volume import Volume

    source = volume.frame(0) if volume.is_cine else volume
    stride = 1
    while np.prod([-(-n // stride) for n in source.array.shape]) > max_voxels:
        stride += 1
    if stride == 1:
        return source
    affine = source.affine.copy()
    affine[:3, :3] = affine[:3, :3] * stride
    return Volume(source.array[::stride, ::stride, ::stride], affine, modality=source.modality,
                  units=source.units, metadata={**source.metadata, "display_stride": stride})


def add_volume(plotter, volume, *, preset: str | None = None, name: str = "volume", max_voxels: int = 1_500_000):
    """Volume-render ``volume`` with a preset of :data:`palette.VOLUME_PRESETS`.

    The image keeps its direction matrix (VTK's ray caster honours it), so an oblique
    CT sits where its slices do. ``preset=None`` picks the modality's default; a cine
    loop renders its first frame; a volume over ``max_voxels`` is rendered from every n-th
    voxel (see :func:`strided`) to keep software rendering interactive. Returns the
    ``vtkVolume`` (None when no preset fits).
    """
    from vtkmodules.vtkRenderingCore import vtkColorTransferFunction, vtkVolume, vtkVolumeProperty
    from vtkmodules.vtkCommonDataModel import vtkPiecewiseFunction
    from vtkmodules.vtkRenderingVolumeOpenGL2 import vtkSmartVolumeMapper

    plotter.remove_actor(name, render=False)
    preset = preset or palette.default_volume_preset(volume.modality)
    if preset is None:
        return None
    if preset not in palette.VOLUME_PRESETS:
        raise InputError(f"volume preset: expected one of {', '.join(palette.VOLUME_PRESETS)}, got {preset!r}")
    chosen = palette.VOLUME_PRESETS[preset]
    source = strided(volume, max_voxels=max_voxels)
    array = source.array
    if array.dtype not in (np.uint8, np.int16, np.uint16, np.float32):
        array = array.astype(np.float32)
    grid = source.to_pyvista("values")
    grid.point_data["values"] = np.ascontiguousarray(array).ravel(order="C")
    colors = vtkColorTransferFunction()
    for value, rgb in chosen.colors:
        colors.AddRGBPoint(float(value), *rgb)
    opacity = vtkPiecewiseFunction()
    for value, alpha in chosen.opacity:
        opacity.AddPoint(float(value), float(alpha))
    prop = vtkVolumeProperty()
    prop.SetColor(colors)
    prop.SetScalarOpacity(opacity)
    prop.SetInterpolationTypeToLinear()
    if chosen.shade:
        prop.ShadeOn()
        prop.SetAmbient(0.3)
        prop.SetDiffuse(0.7)
        prop.SetSpecular(0.1)
    mapper = vtkSmartVolumeMapper()
    mapper.SetInputData(grid)
    mapper.SetAutoAdjustSampleDistances(True)  # coarser rays while the camera moves
    actor = vtkVolume()
    actor.SetMapper(mapper)
    actor.SetProperty(prop)
    plotter.add_actor(actor, name=name, reset_camera=False, render=False)
    actor._cryoplan_grid = grid  # keep the data alive with the actor
    return actor


# ---------------------------------------------------------------- surfaces
def add_tissue_surfaces(plotter, surfaces: dict, *, visible=None, prefix: str = "tissue:") -> dict:
    """Add tissue surfaces (``{tissue key: PolyData}``, e.g. from
    :func:`planner.anatomy.tissue_surfaces`) in the palette's colours and opacities.

    ``visible``: the keys to show (default: :data:`DEFAULT_VISIBLE_TISSUES`; nerve and
    vessel have their own tubes). Returns ``{key: actor}``; hidden ones are added with visibility off so a
    toggle costs no rebuild.
    """
    from planner.labels import Tissue

    remove_layer(plotter, prefix)
    actors = {}
    for key, surface in surfaces.items():
        if surface.n_points == 0:
            continue
        try:
            label = int(Tissue[key.upper()])
        except KeyError:
            label = None
        color = palette.TISSUE_COLORS.get(label, (0.7, 0.7, 0.7))
        opacity = palette.TISSUE_OPACITY.get(label, 0.3)
        actor = plotter.add_mesh(surface, color=color, opacity=opacity, name=f"{prefix}{key}", smooth_shading=True,
                                 reset_camera=False, render=False, pickable=False)
        show = key in (DEFAULT_VISIBLE_TISSUES if visible is None else visible)
        actor.SetVisibility(bool(show))
        actors[key] = actor
    return actors


def set_tissue_visibility(plotter, visible, *, prefix: str = "tissue:") -> None:
    """Show the tissue surfaces whose keys are in ``visible``; hide the others."""
    for name, actor in plotter.actors.items():
        if name.startswith(prefix):
            actor.SetVisibility(name[len(prefix):] in visible)


def _tube_mesh(points, radii, *, n_sides: int = 20):
    import pyvista as pv

    line = pv.lines_from_points(np.asarray(points, dtype=float))
    radii = np.asarray(radii, dtype=float)
    if np.allclose(radii, radii[0]):
        return line.tube(radius=float(radii[0]), n_sides=n_sides, capping=True)
    line.point_data["radius_mm"] = radii
    return line.tube(scalars="radius_mm", absolute=True, n_sides=n_sides, capping=True)


def add_lines(plotter, lines, *, color, prefix: str, opacity: float = 1.0) -> list:
    """Add centreline objects (nerves, vessels: anything :func:`~planner.scene.slices.tube_overlay`
    takes) as tubes of their radius, in ``color``. Replaces the ``prefix`` layer."""
    from planner.scene.slices import tube_overlay

    remove_layer(plotter, prefix)
    actors = []
    for index, line in enumerate(lines):
        tube = tube_overlay(line, color)
        if len(tube.points) < 2:
            continue
        mesh = _tube_mesh(tube.points, tube.radii)
        actors.append(plotter.add_mesh(mesh, color=color, opacity=opacity, name=f"{prefix}{index}",
                                       smooth_shading=True, reset_camera=False, render=False, pickable=False))
    return actors


def add_nerves(plotter, nerves, *, prefix: str = "nerve:") -> list:
    """Nerves as yellow tubes."""
    return add_lines(plotter, nerves, color=palette.NERVE_COLOR, prefix=prefix)


def add_vessels(plotter, vessels, *, prefix: str = "vessel:") -> list:
    """Vessels as red tubes."""
    return add_lines(plotter, vessels, color=palette.VESSEL_COLOR, prefix=prefix)


def add_probes(plotter, probes, *, selected: int | None = None, prefix: str = "probe:") -> list:
    """Probes (:class:`planner.thermal.probes.PlacedProbe`) as grey shafts with the active
    segment in cyan-blue; the ``selected`` one gets an orange tip marker."""
    import pyvista as pv

    remove_layer(plotter, prefix)
    actors = []
    for index, probe in enumerate(probes):
        tip, entry = np.asarray(probe.tip, float), np.asarray(probe.entry, float)
        start, end = probe.active_segment()
        radius = float(probe.radius_mm)
        shaft = pv.Cylinder(center=(tip + entry) / 2, direction=tip - entry, radius=radius * 0.98,
                            height=float(np.linalg.norm(tip - entry)), resolution=24)
        active = pv.Cylinder(center=(start + end) / 2, direction=end - start, radius=radius * 1.06,
                             height=float(np.linalg.norm(end - start)), resolution=24)
        actors.append(plotter.add_mesh(shaft, color=palette.PROBE_SHAFT_COLOR, name=f"{prefix}{index}:shaft",
                                       specular=0.5, reset_camera=False, render=False, pickable=False))
        actors.append(plotter.add_mesh(active, color=palette.PROBE_ACTIVE_COLOR, name=f"{prefix}{index}:active",
                                       reset_camera=False, render=False, pickable=False))
        if selected == index:
            marker = pv.Sphere(radius=max(1.5 * radius, 1.0), center=tip)
            actors.append(plotter.add_mesh(marker, color=palette.PROBE_SELECTED_COLOR, name=f"{prefix}{index}:tip",
                                           reset_camera=False, render=False, pickable=False))
    return actors


def add_isotherms(plotter, surfaces: dict, *, prefix: str = "isotherm:") -> list:
    """Isotherm surfaces ``{level degC: PolyData}`` (e.g. from
    ``ThermalResult.isotherm_surface``) in their fixed colours; colder levels drawn last."""
    remove_layer(plotter, prefix)
    actors = []
    for level in sorted(surfaces, reverse=True):
        surface = surfaces[level]
        if surface is None or surface.n_points == 0:
            continue
        actors.append(plotter.add_mesh(surface, color=palette.isotherm_color(level),
                                       opacity=palette.isotherm_opacity(level), name=f"{prefix}{level:g}",
                                       smooth_shading=True, reset_camera=False, render=False, pickable=False))
    return actors


def isotherm_surfaces(result, levels_c, snapshot: int | str = -1) -> dict:
    """``{level: PolyData}`` of a ThermalResult's isotherms at ``snapshot``, smoothed lightly for display."""
    out = {}
    for level in levels_c:
        surface = result.isotherm_surface(float(level), snapshot)
        if surface.n_points:
            surface = surface.smooth_taubin(n_iter=15, pass_band=0.1)
        out[float(level)] = surface
    return out


def add_legend(plotter, levels_c=(0.0, -20.0, -40.0), *, name: str = "legend"):
    """A legend of the isotherm colours and the structures' colours (lower right)."""
    plotter.remove_actor(name, render=False)
    entries = [[text, color] for text, color in palette.legend_entries(levels_c)]
    legend = plotter.add_legend(entries, bcolor=(0.1, 0.1, 0.1), border=False, size=(0.17, 0.22),
                                loc="lower right", face="rectangle", name=name)
    return legend


def add_note(plotter, text: str = palette.NOTE, *, name: str = "note"):
    """The not-for-clinical-use note (upper left), always on."""
    return plotter.add_text(text, position="upper_left", font_size=10, color=(1.0, 0.75, 0.45), name=name)


VIEW_DIRECTIONS = {
    "anterior": (0.0, -1.0, 0.0),
    "posterior": (0.0, 1.0, 0.0),
    "left": (1.0, 0.0, 0.0),
    "right": (-1.0, 0.0, 0.0),
    "superior": (0.0, 0.0, 1.0),
}
"""Named camera directions (from the focal point towards the camera), world LPS."""


def frame_bounds(plotter, bounds, *, view="anterior") -> None:
    """Point the camera at a world box ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]``.

    ``view``: a name of :data:`VIEW_DIRECTIONS` or a world vector from the box towards the
    camera (e.g. from a probe's tip towards its entry, to look down the approach). Superior
    is up unless the camera looks along the body's long axis.
    """
    bounds = np.asarray(bounds, dtype=float)
    centre = bounds.mean(axis=0)
    size = float(np.linalg.norm(bounds[1] - bounds[0]))
    direction = np.asarray(VIEW_DIRECTIONS[view] if isinstance(view, str) else view, dtype=float)
    direction = direction / np.linalg.norm(direction)
    up = (0.0, -1.0, 0.0) if abs(direction[2]) > 0.9 else (0.0, 0.0, 1.0)
    camera = plotter.camera
    camera.focal_point = tuple(centre)
    camera.position = tuple(centre + 1.6 * size * direction)
    camera.up = up
    plotter.reset_camera_clipping_range()


def approach_view(probes):
    """Camera direction for a scene: mostly along the first probe's approach (from its tip
    towards its entry), tilted a little so the shaft does not point at the viewer;
    ``"anterior"`` without probes."""
    if not len(probes):
        return "anterior"
    probe = probes[0]
    approach = np.asarray(probe.entry, float) - np.asarray(probe.tip, float)
    approach /= np.linalg.norm(approach)
    side = np.cross(approach, (0.0, 0.0, 1.0))
    if np.linalg.norm(side) < 1e-6:
        side = np.array([1.0, 0.0, 0.0])
    return approach + 0.5 * side / np.linalg.norm(side)


def build_scene(
    plotter,
    *,
    volume=None,
    volume_preset: str | None = None,
    tissue_surfaces: dict | None = None,
    visible_tissues=None,
    nerves=(),
    vessels=(),
    probes=(),
    selected_probe: int | None = None,
    isotherms: dict | None = None,
    isotherm_levels_c=(0.0, -20.0, -40.0),
    legend: bool = True,
    note: bool = True,
) -> "pyvista.Plotter":
    """Fill ``plotter`` with a whole scene (headless export and the viewer's first frame).

    Parameters mirror the ``add_*`` functions; ``volume_preset="off"`` skips volume
    rendering. The camera frames the volume (or the probes) from the side the first probe
    enters (:func:`approach_view`), else from the front.
    """
    if volume is not None and volume_preset != "off":
        add_volume(plotter, volume, preset=volume_preset)
    if tissue_surfaces:
        add_tissue_surfaces(plotter, tissue_surfaces, visible=visible_tissues)
    add_vessels(plotter, vessels)
    add_nerves(plotter, nerves)
    add_probes(plotter, probes, selected=selected_probe)
    if isotherms:
        add_isotherms(plotter, isotherms)
    if legend:
        add_legend(plotter, isotherm_levels_c)
    if note:
        add_note(plotter)
    if volume is not None:
        frame_bounds(plotter, volume.bounds_world(), view=approach_view(probes))
    elif len(probes):
        points = np.array([p.tip for p in probes] + [p.entry for p in probes], dtype=float)
        frame_bounds(plotter, np.stack([points.min(axis=0) - 20, points.max(axis=0) + 20]))
    return plotter
