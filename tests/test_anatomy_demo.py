"""Anatomy on the demo "intercostal" case (oblique grid), and the skin of the real head CT."""

import numpy as np
import pytest

from planner.anatomy import (
    Nerve,
    check_trajectory,
    distance_to_skin,
    nerves_from_labels,
    place_probe,
    skin_crossing,
    skin_normal,
    tissue_surfaces,
    trace_nerve,
)
from planner.demo import build_demo_case
from planner.labels import Tissue

PROBE = "n2o-16g"
PROBE_DIAMETER_MM = 1.65


@pytest.fixture(scope="module")
def case():
    return build_demo_case("intercostal")


@pytest.fixture(scope="module")
def case_nerves(case):
    return [Nerve.from_plan(line) for line in case.nerves]


@pytest.fixture(scope="module")
def depth_direction(case):
    """Unit vector from the suggested skin entry straight in to the target nerve."""
    marks = case.landmarks
    direction = marks["target_nerve_point"] - marks["skin_entry_suggestion"]
    return direction / np.linalg.norm(direction)


def test_nerves_from_the_labels_match_the_case_centrelines(case, case_nerves):
    found = nerves_from_labels(case.labels)
    assert len(found) == len(case.nerves) == 3
    matched = set()
    for nerve in found:
        errors = [truth.distance_to(nerve.centreline).max() for truth in case_nerves]
        best = int(np.argmin(errors))
        matched.add(best)
        truth = case_nerves[best]
        assert errors[best] < 1.0
        assert nerve.distance_to(truth.centreline).max() < 1.0  # and no stretch of the truth is missed
        assert abs(nerve.length_mm - truth.length_mm) < 1.0
        assert abs(nerve.radius_mm - truth.radius_mm) < 0.25
    assert matched == {0, 1, 2}


def test_a_trace_on_the_ct_between_two_clicks_keeps_to_the_barely_visible_nerve(case, case_nerves):
    """On CT the nerve (35 HU in a thin fat cuff) hardly differs from muscle, and the bright
    pleura runs 2 mm below it: the trace must keep to the nerve, not cut the chord or
    follow the pleura."""
    truth = case_nerves[[n.name for n in case.nerves].index(case.target_nerve.name)]
    clicks = case.target_nerve.points[[10, 130]]  # 47 mm apart along the nerve
    traced = trace_nerve(case.ct, clicks, radius_mm=case.target_nerve.radius_mm)
    assert truth.distance_to(traced.centreline).max() < 1.5
    chord = Nerve("chord", clicks, 1.0).resampled(0.5)
    assert truth.distance_to(chord.centreline).max() > 2.5  # a straight line would fail


def test_the_suggested_path_is_clear_and_its_placement_reads_right(case, case_nerves, depth_direction):
    marks = case.landmarks
    target = case.target_nerve
    # Stop 1 mm short of the nerve's surface.
    stop = target.radius_mm + PROBE_DIAMETER_MM / 2 + 1.0
    tip = marks["target_nerve_point"] - depth_direction * stop
    entry = marks["skin_entry_suggestion"]
    assert check_trajectory(tip, entry, case.labels, nerves=case_nerves, probe_diameter_mm=PROBE_DIAMETER_MM) == []
    placement = place_probe(case.labels, tip=tip, entry=entry, model=PROBE)
    depth = np.linalg.norm(marks["target_nerve_point"] - entry) - stop
    assert placement.insertion_depth_mm == pytest.approx(depth, abs=0.5)
    # The case's skin faces the entry squarely: the landmark path runs along the local normal.
    assert placement.angle_to_skin_normal_deg < 2.0


def test_a_shaft_aimed_through_the_rib_is_flagged(case, case_nerves, depth_direction):
    marks = case.landmarks
    # Straight in over the middle of rib 7, whose outer surface is 25 mm below the skin.
    entry = marks["rib_7_outer_surface"] - depth_direction * 25.0
    tip = entry + depth_direction * 30.0
    warnings = check_trajectory(tip, entry, case.labels, nerves=case_nerves, probe_diameter_mm=PROBE_DIAMETER_MM)
    bone = [w for w in warnings if w.code == "shaft_crosses_bone"]
    assert len(bone) == 1 and bone[0].distance_mm == pytest.approx(25.0, abs=1.0)
    assert "shaft crosses bone" in bone[0].message and "mm from the entry" in bone[0].message


def test_a_shaft_through_the_nerve_names_it(case, case_nerves, depth_direction):
    marks = case.landmarks
    entry = marks["skin_entry_suggestion"]
    tip = marks["target_nerve_point"] + depth_direction * 0.5
    warnings = check_trajectory(tip, entry, case.labels, nerves=case_nerves, probe_diameter_mm=PROBE_DIAMETER_MM)
    nerve_warnings = [w for w in warnings if w.code == "shaft_crosses_nerve"]
    assert [w.structure for w in nerve_warnings] == [case.target_nerve.name]
    expected = np.linalg.norm(marks["target_nerve_point"] - entry) - case.target_nerve.radius_mm
    assert nerve_warnings[0].distance_mm == pytest.approx(expected, abs=0.3)


def test_the_nerve_surface_sits_on_the_nerve_centrelines(case, case_nerves):
    surfaces = tissue_surfaces(case.labels, tissues=[Tissue.NERVE, Tissue.BONE])
    points = np.asarray(surfaces["nerve"].points)
    # Leave out the caps where the nerves leave the image.
    ijk = case.labels.world_to_index(points)
    away = np.all((ijk > 1.0) & (ijk < np.array(case.labels.shape_xyz) - 2.0), axis=1)
    distance = np.min([nerve.distance_to(points[away]) for nerve in case_nerves], axis=0)
    radius = case.target_nerve.radius_mm
    assert np.all(np.abs(distance - radius) < 0.5)  # a voxel is 0.5 mm
    # The rib landmark lies on the bone surface.
    bone = np.asarray(surfaces["bone"].points)
    assert np.min(np.linalg.norm(bone - case.landmarks["rib_7_outer_surface"], axis=1)) < 0.5


# ---------------------------------------------------------------------------- real head CT
@pytest.mark.realdata
def test_the_skin_of_the_real_head_ct():
    from realdata import invesalius_ct_path

    from planner.imaging import read_volume
    from planner.tissue_map import tissue_from_ct

    ct = read_volume(invesalius_ct_path())
    labels = tissue_from_ct(ct)
    # From the middle of the head straight forwards (LPS: anterior is -y) out of the face.
    body = np.argwhere(labels.array != Tissue.AIR)
    middle = labels.index_to_world(body.mean(axis=0)[::-1])
    outside = middle + np.array([0.0, -200.0, 0.0])
    surface = skin_crossing(labels, outside, middle, beyond_entry_mm=0.0)
    assert surface is not None
    # The first body voxel along the line lies within a voxel of the surface found.
    line = outside + np.linspace(0, 1, 4000)[:, None] * (middle - outside)
    values = labels.sample(line, order=0, fill_value=0)
    first_body = line[np.argmax(values > 0)]
    assert np.linalg.norm(first_body - surface) < labels.spacing.max()
    normal = skin_normal(labels, surface)
    assert np.isclose(np.linalg.norm(normal), 1.0) and normal[1] < 0  # facing forwards
    lifted = surface + 5.0 * normal
    assert distance_to_skin(labels, lifted) == pytest.approx(5.0, abs=0.75)
