"""Trajectory checks on small synthetic bodies with known answers."""

import numpy as np
import pytest

from planner.anatomy import (
    WARNING_CODES,
    Nerve,
    PlanWarning,
    check_placement,
    check_plan_trajectories,
    check_trajectory,
    place_probe,
    shaft_crossings,
)
from planner.errors import InputError
from planner.labels import Tissue
from planner.plan import plan_from_dict
from planner.volume import Volume, affine_from_geometry

from geometry import rotation


GRIDS = {
    "axis-aligned": affine_from_geometry((0.5, 0.5, 0.5), (0.0, 0.0, 0.0)),
    "oblique": affine_from_geometry((0.5, 0.5, 0.5), (31.0, -12.0, 140.0), rotation(40, -25, 60)),
}
SPACING = 0.5
SHAPE = (100, 60, 60)  # (k, j, i): 49.5 mm along k, 9 mm of air above the skin
SKIN_TOP_K = 80  # body voxels up to k = 80 (40 mm); the skin surface is half a voxel above
SURFACE_MM = SKIN_TOP_K * SPACING + SPACING / 2  # 40.25 mm in the grid frame
BONE_K = (44, 50)  # bone voxel centres 22.0 to 24.5 mm: faces at 21.75 and 24.75 mm


class Slab:
    """Air above a flat skin at k = 80.5 (grid frame z = 40.25 mm); muscle below; a bone slab
    across the whole grid at 21.75-24.75 mm; lung below 5 mm. Points are given in the grid
    frame (mm along i, j, k) and carried to world."""

    def __init__(self, affine, *, bone=True, extra=None):
        labels = np.full(SHAPE, Tissue.MUSCLE, np.uint8)
        labels[SKIN_TOP_K - 2 : SKIN_TOP_K + 1] = Tissue.SKIN
        labels[SKIN_TOP_K + 1 :] = Tissue.AIR
        labels[:10] = Tissue.LUNG
        if bone:
            labels[BONE_K[0] : BONE_K[1]] = Tissue.BONE
        if extra is not None:
            extra(labels)
        self.labels = Volume(labels, affine, modality="SEG", units="label")

    def world(self, local):
        return self.labels.index_to_world(np.asarray(local, dtype=float) / SPACING)

    def world_direction(self, local):
        return self.world(local) - self.world(np.zeros(3))


@pytest.fixture(params=list(GRIDS))
def grid(request):
    return GRIDS[request.param]


def codes(warnings):
    return [w.code for w in warnings]


# ---------------------------------------------------------------------------- the shaft
def test_a_bone_slab_across_a_perpendicular_path_is_found_at_its_depth(grid):
    body = Slab(grid)
    entry, tip = body.world([15, 15, SURFACE_MM]), body.world([15, 15, 12.0])
    warnings = check_trajectory(tip, entry, body.labels, probe_diameter_mm=1.65, probe_name="A")
    assert codes(warnings) == ["shaft_crosses_bone"]
    (warning,) = warnings
    # The slab's top face is 40.25 - 24.75 = 15.5 mm below the skin.
    assert warning.distance_mm == pytest.approx(15.5, abs=1e-6)
    assert warning.message == "shaft crosses bone 15.5 mm from the entry (over 3.0 mm)"
    assert str(warning) == "probe A: " + warning.message
    assert warning.structure == "bone" and warning.probe == "A"
    np.testing.assert_allclose(warning.position, body.world([15, 15, 24.75]), atol=1e-6)


@pytest.mark.parametrize("angle_deg", [25.0, 50.0])
def test_an_angled_path_meets_the_slab_first_with_the_rim_of_the_probe(grid, angle_deg):
    body = Slab(grid)
    angle = np.radians(angle_deg)
    inward = np.array([np.sin(angle), 0.0, -np.cos(angle)])
    entry_local = np.array([5.0, 15.0, SURFACE_MM])
    entry, tip = body.world(entry_local), body.world(entry_local + inward * 30.0 / np.cos(angle))
    radius = 0.825
    (crossing,) = shaft_crossings(tip, entry, body.labels, radius_mm=radius, tissues=[Tissue.BONE])
    # The rim of the shaft (r sin(angle) below the axis) reaches the face 15.5 mm down first.
    expected = (15.5 - radius * np.sin(angle)) / np.cos(angle)
    assert crossing.start_mm == pytest.approx(expected, abs=SPACING / np.cos(angle))
    thin = shaft_crossings(tip, entry, body.labels, radius_mm=0.01, tissues=[Tissue.BONE])[0]
    assert thin.start_mm == pytest.approx(15.5 / np.cos(angle), abs=SPACING / np.cos(angle))
    assert thin.end_mm == pytest.approx(18.5 / np.cos(angle), abs=SPACING / np.cos(angle))


@pytest.mark.parametrize("gap_mm, crosses", [(1.6, False), (0.45, True)])
def test_bone_beside_the_shaft_counts_only_within_the_probe_radius(grid, gap_mm, crosses):
    # Bone fills i >= 40 (faces at 19.75 mm); the shaft runs down at i = 19.75 - gap.
    def wall(labels):
        labels[: SKIN_TOP_K - 2, :, 40:] = Tissue.BONE

    body = Slab(grid, bone=False, extra=wall)
    x = 19.75 - gap_mm
    entry, tip = body.world([x, 15, SURFACE_MM]), body.world([x, 15, 20.0])
    warnings = check_trajectory(tip, entry, body.labels, probe_diameter_mm=1.65)
    assert ("shaft_crosses_bone" in codes(warnings)) == crosses


def test_lung_vessel_and_a_labelled_nerve_are_named(grid):
    def structures(labels):
        labels[60:64, 25:35, 25:35] = Tissue.VESSEL  # 30-31.5 mm
        labels[54:56, 25:35, 25:35] = Tissue.NERVE  # 27-27.5 mm

    body = Slab(grid, bone=False, extra=structures)
    entry, tip = body.world([15, 15, SURFACE_MM]), body.world([15, 15, 3.0])
    warnings = check_trajectory(tip, entry, body.labels, probe_diameter_mm=1.0)
    assert codes(warnings) == ["shaft_crosses_vessel", "shaft_crosses_nerve", "shaft_crosses_lung"]
    assert [w.distance_mm for w in warnings] == pytest.approx([40.25 - 31.75, 40.25 - 27.75, 40.25 - 4.75])
    assert warnings[2].message.startswith("shaft crosses lung or an air space 35.5 mm from the entry")
    # Nerves given as centrelines replace the labelled ones.
    named = Nerve("median", [body.world([0, 15, 27.25]), body.world([29.5, 15, 27.25])], 0.5)
    warnings = check_trajectory(tip, entry, body.labels, nerves=[named], probe_diameter_mm=1.0)
    assert [w.structure for w in warnings] == ["vessel", "median", "lung"]
    assert "shaft crosses nerve median" in warnings[1].message
    # Other classes can be put on the avoid list.
    warnings = check_trajectory(tip, entry, body.labels, probe_diameter_mm=1.0, avoid=[Tissue.SKIN])
    assert codes(warnings) == ["shaft_crosses_tissue", "shaft_crosses_nerve"]


def test_a_nerve_is_crossed_only_when_the_probe_touches_it(grid):
    body = Slab(grid, bone=False)
    entry = body.world([15, 15, SURFACE_MM])
    nerve = Nerve("target", [body.world([0, 15, 20.0]), body.world([29, 15, 20.0])], 1.0)
    radius = 0.825

    def crossing_codes(tip_local):
        return codes(check_trajectory(body.world(tip_local), entry, body.labels, nerves=[nerve],
                                      probe_diameter_mm=2 * radius))

    assert crossing_codes([15, 15, 20.0 + 1.0 + 0.3]) == []  # tip 0.3 mm above the nerve
    assert crossing_codes([15, 15, 20.5]) == ["shaft_crosses_nerve"]  # tip in it
    assert crossing_codes([15, 15, 10.0]) == ["shaft_crosses_nerve"]  # through it
    # A shaft passing the nerve's side 0.3 mm clear of it.
    clear = 15 + 1.0 + radius + 0.3
    beside = Nerve("target", [body.world([0, clear, 20.0]), body.world([29, clear, 20.0])], 1.0)
    assert codes(check_trajectory(body.world([15, 15, 10.0]), entry, body.labels, nerves=[beside],
                                  probe_diameter_mm=2 * radius)) == []


# ---------------------------------------------------------------------------- entry and tip
def test_an_entry_5_mm_above_the_skin_is_reported_as_5_mm(grid):
    body = Slab(grid, bone=False)
    # A shaft at 40 degrees: 6.5 mm of it lies in air, but the entry is 5 mm from the skin.
    angle = np.radians(40.0)
    inward = np.array([np.sin(angle), 0.0, -np.cos(angle)])
    tip_local = np.array([20.0, 15.0, 25.0])
    entry_local = tip_local - inward * (SURFACE_MM + 5.0 - 25.0) / np.cos(angle)
    warnings = check_trajectory(body.world(tip_local), body.world(entry_local), body.labels, probe_diameter_mm=1.65)
    assert codes(warnings) == ["entry_off_skin"]
    assert warnings[0].distance_mm == pytest.approx(5.0, abs=0.1)
    assert warnings[0].message == "entry is 5.0 mm above the skin (more than 2 mm)"


def test_an_entry_below_the_skin_and_one_within_tolerance(grid):
    body = Slab(grid, bone=False)
    tip = body.world([15, 15, 25.0])
    below = check_trajectory(tip, body.world([15, 15, SURFACE_MM - 4.0]), body.labels, probe_diameter_mm=1.0)
    assert codes(below) == ["entry_off_skin"] and "4.0 mm below the skin" in below[0].message
    near = check_trajectory(tip, body.world([15, 15, SURFACE_MM + 1.5]), body.labels, probe_diameter_mm=1.0)
    assert near == []
    tight = check_trajectory(tip, body.world([15, 15, SURFACE_MM + 1.5]), body.labels, probe_diameter_mm=1.0,
                             entry_tolerance_mm=1.0)
    assert codes(tight) == ["entry_off_skin"]


def test_a_tip_outside_the_image_or_in_air(grid):
    body = Slab(grid, bone=False)
    entry = body.world([15, 15, SURFACE_MM])
    outside = check_trajectory(body.world([15, 15, -3.25]), entry, body.labels, probe_diameter_mm=1.0)
    assert codes(outside)[0] == "tip_outside_volume"
    assert outside[0].distance_mm == pytest.approx(3.0)  # beyond the face at -0.25 mm
    in_air = check_trajectory(body.world([15, 15, SURFACE_MM + 3.0]), body.world([15, 15, SURFACE_MM + 1.0]),
                              body.labels, probe_diameter_mm=1.0)
    assert codes(in_air) == ["tip_outside_body"]
    assert in_air[0].distance_mm == pytest.approx(3.0, abs=0.1)


def test_an_insertion_longer_than_the_probe_allows(grid):
    body = Slab(grid, bone=False)
    entry, tip = body.world([15, 15, SURFACE_MM]), body.world([15, 15, 10.25])
    assert check_trajectory(tip, entry, body.labels, probe_diameter_mm=1.0, usable_length_mm=35.0) == []
    warnings = check_trajectory(tip, entry, body.labels, probe_diameter_mm=1.0, usable_length_mm=25.0)
    assert codes(warnings) == ["shaft_too_long"]
    assert warnings[0].message == "insertion is 30.0 mm, longer than the probe's usable length of 25.0 mm"


def test_bad_arguments_are_input_errors():
    body = Slab(GRIDS["axis-aligned"])
    with pytest.raises(InputError, match="entry must differ"):
        check_trajectory([1, 2, 3], [1, 2, 3], body.labels, probe_diameter_mm=1.0)
    with pytest.raises(InputError, match="probe_diameter_mm"):
        check_trajectory([1, 2, 3], [1, 2, 9], body.labels, probe_diameter_mm=0.0)
    with pytest.raises(InputError, match="tip"):
        check_trajectory([1, np.nan, 3], [1, 2, 9], body.labels, probe_diameter_mm=1.0)


def test_every_warning_code_is_documented():
    body = Slab(GRIDS["axis-aligned"])
    entry, tip = body.world([15, 15, SURFACE_MM + 6.0]), body.world([15, 15, -4.0])
    warnings = check_trajectory(tip, entry, body.labels, probe_diameter_mm=1.0, usable_length_mm=10.0)
    assert set(codes(warnings)) <= set(WARNING_CODES)
    assert len(warnings) >= 4 and all(isinstance(w, PlanWarning) for w in warnings)


# ---------------------------------------------------------------------------- plans
def test_placements_and_plans_are_checked_with_their_own_numbers():
    body = Slab(GRIDS["oblique"])
    entry, tip = body.world([15, 15, SURFACE_MM]), body.world([15, 15, 12.0])
    placement = place_probe(body.labels, tip=tip, entry=entry, model="n2o-16g", name="A")
    (warning,) = check_placement(placement, body.labels)
    assert warning.code == "shaft_crosses_bone" and warning.probe == "A"

    def vec(point):
        return [float(c) for c in point]

    plan = plan_from_dict({
        "format": "cryoplan.plan", "schema_version": 1, "name": "p", "volume": None,
        "tissue": {"source": "homogeneous", "class": "muscle"},
        "probes": [{"name": "A", "model": "n2o-16g", "tip": vec(tip), "entry": vec(entry)},
                   {"name": "B", "model": "n2o-16g", "tip": vec(body.world([25, 15, 30.0])),
                    "entry": vec(body.world([25, 15, SURFACE_MM]))}],
        "protocol": [{"kind": "freeze", "duration_s": 60}],
        "nerves": [{"name": "n", "points": [vec(body.world([0, 40, 30.0])), vec(body.world([29, 40, 30.0]))],
                    "radius_mm": 1.0}],
    })
    warnings = check_plan_trajectories(plan, body.labels)
    assert [(w.probe, w.code) for w in warnings] == [("A", "shaft_crosses_bone")]
    moved = [Nerve("n", [body.world([25, 0, 31.0]), body.world([25, 29, 31.0])], 1.0)]
    warnings = check_plan_trajectories(plan, body.labels, nerves=moved)
    assert [(w.probe, w.code) for w in warnings] == [("A", "shaft_crosses_bone"), ("B", "shaft_crosses_nerve")]
