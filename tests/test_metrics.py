"""Metrics on synthetic temperature fields with known answers: a straight tube nerve, a
sphere ice ball near a plane of skin, a vessel beside it, a bone slab through it."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from planner.anatomy import Nerve
from planner.demo import VesselLine
from planner.errors import InputError
from planner.labels import Tissue
from planner.metrics import (
    METRIC_WARNING_CODES,
    compute_metrics,
    cross_section_points,
    isosurface_points,
    mask_surface_points,
)
from planner.thermal.grid import ThermalGrid
from planner.thermal.result import ThermalResult
from planner.volume import Volume, affine_from_geometry

STEP = 0.25  # the nerve sampling step, mm
TOL = STEP + 1e-6  # covered lengths are exact to within one step


def rotation(z_deg, x_deg):
    a, c = np.radians([z_deg, x_deg])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return rz @ rx


def make_result(grid, field, *, time_below=None, final=None):
    """A ThermalResult whose lowest temperatures are ``field(local x, y, z)`` at the cell centres."""
    centres = grid.cell_centres_local()
    values = field(centres[..., 0], centres[..., 1], centres[..., 2]).astype(np.float32)
    below = {} if time_below is None else {-20.0: time_below(centres[..., 0], centres[..., 1], centres[..., 2]).astype(np.float32)}
    temps = values[None] if final is None else final(centres[..., 0], centres[..., 1], centres[..., 2])[None].astype(np.float32)
    return ThermalResult(
        grid=grid, snapshot_times=np.array([100.0]), temperatures=temps, min_temperature=values,
        time_below=below, history={}, run_time_s=0.0, steps=1, dt=1.0, method="synthetic",
    )


# ============================================================================ nerve coverage
# Cell centres on multiples of 0.25 mm, so the kinks of the fields below fall on centres
# and trilinear interpolation reproduces them.
NERVE_GRID = ThermalGrid.uniform((25, 25, 97), 0.25, lower=(-12.125, -3.125, -3.125),
                                 origin=(10.0, -20.0, 5.0), direction=rotation(30, 50))


def nerve_along_x(grid, x0=-10.0, x1=10.0, radius=1.0, name="N", target=True):
    return Nerve(name, grid.local_to_world([[x0, 0.0, 0.0], [x1, 0.0, 0.0]]), radius, target=target)


def v_field(x, y, z):
    """-20 degC at |x| = 5 on the axis, 0 degC at |x| = 7; warmer by 4 r^2 off the axis."""
    return 10.0 * (np.abs(x) - 5.0) - 20.0 + 4.0 * (y**2 + z**2)


def test_covered_length_of_a_straight_nerve_is_exact_to_the_step():
    result = make_result(NERVE_GRID, v_field, time_below=lambda x, y, z: np.maximum(60.0 - 6.0 * np.abs(x), 0.0))
    nerve = nerve_along_x(NERVE_GRID, radius=1.0)
    metrics = compute_metrics(result, nerves=[nerve])
    (coverage,) = metrics.nerves
    assert coverage.length_mm == pytest.approx(20.0)
    assert coverage.cross_section == "whole"
    # Whole cross-section: the ring (r = 1) is 4 degC warmer: -20 reached for |x| < 4.6, 0 for |x| < 6.6.
    assert coverage.covered_mm[-20.0] == pytest.approx(9.2, abs=TOL)
    assert coverage.covered_mm[0.0] == pytest.approx(13.2, abs=TOL)
    assert coverage.fraction[-20.0] == pytest.approx(9.2 / 20.0, abs=STEP / 20.0)
    assert coverage.longest_mm[-20.0] == pytest.approx(9.2, abs=TOL)
    # The centre is the coldest sample: -70 degC at x = 0 (bilinear round-off of y^2 is tiny).
    assert coverage.coldest_c == pytest.approx(-70.0, abs=0.1)
    middle = int(np.argmin(np.abs(coverage.arc_mm - 10.0)))
    assert coverage.temperature_c[middle] == pytest.approx(-66.0, abs=0.1)  # the ring, 4 degC warmer
    # Time below -20: the shortest-chilled sample of the cross-section, 60 - 6 |x| s.
    assert coverage.time_below_s[middle] == pytest.approx(60.0, abs=0.2)
    quarter = int(np.argmin(np.abs(coverage.arc_mm - 15.0)))  # x = 5
    assert coverage.time_below_s[quarter] == pytest.approx(30.0, abs=0.2)
    codes = [w.code for w in metrics.warnings]
    assert "target_partly_covered" in codes and "target_only_cooled" in codes
    assert "target_not_reached" not in codes


def test_any_part_of_the_cross_section_counts_with_cross_section_any():
    result = make_result(NERVE_GRID, v_field)
    metrics = compute_metrics(result, nerves=[nerve_along_x(NERVE_GRID)], cross_section="any")
    (coverage,) = metrics.nerves
    # The centre decides: -20 degC for |x| < 5, 0 degC for |x| < 7.
    assert coverage.covered_mm[-20.0] == pytest.approx(10.0, abs=TOL)
    assert coverage.covered_mm[0.0] == pytest.approx(14.0, abs=TOL)
    assert coverage.time_below_s is None
    assert any("did not track time below" in note for note in metrics.notes)


def test_a_thicker_nerve_is_covered_less():
    result = make_result(NERVE_GRID, v_field)
    thin = compute_metrics(result, nerves=[nerve_along_x(NERVE_GRID, radius=0.5)]).nerves[0]
    thick = compute_metrics(result, nerves=[nerve_along_x(NERVE_GRID, radius=1.5)]).nerves[0]
    # ring warmer by 4 r^2: -20 for |x| < 5 - 0.4 r^2
    assert thin.covered_mm[-20.0] == pytest.approx(2 * (5 - 0.1), abs=TOL)
    assert thick.covered_mm[-20.0] == pytest.approx(2 * (5 - 0.9), abs=TOL)


def test_longest_stretch_of_two_cold_stretches():
    # Kinks at cell centres (multiples of 0.25 mm) keep the interpolation exact.
    knots_x = np.array([-12.0, -8.0, -7.75, -4.25, -4.0, 1.0, 1.25, 6.75, 7.0, 12.0])
    knots_t = np.array([37.0, 37.0, -40.0, -40.0, 37.0, 37.0, -40.0, -40.0, 37.0, 37.0])
    result = make_result(NERVE_GRID, lambda x, y, z: np.interp(x, knots_x, knots_t))
    (coverage,) = compute_metrics(result, nerves=[nerve_along_x(NERVE_GRID, -11.0, 11.0, radius=0.5)]).nerves
    fine = np.linspace(-11.0, 11.0, 220001)
    cold = np.interp(fine, knots_x, knots_t) < -20.0
    first = np.ptp(fine[cold & (fine < 0)])
    second = np.ptp(fine[cold & (fine > 0)])
    assert second > first + 1.0
    assert coverage.longest_mm[-20.0] == pytest.approx(second, abs=TOL)
    assert coverage.covered_mm[-20.0] == pytest.approx(first + second, abs=2 * TOL)


def test_targets_come_first_and_a_frozen_spared_nerve_is_warned_about():
    result = make_result(NERVE_GRID, v_field)
    spare = Nerve("spare", NERVE_GRID.local_to_world([[-10, 1.5, 0.5], [10, 1.5, 0.5]]), 0.5, target=False)
    metrics = compute_metrics(result, nerves=[spare, nerve_along_x(NERVE_GRID)])
    assert [n.name for n in metrics.nerves] == ["N", "spare"]
    (warning,) = [w for w in metrics.warnings if w.code == "spared_nerve_frozen"]
    assert warning.structure == "spare" and "spare" in warning.message
    # The spare nerve's axis is 4 (1.5^2 + 0.5^2) = 10 degC warmer; its ring reaches r = 2.08 mm.
    assert metrics.nerve("spare").covered_mm[0.0] < metrics.nerve("N").covered_mm[0.0]


def test_nerve_points_outside_the_box_count_as_body_temperature():
    result = make_result(NERVE_GRID, lambda x, y, z: np.full_like(x, -50.0))
    nerve = nerve_along_x(NERVE_GRID, -20.0, 10.0, radius=0.5)  # 8 mm beyond the box at x = -12
    metrics = compute_metrics(result, nerves=[nerve])
    (coverage,) = metrics.nerves
    outside = coverage.arc_mm < 7.875  # the box face is at x = -12.125
    assert np.all(coverage.temperature_c[outside] == 37.0)
    assert np.all(coverage.temperature_c[~outside] == pytest.approx(-50.0))
    assert coverage.covered_mm[-20.0] == pytest.approx(22.125, abs=TOL)
    assert coverage.outside_box == int(np.sum(outside))
    assert any("outside the solver's box" in note for note in metrics.notes)
    assert "outside_box" in [w.code for w in metrics.warnings]


def test_a_target_the_ice_missed_is_warned_about():
    result = make_result(NERVE_GRID, lambda x, y, z: 30.0 + 0 * x)
    metrics = compute_metrics(result, nerves=[nerve_along_x(NERVE_GRID)])
    codes = [w.code for w in metrics.warnings]
    assert "target_not_reached" in codes and "no_ice" in codes
    assert metrics.nerves[0].covered_mm[-20.0] == 0.0


def test_cross_section_points_ring_the_centreline_at_the_radius():
    nerve = Nerve("bent", [[0, 0, 0], [10, 0, 0], [10, 10, 5]], 1.3)
    arc, centres, samples = cross_section_points(nerve, step_mm=0.5, ring_points=8)
    assert samples.shape == (len(arc), 9, 3)
    assert np.allclose(samples[:, 0], centres)
    offsets = samples[:, 1:] - centres[:, None]
    assert np.allclose(np.linalg.norm(offsets, axis=-1), 1.3)
    tangent = np.gradient(centres, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    assert np.allclose(np.einsum("nkj,nj->nk", offsets, tangent), 0.0, atol=1e-9)


# ============================================================================ ice ball and structures
SPHERE_GRID = ThermalGrid.uniform((80, 80, 80), 0.5, lower=(-20.0, -20.0, -20.0))
RADIUS = 6.0


def sphere_field(centre=(0.0, 0.0, 0.0)):
    cx, cy, cz = centre
    return lambda x, y, z: 5.0 * (np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) - RADIUS)


def slab_labels(*, axis_value_mm, tissue=Tissue.SKIN, thickness_mm=2.0, affine=None, below=Tissue.MUSCLE):
    """A label map (0.5 mm voxels, 40 mm cube centred on 0) with ``tissue`` in y from
    ``axis_value_mm`` to ``axis_value_mm + thickness`` (voxel faces) and air above it."""
    spacing = 0.5
    shape = (80, 80, 80)
    affine = affine_from_geometry((spacing,) * 3, (-19.75,) * 3) if affine is None else affine
    array = np.full(shape, below, np.uint8)
    y = -19.75 + spacing * np.arange(shape[1])
    layer = (y > axis_value_mm) & (y < axis_value_mm + thickness_mm)
    array[:, layer, :] = tissue
    if tissue == Tissue.SKIN:
        array[:, y > axis_value_mm + thickness_mm, :] = Tissue.AIR
    return Volume(array, affine, modality="SEG", units="label")


@pytest.mark.parametrize("skin_face", [9.0, 10.0, 12.5])
def test_distance_from_a_sphere_ice_ball_to_a_plane_skin(skin_face):
    result = make_result(SPHERE_GRID, sphere_field())
    labels = slab_labels(axis_value_mm=skin_face)
    metrics = compute_metrics(result, labels=labels)
    expected = skin_face - RADIUS
    assert metrics.skin is not None
    assert metrics.skin.clearance_mm == pytest.approx(expected, abs=0.5)
    assert not metrics.skin.reached
    # The closest skin point is on the skin's face above the centre.
    assert metrics.skin.closest_point[1] == pytest.approx(skin_face, abs=0.3)
    assert abs(metrics.skin.closest_point[0]) < 1.0 and abs(metrics.skin.closest_point[2]) < 1.0
    near = [w for w in metrics.warnings if w.code == "skin_near_ice"]
    assert bool(near) == (expected < 3.0)
    # Coldest skin: the field 5 (r - R) at the skin face, sampled at voxel centres just inside.
    assert metrics.skin.coldest_c == pytest.approx(5.0 * (skin_face - RADIUS), abs=2.5)


def test_ice_reaching_the_skin_is_frostbite_with_its_depth():
    result = make_result(SPHERE_GRID, sphere_field())
    labels = slab_labels(axis_value_mm=4.0)  # the ice edge is at y = 6: 2 mm into the skin
    metrics = compute_metrics(result, labels=labels)
    assert metrics.skin.reached
    assert metrics.skin.clearance_mm == pytest.approx(-2.0, abs=0.5)
    assert metrics.skin.coldest_c < 0.0
    (warning,) = [w for w in metrics.warnings if w.code == "skin_frozen"]
    assert "frostbite" in warning.message and "2." in warning.message


def test_skin_margin_is_a_setting():
    result = make_result(SPHERE_GRID, sphere_field())
    labels = slab_labels(axis_value_mm=10.0)  # 4 mm gap
    assert "skin_near_ice" not in [w.code for w in compute_metrics(result, labels=labels).warnings]
    wide = compute_metrics(result, labels=labels, skin_margin_mm=5.0)
    assert "skin_near_ice" in [w.code for w in wide.warnings]


def test_distance_to_the_skin_on_an_oblique_label_grid():
    # Labels turned about z: the skin is a tilted plane; its distance from the centre is
    # known from the plane's normal.
    turn = rotation(35, 0)
    affine = affine_from_geometry((0.5,) * 3, turn @ np.full(3, -19.75), turn)
    labels = slab_labels(axis_value_mm=10.0, affine=affine)
    result = make_result(SPHERE_GRID, sphere_field())
    metrics = compute_metrics(result, labels=labels)
    assert metrics.skin.clearance_mm == pytest.approx(10.0 - RADIUS, abs=0.5)


@pytest.mark.parametrize("gap", [1.0, 3.5])
def test_closest_approach_to_a_vessel_centreline(gap):
    vessel_radius = 1.2
    x = RADIUS + gap + vessel_radius
    vessel = VesselLine("artery_A", [[x, -5.0, -15.0], [x, 5.0, 15.0]], vessel_radius)
    result = make_result(SPHERE_GRID, sphere_field())
    metrics = compute_metrics(result, vessels=[vessel])
    item = metrics.structure("artery_A")
    assert item.kind == "vessel" and item.source == "centreline"
    # The line leans in y: its nearest point to the centre is at distance x.
    assert item.clearance_mm == pytest.approx(gap, abs=0.5)
    assert not item.reached
    assert np.linalg.norm(item.closest_point) == pytest.approx(RADIUS + gap, abs=0.5)


def test_a_vessel_in_the_ice_is_reported_with_its_depth():
    vessel = VesselLine("vein_B", [[4.0, 0.0, -15.0], [4.0, 0.0, 15.0]], 1.0)
    result = make_result(SPHERE_GRID, sphere_field())
    metrics = compute_metrics(result, vessels=[vessel])
    item = metrics.structure("vein_B")
    assert item.reached
    # Deepest tube point in the ice: its near side, 3 mm from the centre, 3 mm inside the edge.
    assert item.clearance_mm == pytest.approx(-3.0, abs=0.5)
    assert "vessel_frozen" in [w.code for w in metrics.warnings]


def test_vessels_from_the_label_map_and_bone():
    # A vessel tube along z at x = 9 (r 1.5) and a bone slab y in (-9, -5): bone frozen 1 mm deep.
    array = np.full((80, 80, 80), Tissue.MUSCLE, np.uint8)
    c = -19.75 + 0.5 * np.arange(80)
    zz, yy, xx = np.meshgrid(c, c, c, indexing="ij")
    array[(xx - 9.0) ** 2 + yy**2 < 1.5**2] = Tissue.VESSEL
    array[(yy > -9.0) & (yy < -5.0)] = Tissue.BONE
    labels = Volume(array, affine_from_geometry((0.5,) * 3, (-19.75,) * 3), modality="SEG")
    metrics = compute_metrics(make_result(SPHERE_GRID, sphere_field()), labels=labels)
    vessel = metrics.structure("vessel (label map)")
    assert vessel.source == "label map"
    assert vessel.clearance_mm == pytest.approx(9.0 - 1.5 - RADIUS, abs=0.5)
    bone = metrics.structure("bone")
    assert bone.reached and bone.clearance_mm == pytest.approx(-1.0, abs=0.5)
    assert "bone_frozen" in [w.code for w in metrics.warnings]
    assert metrics.skin is None  # no skin in this map


def test_structures_beyond_the_search_distance_have_no_distance():
    result = make_result(SPHERE_GRID, sphere_field())
    labels = slab_labels(axis_value_mm=15.0)
    metrics = compute_metrics(result, labels=labels, search_mm=5.0)
    assert metrics.skin.clearance_mm is None and not metrics.skin.reached
    assert "farther than" in " ".join(metrics.describe())


def test_volumes_per_isotherm_match_the_sphere():
    result = make_result(SPHERE_GRID, sphere_field())
    metrics = compute_metrics(result)
    volumes = {v["level_c"]: v["volume_ml"] for v in metrics.isotherm_volumes_ml}
    # 0 degC at r = 6, -20 at r = 2 (5 (r - 6) = -20): 4/3 pi r^3 mm3.
    assert volumes[0.0] == pytest.approx(4 / 3 * np.pi * 6.0**3 / 1000, rel=0.05)
    assert volumes[-20.0] == pytest.approx(4 / 3 * np.pi * 2.0**3 / 1000, rel=0.15)
    assert volumes[-40.0] == 0.0
    assert metrics.min_temperature_c == pytest.approx(-30.0 + 5 * 0.433, abs=0.1)  # nearest cell centre


# ============================================================================ surfaces and output
def test_isosurface_points_lie_on_the_sphere():
    points = isosurface_points(SPHERE_GRID, make_result(SPHERE_GRID, sphere_field((2.0, -1.0, 0.5))).min_temperature, 0.0)
    distance = np.linalg.norm(points - [2.0, -1.0, 0.5], axis=1)
    assert np.abs(distance - RADIUS).max() < 0.05


def test_mask_surface_points_are_on_voxel_faces():
    labels = slab_labels(axis_value_mm=10.0)
    mask = np.asarray(labels.array) == Tissue.SKIN
    points = mask_surface_points(labels, mask[:, :, :], (0, 0, 0))
    # Skin voxel centres from 10.25 to 11.75: faces at 10 and 12, and no faces at the crop edges.
    assert np.allclose(np.sort(np.unique(np.round(points[:, 1], 6))), [10.0, 12.0])


def test_to_dict_is_strict_json_and_describe_names_the_numbers():
    result = make_result(NERVE_GRID, v_field, time_below=lambda x, y, z: np.maximum(60.0 - 6.0 * np.abs(x), 0.0))
    metrics = compute_metrics(result, nerves=[nerve_along_x(NERVE_GRID)])
    text = json.dumps(metrics.to_dict(per_point=True), allow_nan=False)
    data = json.loads(text)
    assert data["nerves"][0]["coverage"][0]["level_c"] == -20.0
    assert data["nerves"][0]["coverage"][0]["covered_mm"] == pytest.approx(9.2, abs=TOL)
    assert len(data["nerves"][0]["arc_mm"]) == len(data["nerves"][0]["temperature_c"])
    assert {w["code"] for w in data["warnings"]} <= set(METRIC_WARNING_CODES)
    lines = metrics.describe()
    assert lines[0].startswith("nerve N (target, 20.0 mm judged)")
    assert any(line.startswith("WARNING: target nerve N") for line in lines)


def test_a_run_supplies_labels_and_the_plans_nerves():
    result = make_result(SPHERE_GRID, sphere_field())
    plan_nerve = SimpleNamespace(name="plan_nerve", points=[[-10.0, 0.0, 0.0], [10.0, 0.0, 0.0]], radius_mm=1.0,
                                 target=True)
    run = SimpleNamespace(result=result, labels=slab_labels(axis_value_mm=10.0),
                          plan=SimpleNamespace(nerves=[plan_nerve], volume=None))
    metrics = compute_metrics(run)
    assert metrics.nerves[0].name == "plan_nerve"
    assert metrics.skin.clearance_mm == pytest.approx(4.0, abs=0.5)


def test_bad_options_are_input_errors():
    result = make_result(SPHERE_GRID, sphere_field())
    with pytest.raises(InputError, match="cross_section"):
        compute_metrics(result, cross_section="half")
    with pytest.raises(InputError, match="step_mm"):
        compute_metrics(result, step_mm=0)
    with pytest.raises(InputError, match="expected a SimulationRun or ThermalResult"):
        compute_metrics(np.zeros(3))


def test_a_preview_is_measured_and_flagged_approximate():
    result = make_result(NERVE_GRID, lambda x, y, z: np.full_like(x, -50.0))
    result.approximate, result.caveat = True, "APPROXIMATE PREVIEW (test)"  # as a PreviewResult says
    metrics = compute_metrics(result, nerves=[nerve_along_x(NERVE_GRID, -20.0, 10.0, radius=0.5)])
    assert any(note.startswith("APPROXIMATE") and "(test)" in note for note in metrics.notes)
    # A preview lattice covers only where it is cold, so points beyond it are no cause for a warning.
    assert "outside_box" not in [w.code for w in metrics.warnings]
    assert metrics.nerves[0].covered_mm[-20.0] == pytest.approx(22.125, abs=TOL)
