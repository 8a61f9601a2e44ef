"""planner.scene: world-oriented slices with overlays, and the 3D scene rendered off screen."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from planner.scene import palette, slices
from planner.volume import Volume, affine_from_geometry


def _rotation(axis, angle_deg):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.radians(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def _linear_volume(direction):
    """A volume whose value at every voxel centre is f(x, y, z) = x + 2y + 3z (world mm)."""
    affine = affine_from_geometry((0.8, 0.9, 1.1), (-10.0, 5.0, -20.0), direction)
    shape = (30, 32, 34)  # (k, j, i)
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    world = np.stack([i, j, k], axis=-1) @ affine[:3, :3].T + affine[:3, 3]
    values = world[..., 0] + 2 * world[..., 1] + 3 * world[..., 2]
    return Volume(values.astype(np.float32), affine, modality="CT", units="HU")


# ---------------------------------------------------------------- planes
@pytest.mark.parametrize("name, u, v, letters", [
    ("axial", (1, 0, 0), (0, 1, 0), {"left": "R", "right": "L", "top": "A", "bottom": "P"}),
    ("coronal", (1, 0, 0), (0, 0, -1), {"left": "R", "right": "L", "top": "S", "bottom": "I"}),
    ("sagittal", (0, 1, 0), (0, 0, -1), {"left": "A", "right": "P", "top": "S", "bottom": "I"}),
])
def test_orthogonal_planes_are_world_aligned_radiological_views(name, u, v, letters):
    bounds = np.array([[-50.0, -40.0, -30.0], [50.0, 40.0, 30.0]])
    point = np.array([1.0, 2.0, 3.0])
    plane = slices.orthogonal_plane(name, point, bounds, spacing_mm=0.5)
    np.testing.assert_allclose(plane.u, u)
    np.testing.assert_allclose(plane.v, v)
    assert plane.edge_letters() == letters
    # The plane passes through the point, and pixels map back and forth exactly.
    _, _, distance = plane.world_to_pixel(point)
    assert abs(distance) < 1e-9
    rows, cols, _ = plane.world_to_pixel(plane.pixel_to_world(np.array([3.0, 7.5]), np.array([11.0, 0.25])))
    np.testing.assert_allclose(rows, [3.0, 7.5])
    np.testing.assert_allclose(cols, [11.0, 0.25])
    # The picture spans the box: its corners are on the box's faces.
    corners = plane.pixel_to_world(np.array([0, plane.shape[0] - 1]), np.array([0, plane.shape[1] - 1]))
    u_axis, v_axis = int(np.argmax(np.abs(u))), int(np.argmax(np.abs(v)))
    assert {round(c, 6) for c in corners[:, u_axis]} == {bounds[0, u_axis], bounds[1, u_axis]}
    assert {round(c, 6) for c in corners[:, v_axis]} == {bounds[0, v_axis], bounds[1, v_axis]}


def test_unknown_plane_name_is_an_input_error():
    from planner.errors import InputError

    with pytest.raises(InputError, match="axial, coronal, sagittal"):
        slices.orthogonal_plane("oblique", (0, 0, 0), [[0, 0, 0], [1, 1, 1]])


@pytest.mark.parametrize("tip, entry", [
    ((0.0, 0.0, 0.0), (10.0, -30.0, 5.0)),
    ((5.0, 5.0, 5.0), (5.0, 5.0, 45.0)),  # straight down the z axis
    ((0.0, 0.0, 0.0), (40.0, 0.0, 0.0)),  # along x
])
def test_probe_plane_holds_the_shaft_and_shows_it_going_down_from_the_entry(tip, entry):
    plane = slices.probe_plane(tip, entry, spacing_mm=0.25)
    rows, cols, distance = plane.world_to_pixel(np.array([tip, entry]))
    np.testing.assert_allclose(distance, 0.0, atol=1e-9)
    assert rows[0] >= rows[1]  # the tip is not above the entry in the picture
    assert 0 <= rows.min() and rows.max() < plane.shape[0] and 0 <= cols.min() and cols.max() < plane.shape[1]
    assert abs(np.dot(plane.u, plane.v)) < 1e-9


def test_probe_plane_uses_the_given_depth_direction():
    tip, entry = np.array([0.0, 0.0, 0.0]), np.array([20.0, -20.0, 0.0])
    plane = slices.probe_plane(tip, entry, depth_direction=(0.0, 1.0, 0.0))
    np.testing.assert_allclose(plane.v, (0.0, 1.0, 0.0), atol=1e-12)  # depth is down the picture
    np.testing.assert_allclose(np.abs(plane.u), (1.0, 0.0, 0.0), atol=1e-12)


# ---------------------------------------------------------------- sampling
@pytest.mark.parametrize("direction", [np.eye(3), _rotation((1, 2, 3), 25.0), np.diag([1.0, -1.0, -1.0])])
def test_slices_resample_oblique_volumes_in_world_orientation(direction):
    volume = _linear_volume(direction)
    centre = volume.index_to_world(np.array(volume.shape_xyz) / 2)
    for name in slices.ORTHOGONAL_PLANES:
        plane = slices.orthogonal_plane(name, centre, volume.bounds_world(), spacing_mm=0.7)
        values = slices.sample_plane(volume, plane)
        world = plane.pixel_centres()
        expected = world[..., 0] + 2 * world[..., 1] + 3 * world[..., 2]
        inside = volume.contains(world.reshape(-1, 3)).reshape(plane.shape)
        assert inside.mean() > 0.2
        # Trilinear interpolation of a linear function is exact inside the voxel centres.
        np.testing.assert_allclose(values[inside], expected[inside], rtol=0, atol=1e-3)
        # Far outside the volume: no value.
        far = ~volume.contains(world.reshape(-1, 3), margin_voxels=0.6).reshape(plane.shape)
        assert np.all(np.isnan(values[far]))


def test_single_slice_volume_shows_within_half_its_thickness():
    frame = Volume(np.full((1, 10, 12), 200, np.uint8), affine_from_geometry((0.5, 0.5, 2.0), (0, 0, 0)), modality="US")
    near = slices.orthogonal_plane("axial", (0, 0, 0.9), [[0, 0, 0], [5.5, 4.5, 0]], spacing_mm=0.5)
    far = slices.orthogonal_plane("axial", (0, 0, 1.1), [[0, 0, 0], [5.5, 4.5, 0]], spacing_mm=0.5)
    assert np.all(slices.sample_plane(frame, near) == 200)
    assert np.all(np.isnan(slices.sample_plane(frame, far)))


def test_window_maps_level_and_width_to_grey():
    rgb = slices.window_to_rgb(np.array([[-160.0, 40.0, 240.0, np.nan]]), width=400, level=40)
    assert rgb[0, :, 0].tolist() == [0, 128, 255, 0]
    assert np.all(rgb[..., 0] == rgb[..., 2])


# ---------------------------------------------------------------- overlays
def _colour_pixels(rgb, color, tolerance=10):
    return np.all(np.abs(rgb.astype(int) - palette.to_rgb255(color)) <= tolerance, axis=-1)


def test_isotherm_contours_lie_at_the_right_radius_in_their_colours():
    size = 121
    rows, cols = np.mgrid[0:size, 0:size]
    radius = np.hypot(rows - 60, cols - 60)
    temperature = -60.0 + 2.0 * radius  # -40 degC at 10 px, -20 at 20 px, 0 at 30 px
    rgb = np.zeros((size, size, 3), np.uint8)
    slices.paint_isotherms(rgb, temperature, (0.0, -20.0, -40.0), fill_alpha=0.0)
    for level, expected_radius in ((-40.0, 10), (-20.0, 20), (0.0, 30)):
        hits = _colour_pixels(rgb, palette.isotherm_color(level))
        assert hits.sum() > 2 * np.pi * expected_radius * 0.8
        np.testing.assert_allclose(np.median(radius[hits]), expected_radius, atol=1.6)


def test_nerve_cross_section_is_a_yellow_disc_of_its_radius():
    nerve = slices.TubeOverlay("n", np.array([[3.0, -4.0, -20.0], [3.0, -4.0, 20.0]]), np.array([2.0, 2.0]),
                               palette.NERVE_COLOR)
    plane = slices.orthogonal_plane("axial", (0, 0, 0), [[-15, -15, 0], [15, 15, 0]], spacing_mm=0.1)
    rgb = np.zeros(plane.shape + (3,), np.uint8)
    slices.paint_tube(rgb, plane, nerve, alpha=1.0)
    yellow = _colour_pixels(rgb, palette.NERVE_COLOR)
    rim = _colour_pixels(rgb, tuple(0.5 * c for c in palette.NERVE_COLOR))
    area = (yellow | rim).sum() * 0.1**2
    np.testing.assert_allclose(area, np.pi * 2.0**2, rtol=0.1)
    rows, cols = np.nonzero(yellow | rim)
    centre = plane.pixel_to_world(rows.mean(), cols.mean())
    np.testing.assert_allclose(centre[:2], (3.0, -4.0), atol=0.1)
    # A sagittal plane 3 mm from the nerve's axis (more than its radius) does not cut it.
    aside = slices.orthogonal_plane("sagittal", (6.0, 0, 0), [[-15, -15, -15], [15, 15, 15]], spacing_mm=0.1)
    rgb = np.zeros(aside.shape + (3,), np.uint8)
    slices.paint_tube(rgb, aside, nerve)
    assert not rgb.any()


def test_probe_shows_its_active_segment_only_where_the_plane_cuts_it():
    from planner.thermal.probes import PlacedProbe, ProbeBoundary

    probe = PlacedProbe("A", tip=(0.0, 0.0, 0.0), entry=(0.0, 0.0, 60.0), diameter_mm=2.0, active_length_mm=10.0,
                        boundary=ProbeBoundary("temperature", freeze_temperature=-80.0, cooldown_time=5.0))
    overlay = slices.probe_overlay(probe)
    bounds = [[-10, -10, -5], [10, 10, 65]]
    through_active = slices.orthogonal_plane("axial", (0, 0, 5.0), bounds, spacing_mm=0.1)
    through_shaft = slices.orthogonal_plane("axial", (0, 0, 30.0), bounds, spacing_mm=0.1)
    along = slices.orthogonal_plane("coronal", (0, 0, 0), bounds, spacing_mm=0.1)
    pictures = {}
    for key, plane in (("active", through_active), ("shaft", through_shaft), ("along", along)):
        rgb = np.zeros(plane.shape + (3,), np.uint8)
        slices.paint_probe(rgb, plane, overlay)
        pictures[key] = (rgb, plane)
    cyan = {k: _colour_pixels(rgb, palette.PROBE_ACTIVE_COLOR).sum() for k, (rgb, _) in pictures.items()}
    grey = {k: _colour_pixels(rgb, palette.PROBE_SHAFT_COLOR).sum() for k, (rgb, _) in pictures.items()}
    np.testing.assert_allclose(cyan["active"] * 0.01, np.pi, rtol=0.15)  # the 1 mm radius disc
    assert cyan["shaft"] == 0 and grey["shaft"] > 200
    # In a plane along the shaft: a 10 mm cyan stretch with rounded ends (the union of
    # spheres adds a disc of the radius) and 50 mm of grey, 2 mm wide.
    np.testing.assert_allclose(cyan["along"] * 0.01, 10 * 2 + np.pi, rtol=0.1)
    np.testing.assert_allclose(grey["along"] * 0.01, 50 * 2, rtol=0.1)


def test_render_slice_draws_everything_and_the_note():
    volume = _linear_volume(_rotation((0, 0, 1), 15.0))
    centre = volume.index_to_world(np.array(volume.shape_xyz) / 2)
    plane = slices.orthogonal_plane("axial", centre, volume.bounds_world(), max_pixels=200)
    radius = np.linalg.norm(plane.pixel_centres() - centre, axis=-1)
    temperature = -50.0 + 4.0 * radius  # ice around the centre
    rgb = slices.render_slice(volume, plane, window=200, level=0, temperature=temperature, crosshair=centre)
    assert rgb.shape == plane.shape + (3,) and rgb.dtype == np.uint8
    assert _colour_pixels(rgb, palette.isotherm_color(-20.0)).sum() > 20
    assert _colour_pixels(rgb, palette.CROSSHAIR_COLOR, tolerance=60).sum() > 50
    # The note's orange text sits at the bottom right.
    orange = (rgb[..., 0] > 200) & (rgb[..., 1] > 140) & (rgb[..., 1] < 220) & (rgb[..., 2] < 160)
    assert orange[-40:, plane.shape[1] // 3 :].sum() > 30
    png = slices.encode_png(rgb)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_sample_temperature_reads_the_solver_grid_and_is_body_temperature_outside():
    from planner.thermal.grid import ThermalGrid
    from planner.thermal.result import ThermalResult

    grid = ThermalGrid.uniform((10, 12, 14), 1.0, origin=(5.0, 0.0, 0.0), direction=_rotation((0, 1, 0), 30.0))
    centres = grid.local_to_world(grid.cell_centres_local())
    field = (centres[..., 0] - 2 * centres[..., 2]).astype(np.float32)  # linear in world mm
    result = ThermalResult(grid, np.array([60.0]), field[None], field, {}, {}, 0.0, 1, 1.0, "test")
    points = grid.local_to_world(np.array([[3.3, 4.1, 5.2], [7.0, 2.5, 4.5], [100.0, 0.0, 0.0]]))
    values = slices.sample_temperature(result, points, snapshot=0)
    np.testing.assert_allclose(values[:2], points[:2, 0] - 2 * points[:2, 2], atol=1e-3)
    assert values[2] == 37.0
    plane = slices.probe_plane(points[0], points[1], spacing_mm=0.5, min_size_mm=8, margin_mm=1)
    on_plane = slices.sample_temperature_plane(result, plane, snapshot=0)
    np.testing.assert_allclose(on_plane, slices.sample_temperature(result, plane.pixel_centres(), snapshot=0),
                               atol=1e-4)


def test_palette_isotherm_colours_are_distinct_and_in_the_legend():
    colours = [palette.isotherm_color(level) for level in (0.0, -20.0, -40.0)]
    assert len({palette.to_hex(c) for c in colours + [palette.NERVE_COLOR, palette.VESSEL_COLOR,
                                                      palette.PROBE_SHAFT_COLOR, palette.PROBE_ACTIVE_COLOR]}) == 7
    texts = [text for text, _ in palette.legend_entries()]
    assert texts[:3] == ["0 \N{DEGREE SIGN}C", "-20 \N{DEGREE SIGN}C", "-40 \N{DEGREE SIGN}C"]
    assert palette.isotherm_color(-30.0) in colours  # other levels borrow the nearest colour
    assert palette.default_window("CT").name == "soft tissue"
    assert palette.default_window("US").name == "ultrasound"


def test_import_planner_scene_loads_no_rendering_library():
    code = ("import sys, planner.scene; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('pyvista', 'vtk', 'vtkmodules', 'trame')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout + completed.stderr


# ---------------------------------------------------------------- 3D
@pytest.fixture(scope="module")
def pv():
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    return pytest.importorskip("pyvista")


def test_3d_scene_shows_isotherm_colours_at_the_probe_and_a_yellow_nerve(pv):
    from planner.scene import view3d
    from planner.thermal.probes import PlacedProbe, ProbeBoundary

    probe = PlacedProbe("A", tip=(0.0, 0.0, 0.0), entry=(0.0, -40.0, 0.0), diameter_mm=2.0, active_length_mm=8.0,
                        boundary=ProbeBoundary("temperature", freeze_temperature=-80.0, cooldown_time=5.0))
    nerve = slices.TubeOverlay("n", np.array([[-30.0, 0.0, 12.0], [30.0, 0.0, 12.0]]), np.array([1.5, 1.5]),
                               palette.NERVE_COLOR)
    isotherms = {level: pv.Sphere(radius=radius, center=(0, -4.0, 0), theta_resolution=40, phi_resolution=40)
                 for level, radius in ((0.0, 9.0), (-20.0, 6.0), (-40.0, 4.0))}
    plotter = view3d.new_plotter(window_size=(400, 300))
    view3d.build_scene(plotter, nerves=[nerve], probes=[probe], isotherms=isotherms, legend=True, note=True)
    view3d.frame_bounds(plotter, [[-25, -25, -25], [25, 25, 25]], view="posterior")
    image = plotter.screenshot(return_img=True)
    plotter.close()
    assert image.std() > 10  # not blank
    # The view looks along +y at the origin: the centre shows the ice ball (bluish), the nerve
    # runs across above it (yellow).
    centre = image[140:160, 190:210].reshape(-1, 3).astype(int).mean(axis=0)
    assert centre[2] > centre[0] + 30, centre
    yellow = (image[..., 0] > 150) & (image[..., 1] > 120) & (image[..., 2] < 90)
    rows, cols = np.nonzero(yellow)
    assert yellow.sum() > 200 and rows.mean() < 150  # above the centre (superior is up)


def test_volume_rendering_keeps_an_oblique_volume_where_it_is(pv):
    from planner.scene import view3d

    direction = _rotation((0, 0, 1), 30.0)
    affine = affine_from_geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), direction)
    array = np.full((40, 40, 40), -1000, np.int16)
    array[5:15, 5:15, 25:35] = 1500  # a bone block near i = 30, j = 10, k = 10
    volume = Volume(array, affine, modality="CT", units="HU")
    block = volume.index_to_world([30.0, 10.0, 10.0])
    plotter = view3d.new_plotter(window_size=(300, 300))
    view3d.add_volume(plotter, volume, preset="CT bone")
    view3d.frame_bounds(plotter, volume.bounds_world(), view="superior")
    plotter.camera.parallel_projection = True
    image = plotter.screenshot(return_img=True)
    # Where the block's centre projects, the picture is bright.
    plotter.renderer.SetWorldPoint(*block, 1.0)
    plotter.renderer.WorldToDisplay()
    x, y, _ = plotter.renderer.GetDisplayPoint()
    plotter.close()
    row, col = int(round(image.shape[0] - 1 - y)), int(round(x))
    patch = image[row - 3 : row + 4, col - 3 : col + 4].astype(int)
    assert patch.mean() > 100, patch.mean()
    assert image.astype(int).mean() < 60  # the rest is mostly empty
