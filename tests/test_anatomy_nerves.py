"""Nerves from label maps (skeleton), from clicked points (minimal-cost trace) and polylines."""

import numpy as np
import pytest

from planner.anatomy import Nerve, nerve_from_polyline, nerves_from_labels, trace_nerve
from planner.errors import InputError
from planner.labels import Tissue
from planner.plan import PlanNerve
from planner.volume import Volume, affine_from_geometry

from geometry import rotation


AXIS_ALIGNED = affine_from_geometry((0.5, 0.5, 0.5), (0.0, 0.0, 0.0))
OBLIQUE = affine_from_geometry((0.5, 0.45, 0.6), (-30.0, 14.0, 60.0), rotation(35, -25, 15))


def grid_mm(shape, affine):
    """Voxel centres in the grid's own millimetre frame ``(i, j, k) * spacing``, and the
    map from that frame to world. Shapes drawn in the grid frame land obliquely in world
    on an oblique grid, so world answers test the affine."""
    volume = Volume(np.zeros(shape, np.uint8), affine)
    spacing = volume.spacing
    k, j, i = np.indices(shape)
    local = np.stack([i, j, k], axis=-1) * spacing

    def to_world(points):
        return volume.index_to_world(np.asarray(points, dtype=float) / spacing)

    return local, to_world


def tube_labels(affine, *, start, end, radius, shape=(70, 64, 72)):
    """A straight nerve tube (label NERVE) with flat ends, in grid millimetres."""
    local, to_world = grid_mm(shape, affine)
    start, end = np.asarray(start, float), np.asarray(end, float)
    axis = (end - start) / np.linalg.norm(end - start)
    offset = local - start
    t = offset @ axis
    r = np.linalg.norm(offset - t[..., None] * axis, axis=-1)
    inside = (r <= radius) & (t >= 0) & (t <= np.linalg.norm(end - start))
    labels = np.where(inside, Tissue.NERVE, Tissue.MUSCLE).astype(np.uint8)
    return Volume(labels, affine, modality="SEG", units="label"), to_world


# ---------------------------------------------------------------------------- (a) labels
@pytest.mark.parametrize("affine", [AXIS_ALIGNED, OBLIQUE], ids=["axis-aligned", "oblique"])
def test_a_straight_tube_gives_its_axis_and_radius_within_half_a_voxel(affine):
    start, end, radius = (6.0, 8.0, 7.0), (30.0, 24.0, 33.0), 2.0
    labels, to_world = tube_labels(affine, start=start, end=end, radius=radius)
    (nerve,) = nerves_from_labels(labels)
    half_voxel = 0.5 * labels.spacing.max()
    axis = Nerve("axis", to_world([start, end]), radius)
    assert np.all(axis.distance_to(nerve.centreline) < half_voxel)
    assert abs(nerve.radius_mm - radius) < half_voxel
    assert np.all(np.abs(nerve.radii_mm - radius) < half_voxel)
    # The skeleton stops short of the flat ends; walking out along the tangent restores them.
    assert abs(nerve.length_mm - axis.length_mm) < 2 * half_voxel
    ends = {tuple(np.round(p, 6)) for p in (nerve.centreline[0], nerve.centreline[-1])}
    for true_end in to_world([start, end]):
        assert min(np.linalg.norm(np.array(e) - true_end) for e in ends) < 2 * half_voxel
    steps = np.linalg.norm(np.diff(nerve.centreline, axis=0), axis=1)
    assert np.allclose(steps[:-1], 0.5) and 0 < steps[-1] <= 0.5 + 1e-9


def test_a_tube_leaving_the_image_runs_to_the_edge():
    # Along i from the left face (i = 0) to 20 mm in.
    labels, _ = tube_labels(AXIS_ALIGNED, start=(-5.0, 15.0, 15.0), end=(20.0, 15.0, 15.0), radius=1.5)
    (nerve,) = nerves_from_labels(labels)
    ends_i = sorted(labels.world_to_index(nerve.centreline[[0, -1]])[:, 0])
    assert abs(ends_i[0]) < 0.5  # on the edge voxels, not a radius short of them
    assert abs(ends_i[1] - 40.0) < 1.0  # the flat end at 20 mm
    assert abs(nerve.length_mm - 20.0) < 0.5


def test_separate_components_become_separate_nerves_longest_first():
    shape = (50, 50, 60)
    labels = np.zeros(shape, np.uint8)
    labels[10:14, 10:14, 5:55] = Tissue.NERVE  # 25 mm along i
    labels[30:34, 30:34, 10:40] = Tissue.NERVE  # 15 mm
    labels[40:42, 5:7, 5:7] = Tissue.NERVE  # a speck: 1 mm
    labels[20:24, 40:44, 5:55] = Tissue.VESSEL  # not a nerve
    volume = Volume(labels, AXIS_ALIGNED, modality="SEG")
    nerves = nerves_from_labels(volume, names=["long", "short"], target=True)
    assert [n.name for n in nerves] == ["long", "short"]
    assert nerves[0].length_mm > nerves[1].length_mm
    assert all(n.target for n in nerves)
    # Four voxels of 0.5 mm across: a square of 2 mm, the area of a circle of r 1.128 mm.
    assert abs(nerves[0].radius_mm - np.sqrt(4.0 / np.pi)) < 0.1
    vessels = nerves_from_labels(volume, label=Tissue.VESSEL)
    assert len(vessels) == 1 and vessels[0].name == "nerve_1"


def test_a_bool_mask_is_accepted():
    mask = np.zeros((20, 20, 40), bool)
    mask[8:12, 8:12, 5:35] = True
    (nerve,) = nerves_from_labels(Volume(mask, AXIS_ALIGNED))
    assert abs(nerve.length_mm - 15.0) < 0.6


def test_a_curved_tube_is_followed_not_cut_short():
    shape = (30, 90, 90)
    local, to_world = grid_mm(shape, OBLIQUE)
    centre, bend = np.array([22.0, 2.0]), 18.0
    x, y, z = local[..., 0], local[..., 1], local[..., 2]
    angle = np.arctan2(y - centre[1], x - centre[0])
    ring = np.hypot(np.hypot(x - centre[0], y - centre[1]) - bend, z - 8.0)
    labels = np.where((ring <= 1.5) & (angle > 0.3) & (angle < 2.8), Tissue.NERVE, 0).astype(np.uint8)
    (nerve,) = nerves_from_labels(Volume(labels, OBLIQUE, modality="SEG"))
    arc = np.linspace(0.3, 2.8, 400)
    truth = Nerve("truth", to_world(np.stack([centre[0] + bend * np.cos(arc), centre[1] + bend * np.sin(arc),
                                              np.full_like(arc, 8.0)], axis=1)), 1.5)
    assert np.all(truth.distance_to(nerve.centreline) < 0.5)
    assert abs(nerve.length_mm - truth.length_mm) < 1.0


# ---------------------------------------------------------------------------- (b) tracing
def dark_arc_image(affine, *, seed=0):
    """A dark curved tube (radius 1.5 mm, 80 HU below its surroundings) in noise of 20 HU."""
    shape = (60, 70, 110)
    local, to_world = grid_mm(shape, affine)
    cx, cy, bend = 27.0, -5.0, 28.0
    x, y, z = local[..., 0], local[..., 1], local[..., 2]
    angle = np.arctan2(y - cy, x - cx)
    distance = np.hypot(np.hypot(x - cx, y - cy) - bend, z - 15.0)
    image = 60.0 + np.random.default_rng(seed).normal(0.0, 20.0, shape)
    image[(distance <= 1.5) & (angle > 0.3) & (angle < 2.8)] -= 80.0
    volume = Volume(image.astype(np.float32), affine, modality="CT", units="HU")

    def on_arc(theta):
        theta = np.asarray(theta, dtype=float)
        return to_world(np.stack([cx + bend * np.cos(theta), cy + bend * np.sin(theta),
                                  np.full_like(theta, 15.0)], axis=-1))

    return volume, on_arc


@pytest.mark.parametrize("affine", [AXIS_ALIGNED, OBLIQUE], ids=["axis-aligned", "oblique"])
def test_a_trace_between_two_clicks_follows_a_dark_tube_in_noise(affine):
    volume, on_arc = dark_arc_image(affine)
    clicks = on_arc([0.5, 2.6])
    nerve = trace_nerve(volume, clicks, radius_mm=1.5, name="traced")
    truth = Nerve("truth", on_arc(np.linspace(0.3, 2.8, 500)), 1.5)
    assert np.all(truth.distance_to(nerve.centreline) < 1.0)  # inside the 1.5 mm tube
    chord = Nerve("chord", clicks, 1.5)
    assert np.max(truth.distance_to(chord.resampled(0.5).centreline)) > 10.0  # so the test can tell
    np.testing.assert_allclose(nerve.centreline[[0, -1]], clicks, atol=1e-9)
    assert nerve.name == "traced" and nerve.radius_mm == 1.5 and nerve.target


def test_a_trace_passes_through_every_clicked_point():
    volume, on_arc = dark_arc_image(OBLIQUE, seed=1)
    clicks = on_arc([0.5, 1.5, 2.6])
    nerve = trace_nerve(volume, clicks, radius_mm=1.5, step_mm=0.25)
    assert np.min(np.linalg.norm(nerve.centreline - clicks[1], axis=1)) < 0.13
    truth = Nerve("truth", on_arc(np.linspace(0.3, 2.8, 500)), 1.5)
    assert np.all(truth.distance_to(nerve.centreline) < 1.0)


def test_a_trace_follows_a_dark_groove_along_a_bright_bone_edge():
    """A landmark, not a nerve: a rib-like bright bar whose lower edge curves, with a
    dark groove (fat, -100 HU) along it in soft tissue (40 HU), as the costal groove."""
    shape = (40, 70, 120)
    local, to_world = grid_mm(shape, OBLIQUE)
    x, y, z = local[..., 0], local[..., 1], local[..., 2]

    def edge(xx):  # the bar's lower edge, mm: a gentle S
        return 16.0 + 4.0 * np.sin(xx / 9.0)

    image = np.full(shape, 40.0)
    image[(y > edge(x)) & (y < edge(x) + 10.0) & (np.abs(z - 12.0) < 4.0)] = 1200.0
    groove = np.hypot(y - (edge(x) - 1.6), z - 12.0) <= 1.2
    image[groove & (image < 1000)] = -100.0
    image += np.random.default_rng(5).normal(0.0, 15.0, shape)
    volume = Volume(image.astype(np.float32), OBLIQUE, modality="CT", units="HU")
    xs = np.array([6.0, 52.0])
    clicks = to_world(np.stack([xs, edge(xs) - 1.6, [12.0, 12.0]], axis=1))
    nerve = trace_nerve(volume, clicks, radius_mm=1.2)
    xx = np.linspace(6.0, 52.0, 600)
    truth = Nerve("groove", to_world(np.stack([xx, edge(xx) - 1.6, np.full_like(xx, 12.0)], axis=1)), 1.2)
    assert np.all(truth.distance_to(nerve.centreline) < 1.0)


def test_trace_refuses_bad_points():
    volume, on_arc = dark_arc_image(AXIS_ALIGNED)
    with pytest.raises(InputError, match="at least 2"):
        trace_nerve(volume, on_arc([0.5, 0.5]), radius_mm=1.5)
    with pytest.raises(InputError, match=r"points\[1\].*outside the volume"):
        trace_nerve(volume, [on_arc(0.5), [500.0, 0.0, 0.0]], radius_mm=1.5)
    with pytest.raises(InputError, match="radius_mm"):
        trace_nerve(volume, on_arc([0.5, 2.6]), radius_mm=0.0)
    with pytest.raises(InputError, match="tubularity_weight"):
        trace_nerve(volume, on_arc([0.5, 2.6]), radius_mm=1.5, tubularity_weight=1.0)
    with pytest.raises(InputError, match="ridge"):
        trace_nerve(volume, on_arc([0.5, 2.6]), radius_mm=1.5, ridge="up")


# ---------------------------------------------------------------------------- (c) polyline
def test_a_polyline_nerve_has_length_steps_and_points_along_it():
    nerve = nerve_from_polyline([[0, 0, 0], [3, 4, 0], [3, 4, 0], [3, 4, 12]], 1.0, name="n", target=False)
    assert len(nerve.centreline) == 3  # the repeated point is dropped
    assert nerve.length_mm == pytest.approx(17.0)
    np.testing.assert_allclose(nerve.point_at(5.0), [3, 4, 0])
    np.testing.assert_allclose(nerve.point_at([2.5, 11.0]), [[1.5, 2.0, 0.0], [3, 4, 6]])
    fine = nerve.resampled(2.0)
    steps = np.linalg.norm(np.diff(fine.centreline, axis=0), axis=1)
    assert len(fine.centreline) == 10 and np.allclose(steps[:-1], 2.0, atol=0.6) and steps[-1] == pytest.approx(1.0)
    assert fine.length_mm < 17.0  # the corner at (3, 4, 0) is cut between two samples
    np.testing.assert_allclose(fine.centreline[[0, -1]], [[0, 0, 0], [3, 4, 12]])
    exact = nerve.resampled(2.0, keep_vertices=True)
    assert exact.length_mm == pytest.approx(17.0) and len(exact.centreline) == 10
    assert any(np.allclose(point, [3, 4, 0]) for point in exact.centreline)
    assert np.all(np.linalg.norm(np.diff(exact.centreline, axis=0), axis=1) <= 2.0 + 1e-9)
    assert nerve.distance_to([[3, 10, 6], [-3, -4, 0]]).tolist() == pytest.approx([6.0, 5.0])


@pytest.mark.parametrize(
    "points, radius, message",
    [([[0, 0, 0]], 1.0, "at least 2"), ([[0, 0, 0], [0, 0, 0]], 1.0, "at least 2"),
     ([[0, 0, 0], [1, 0, 0]], -1.0, "radius_mm"), ([[0, 0], [1, 0]], 1.0, r"\(N, 3\)"),
     ([[0, 0, 0], [np.nan, 0, 0]], 1.0, "finite")],
)
def test_a_polyline_nerve_refuses_bad_input(points, radius, message):
    with pytest.raises(InputError, match=message):
        nerve_from_polyline(points, radius)


def test_plan_round_trip_keeps_name_points_radius_and_role():
    nerve = nerve_from_polyline([[1.23456, 2.0, 3.0], [4.0, 5.0, 6.5]], 1.25, name="T7", target=False)
    entry = nerve.to_plan()
    assert isinstance(entry, PlanNerve) and entry.points[0] == (1.235, 2.0, 3.0)
    back = Nerve.from_plan(entry)
    assert (back.name, back.radius_mm, back.target) == ("T7", 1.25, False)
    np.testing.assert_allclose(back.centreline, nerve.centreline, atol=5e-4)


def test_the_tube_surrounds_the_centreline_at_the_local_radius():
    nerve = Nerve("n", [[0, 0, 0], [10, 0, 0], [20, 0, 0]], 1.0, radii_mm=[1.0, 2.0, 1.0])
    tube = nerve.tube(n_sides=32)
    assert tube.n_cells > 0
    points = np.asarray(tube.points)
    middle = points[np.abs(points[:, 0] - 10.0) < 1e-6]
    np.testing.assert_allclose(np.hypot(middle[:, 1], middle[:, 2]), 2.0, rtol=1e-3)
    plain = Nerve("n", [[0, 0, 0], [0, 0, 10]], 0.7).tube()
    bounds = plain.bounds  # (xmin, xmax, ymin, ymax, zmin, zmax)
    assert bounds[1] == pytest.approx(0.7, rel=1e-3) and bounds[4] == pytest.approx(0.0, abs=1e-9)
