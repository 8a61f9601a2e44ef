"""Tests of the built-in demo anatomy (planner.demo).

Sizes are measured from the label maps along rays (so a broken painter or a wrong
affine shows up as a wrong measurement), and compared with typical adult anatomy.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from planner.demo import DemoCase, build_demo_case, list_demo_cases, write_demo_case
from planner.errors import InputError
from planner.labels import Tissue

CASES = ["intercostal", "lfcn", "morton"]
RAY_STEP_MM = 0.05


@pytest.fixture(scope="module")
def cases() -> dict[str, DemoCase]:
    return {name: build_demo_case(name) for name in CASES}


# ----------------------------------------------------------------------------- helpers
def unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=float)
    return vector / np.linalg.norm(vector)


def labels_along(case: DemoCase, start, direction, length_mm: float):
    """Nearest-voxel labels along a ray: (distances mm, labels)."""
    distances = np.arange(0.0, length_mm, RAY_STEP_MM)
    points = np.asarray(start, dtype=float) + distances[:, None] * unit(direction)
    return distances, case.labels.sample(points, order=0, fill_value=-1).astype(int)


def runs_along(case: DemoCase, start, direction, length_mm: float) -> list[tuple[int, float, float]]:
    """Runs of equal labels along a ray: ``[(label, from_mm, to_mm), ...]``."""
    distances, labels = labels_along(case, start, direction, length_mm)
    change = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(labels)]])
    return [(int(labels[s]), float(distances[s]), float(distances[e - 1]) + RAY_STEP_MM) for s, e in zip(starts, ends)]


def run_through(case: DemoCase, centre, direction, label: int, *, half_length_mm: float = 20.0) -> float:
    """Length (mm) of the run of ``label`` that contains ``centre`` along a line."""
    direction = unit(direction)
    start = np.asarray(centre, dtype=float) - half_length_mm * direction
    for run_label, begin, end in runs_along(case, start, direction, 2 * half_length_mm):
        if begin <= half_length_mm < end:
            assert run_label == label, f"centre is in label {run_label}, not {label}"
            return end - begin
    raise AssertionError("centre not on the line")


def first_distance(case: DemoCase, start, direction, label: int, length_mm: float) -> float:
    distances, labels = labels_along(case, start, direction, length_mm)
    hits = np.flatnonzero(labels == label)
    assert hits.size, f"label {label} not found within {length_mm} mm"
    return float(distances[hits[0]])


def array_hash(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def nearest_point(points: np.ndarray, to) -> np.ndarray:
    return points[np.argmin(np.linalg.norm(points - np.asarray(to), axis=1))]


# ----------------------------------------------------------------------------- shapes
def test_tube_distance_known_answers():
    from planner.demo import _shapes as shapes

    x, y, z = (np.array(v, dtype=np.float32) for v in ([0.0, 0.0, 0.0, 7.0], [3.0, 0.0, 0.5, 0.0], [5.0, 13.0, -1.0, 5.0]))
    distance, arc = shapes.polyline_distance(x, y, z, [(0, 0, 0), (0, 0, 10)], reach_mm=4.0)
    np.testing.assert_allclose(distance[:3], [3.0, 3.0, np.hypot(0.5, 1.0)], atol=1e-6)
    np.testing.assert_allclose(arc[:3], [5.0, 10.0, 0.0], atol=1e-6)
    assert distance[3] == shapes.FAR_MM  # beyond reach
    sdf = shapes.tube(x, y, z, polyline=[(0, 0, 0), (0, 0, 10)], radius_mm=[1.0, 3.0])
    np.testing.assert_allclose(sdf[0], 3.0 - 2.0, atol=1e-6)  # radius 2 halfway along


def test_long_polylines_sampled_within_tolerance():
    from planner.demo import _shapes as shapes

    path = shapes.smooth_path([(0, 0, -8), (3, 1, 0), (0, 4, 8), (-2, 6, 12)], step_mm=0.5)
    assert len(path) > shapes.EXACT_MAX_VERTICES
    assert np.allclose(np.linalg.norm(np.diff(path, axis=0), axis=1), 0.5, rtol=0.02)
    points = np.random.default_rng(3).uniform(-6, 12, (3, 4000)).astype(np.float32)
    sampled, _ = shapes.polyline_distance(*points, path, reach_mm=3.0)
    exact, _ = shapes._segments_distance(points.T.astype(float), path, shapes.polyline_arc_lengths(path))
    near = exact < 2.9
    assert near.sum() > 100
    assert np.all(sampled[near] >= exact[near] - 1e-5)
    assert np.all(sampled[near] - exact[near] <= 0.06)


def test_ellipsoid_ribbon_and_smooth_union():
    from planner.demo import _shapes as shapes

    radii = np.array([6.5, 8.0, 7.5])
    # Three points on the axes and one off them, all on the surface.
    surface = np.array([[6.5, 0, 0], [0, -8.0, 0], [0, 0, 7.5], radii / np.sqrt(3)]).T.astype(np.float32)
    values = shapes.ellipsoid(*surface, centre=(0, 0, 0), radii=radii)
    np.testing.assert_allclose(values, 0.0, atol=1e-5)
    out = shapes.ellipsoid(*np.array([[8.5], [0.0], [0.0]], dtype=np.float32), centre=(0, 0, 0), radii=radii)
    np.testing.assert_allclose(out, 2.0, atol=1e-5)
    band = shapes.ribbon(
        *np.array([[0.0, 4.0, 0.0], [0.0, 0.0, 0.0], [5.0, 5.0, 12.0]], dtype=np.float32),
        start=(0, 0, 0), end=(0, 0, 10), width_direction=(1, 0, 0), half_width_mm=4.0, half_thickness_mm=1.5,
    )
    np.testing.assert_allclose(band, [-1.5, 0.0, 2.0], atol=1e-6)
    a, b = np.array([0.0, 0.0, -1.0], dtype=np.float32), np.array([5.0, 0.0, 3.0], dtype=np.float32)
    blended = shapes.smooth_union(a, b, blend_mm=3.0)
    np.testing.assert_allclose(blended, [0.0, -0.75, -1.0], atol=1e-6)  # min, fillet, min


# ----------------------------------------------------------------------------- API
def test_list_and_unknown_name():
    assert list_demo_cases() == CASES
    with pytest.raises(InputError) as error:
        build_demo_case("elbow")
    message = str(error.value)
    assert "elbow" in message and all(name in message for name in CASES) and "\n" not in message


@pytest.mark.parametrize("spacing", [0.0, -1.0, float("nan"), 10.0, "fine"])
def test_bad_spacing_is_an_input_error(spacing):
    with pytest.raises(InputError, match="spacing_mm"):
        build_demo_case("intercostal", spacing_mm=spacing)


def test_too_large_for_memory_is_an_input_error(monkeypatch):
    monkeypatch.setenv("CRYOPLAN_MAX_MEMORY_BYTES", str(50 * 2**20))
    with pytest.raises(InputError, match="demo:lfcn"):
        build_demo_case("lfcn", spacing_mm=0.3)


@pytest.mark.parametrize("name", CASES)
def test_volumes_and_geometry(cases, name):
    case = cases[name]
    ct, labels = case.ct, case.labels
    assert (ct.modality, ct.units, ct.array.dtype) == ("CT", "HU", np.int16)
    assert (labels.modality, labels.units, labels.array.dtype) == ("SEG", "label", np.uint8)
    assert ct.array.shape == labels.array.shape
    np.testing.assert_array_equal(ct.affine, labels.affine)
    np.testing.assert_allclose(ct.spacing, 0.5)
    np.testing.assert_allclose(ct.direction.T @ ct.direction, np.eye(3), atol=1e-12)
    assert np.linalg.det(ct.direction) > 0
    extent = (np.array(ct.shape_xyz) - 1) * ct.spacing
    assert np.all((extent >= 40.0) & (extent <= 80.0)), extent
    assert ct.array.nbytes < 20e6
    assert not ct.array.flags.writeable and not labels.array.flags.writeable
    assert case.description.count(".") in range(2, 6) and case.title
    assert sum(nerve.target for nerve in case.nerves) == 1
    assert case.target_nerve.target


def test_intercostal_grid_is_oblique_and_faces_back(cases):
    case = cases["intercostal"]
    direction = case.ct.direction
    off_diagonal = np.abs(direction - np.diag(np.diag(direction)))
    assert off_diagonal.max() > 0.25  # turned ~20 degrees, not axis-aligned
    inward = unit(case.landmarks["target_nerve_point"] - case.landmarks["skin_entry_suggestion"])
    # Posterolateral chest on the right: going in is anterior (-y) and towards the left (+x).
    assert inward[1] < -0.8 and inward[0] > 0.2


def test_other_cases_face_the_right_way(cases):
    lfcn = cases["lfcn"].landmarks
    inward = unit(lfcn["target_nerve_point"] - lfcn["skin_entry_suggestion"])
    assert inward[1] > 0.9  # from the front of the hip, going in is posterior
    morton = cases["morton"].landmarks
    inward = unit(morton["target_nerve_point"] - morton["skin_entry_suggestion"])
    assert inward[2] < -0.9  # from the dorsum of the foot, going in is down towards the sole


def test_spacing_changes_the_grid_not_the_anatomy(cases):
    fine, coarse = cases["morton"], build_demo_case("morton", spacing_mm=1.0)
    np.testing.assert_allclose(coarse.ct.spacing, 1.0)
    np.testing.assert_allclose(coarse.ct.origin, fine.ct.origin)
    np.testing.assert_allclose(coarse.ct.bounds_world(), fine.ct.bounds_world(), atol=0.51)
    # The same world point has the same tissue at both resolutions (away from edges).
    for key in ("metatarsal_head_3", "metatarsal_head_4", "neuroma_centre"):
        point = coarse.landmarks[key]
        assert coarse.labels.sample(point, order=0) == fine.labels.sample(point, order=0)


def test_builds_are_deterministic_and_cached_arrays_shared():
    import planner.demo as demo

    first = build_demo_case("lfcn", spacing_mm=1.5)
    hashes = [array_hash(v.array) for v in (first.ct, first.labels, first.ultrasound)]
    demo._build_cached.cache_clear()
    second = build_demo_case("lfcn", spacing_mm=1.5)
    assert second.ct.array is not first.ct.array  # really rebuilt
    assert [array_hash(v.array) for v in (second.ct, second.labels, second.ultrasound)] == hashes
    for a, b in zip(first.nerves + first.vessels, second.nerves + second.vessels):
        np.testing.assert_array_equal(a.points, b.points)
    third = build_demo_case("lfcn", spacing_mm=1.5)
    assert third.ct.array is second.ct.array  # cached


def test_callers_cannot_change_the_cache():
    case = build_demo_case("morton")
    case.ct.metadata["source"] = "changed"
    case.ct.modality = "MR"
    case.nerves.clear()
    case.landmarks.clear()
    with pytest.raises(ValueError):
        case.ct.array[0, 0, 0] = 0
    again = build_demo_case("morton")
    assert again.ct.modality == "CT" and again.ct.metadata["source"] == "demo:morton"
    assert again.nerves and again.landmarks


def test_importing_and_building_pull_no_rendering():
    code = (
        "import sys, planner.demo as d; d.build_demo_case('intercostal', spacing_mm=2.0); "
        "bad = [m for m in ('pyvista', 'vtk', 'trame', 'web') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ----------------------------------------------------------------------------- labels and HU
@pytest.mark.parametrize("name", CASES)
def test_label_set(cases, name):
    present = set(np.unique(cases[name].labels.array).tolist())
    needed = {Tissue.AIR, Tissue.SKIN, Tissue.FAT, Tissue.MUSCLE, Tissue.BONE, Tissue.NERVE, Tissue.VESSEL}
    if name == "intercostal":
        needed |= {Tissue.LUNG, Tissue.SOFT_TISSUE}
    assert needed <= present
    assert present <= {int(t) for t in Tissue}


# Median HU of each tissue's interior, eroded by enough voxels (1 mm) that the 1.1 mm
# FWHM blur of the synthetic scanner does not reach it.
BULK_HU_RANGES = {
    Tissue.AIR: (-1010, -985),
    Tissue.FAT: (-120, -80),
    Tissue.MUSCLE: (35, 65),
    Tissue.LUNG: (-900, -800),
}


@pytest.mark.parametrize("name", CASES)
def test_ct_numbers_per_tissue(cases, name):
    case = cases[name]
    hu, labels = case.ct.array.astype(float), case.labels.array
    for tissue, (low, high) in BULK_HU_RANGES.items():
        interior = ndimage.binary_erosion(labels == tissue, iterations=2)
        if tissue == Tissue.LUNG and name != "intercostal":
            continue
        assert low <= np.median(hu[interior]) <= high, tissue.name
    bone = labels == Tissue.BONE
    assert np.percentile(hu[bone], 95) >= 900  # cortical shell
    core = ndimage.binary_erosion(bone, iterations=3)  # past the 1-1.3 mm cortex
    assert 150 <= np.median(hu[core]) <= 500  # cancellous bone
    # Thin structures: read HU on their centrelines, >= 0.75 mm from their edge.
    for nerve in case.nerves:
        if nerve.radius_mm >= 1.0:
            assert 15 <= np.median(case.ct.sample(nerve.points)) <= 55, nerve.name
    for vessel in case.vessels:
        if vessel.radius_mm >= 1.0:
            assert 20 <= np.median(case.ct.sample(vessel.points)) <= 60, vessel.name
    # Skin (1.4-2.6 mm) is partial-volumed by the blur even one voxel in from its edges.
    skin_core = ndimage.binary_erosion(labels == Tissue.SKIN, iterations=1)
    assert -30 <= np.median(hu[skin_core]) <= 80
    # Noise: air far outside the body is -1000 HU with a 10-20 HU spread.
    air = ndimage.binary_erosion(labels == Tissue.AIR, iterations=3)
    assert 8 <= hu[air].std() <= 20


@pytest.mark.parametrize("name", CASES)
def test_centrelines_lie_in_their_labels(cases, name):
    case = cases[name]
    for nerve in case.nerves:
        assert np.all(case.labels.sample(nerve.points, order=0) == Tissue.NERVE), nerve.name
        assert np.all(case.ct.contains(nerve.points, margin_voxels=1e-3))
        assert nerve.length_mm() > 20.0
    for vessel in case.vessels:
        assert np.all(case.labels.sample(vessel.points, order=0) == Tissue.VESSEL), vessel.name
        assert vessel.kind in ("artery", "vein")
    # Structures are drawn apart: no vessel touches a nerve.
    for nerve in case.nerves:
        for vessel in case.vessels:
            gaps = np.linalg.norm(nerve.points[:, None] - vessel.points[None], axis=-1)
            gaps -= nerve.local_radii_mm()[:, None] + vessel.radius_mm
            assert gaps.min() > 0.2, (nerve.name, vessel.name)


# ----------------------------------------------------------------------------- sizes
def test_intercostal_sizes(cases):
    case = cases["intercostal"]
    marks = case.landmarks
    inward = unit(marks["target_nerve_point"] - marks["skin_entry_suggestion"])
    # "Up" along the chest wall: world superior made tangent to the skin.
    up = unit(np.array([0.0, 0.0, 1.0]) - inward[2] * inward)
    runs = runs_along(case, marks["skin_entry_suggestion"] - 2 * inward, inward, 50.0)
    assert [r[0] for r in runs[:3]] == [Tissue.AIR, Tissue.SKIN, Tissue.FAT]
    assert 1.3 <= runs[1][2] - runs[1][1] <= 2.5  # skin
    assert 7.0 <= runs[2][2] - runs[2][1] <= 15.0  # subcutaneous fat
    skin_to_nerve = first_distance(case, marks["skin_entry_suggestion"], inward, Tissue.NERVE, 50.0)
    assert 15.0 <= skin_to_nerve <= 40.0
    # The nerve is 2-3 mm across and lies just below the rib, above the next space.
    nerve_centre = marks["target_nerve_point"]
    assert 2.0 <= run_through(case, nerve_centre, up, Tissue.NERVE) <= 3.2
    assert 2.0 <= run_through(case, nerve_centre, inward, Tissue.NERVE) <= 3.2
    # Straight above the nerve are the artery and vein in the costal groove; the groove's
    # outer lip, the rib's lowest edge, is 1-5 mm above the nerve's centre.
    above = [r[0] for r in runs_along(case, nerve_centre, up, 10.0) if r[0] not in (Tissue.NERVE, Tissue.FAT, Tissue.MUSCLE)]
    assert [label for index, label in enumerate(above) if index == 0 or label != above[index - 1]][:2] == [
        Tissue.VESSEL,
        Tissue.BONE,
    ]
    assert 1.0 <= first_distance(case, nerve_centre - 3.5 * inward, up, Tissue.BONE, 20.0) <= 5.0
    assert first_distance(case, nerve_centre, -up, Tissue.BONE, 30.0) >= 10.0
    # ... and only a few millimetres outside the lung (the pneumothorax risk).
    assert 1.0 <= first_distance(case, nerve_centre, inward, Tissue.LUNG, 20.0) <= 6.0
    # Rib 7: 10-12 mm tall, 6-8 mm thick; the 7th space 15-20 mm.
    outer = marks["rib_7_outer_surface"]
    assert case.labels.sample(outer + 0.5 * inward, order=0) == Tissue.BONE
    assert case.labels.sample(outer - 0.5 * inward, order=0) != Tissue.BONE
    assert 6.0 <= run_through(case, outer + 3.5 * inward, inward, Tissue.BONE) <= 8.0
    inside_rib = outer + 2.0 * inward
    assert 10.0 <= run_through(case, inside_rib, up, Tissue.BONE) <= 12.5
    below = runs_along(case, inside_rib, -up, 40.0)
    assert below[0][0] == Tissue.BONE and below[1][0] != Tissue.BONE
    space = next(r for r in below[1:] if r[0] == Tissue.BONE)[1] - below[0][2]
    assert 14.0 <= space <= 21.0
    # The lower-edge landmark sits on the rib's lowest edge, and the nerve is below it.
    edge = marks["rib_7_lower_edge"]
    assert case.labels.sample(edge + 0.4 * up, order=0) == Tissue.BONE
    assert case.labels.sample(edge - 0.4 * up, order=0) != Tissue.BONE
    assert 0.5 <= edge[2] - nerve_centre[2] <= 5.0
    # Vein above artery above nerve (VAN), each 2-3 mm across.
    nerve = case.target_nerve
    vein = next(v for v in case.vessels if v.name == "intercostal_vein_7")
    artery = next(v for v in case.vessels if v.name == "intercostal_artery_7")
    vein_point, artery_point = nearest_point(vein.points, nerve_centre), nearest_point(artery.points, nerve_centre)
    assert vein_point[2] > artery_point[2] > nerve_centre[2]
    for point in (vein_point, artery_point):
        assert 1.8 <= run_through(case, point, inward, Tissue.VESSEL) <= 3.0
    assert nerve.name == "intercostal_nerve_T7"


def test_lfcn_sizes(cases):
    case = cases["lfcn"]
    marks = case.landmarks
    asis = marks["asis"]
    # The ASIS is the front tip of the bone.
    assert case.labels.sample(asis + [0.0, 1.5, 0.0], order=0) == Tissue.BONE
    assert case.labels.sample(asis - [0.0, 1.5, 0.0], order=0) != Tissue.BONE
    # Where the nerve passes closest to the ASIS it is 5-30 mm medial (+x for the right
    # hip) and 5-30 mm below it.
    nerve = case.target_nerve
    closest = nearest_point(nerve.points, asis)
    assert 5.0 <= closest[0] - asis[0] <= 30.0
    assert 5.0 <= asis[2] - closest[2] <= 30.0
    # At the target it is 2-3 mm across, under the skin by 5-25 mm, on the sartorius.
    target = marks["target_nerve_point"]
    assert 2.0 <= run_through(case, target, [1.0, 0.0, 0.0], Tissue.NERVE) <= 3.2
    posterior = np.array([0.0, 1.0, 0.0])
    assert 5.0 <= first_distance(case, marks["skin_entry_suggestion"], posterior, Tissue.NERVE, 40.0) <= 25.0
    after_nerve = [r for r in runs_along(case, target, posterior, 15.0) if r[0] != Tissue.NERVE]
    assert after_nerve[0][1] <= 2.0  # leaving the nerve backwards...
    muscle_at = next(r[1] for r in after_nerve if r[0] == Tissue.MUSCLE)
    assert muscle_at <= 4.0  # ... the sartorius is right behind it
    # Nothing but fascia, fat and skin between the nerve and the suggested entry point.
    in_front = {r[0] for r in runs_along(case, target, -posterior, target[1] - marks["skin_entry_suggestion"][1] + 1.0)}
    assert in_front <= {Tissue.NERVE, Tissue.SOFT_TISSUE, Tissue.FAT, Tissue.SKIN, Tissue.AIR}
    # A circumflex iliac vessel runs nearby.
    gaps = [np.linalg.norm(nerve.points[:, None] - v.points[None], axis=-1).min() for v in case.vessels]
    assert min(gaps) <= 15.0


def test_morton_sizes(cases):
    case = cases["morton"]
    marks = case.landmarks
    centre = marks["neuroma_centre"]
    lateral = np.array([1.0, 0.0, 0.0])
    # A fusiform neuroma ~5 mm across on a ~2 mm nerve.
    assert 4.0 <= run_through(case, centre, lateral, Tissue.NERVE) <= 6.5
    assert 4.0 <= run_through(case, centre, [0.0, 0.0, 1.0], Tissue.NERVE) <= 6.5
    length = run_through(case, centre, [0.0, 1.0, 0.0], Tissue.NERVE, half_length_mm=40.0)
    assert length > 20.0  # continuous with the nerve
    nerve = case.target_nerve
    proximal = nerve.points[np.argmax(nerve.points[:, 1])]
    assert 1.5 <= run_through(case, proximal - [0.0, 2.0, 0.0], lateral, Tissue.NERVE) <= 2.8
    assert 2.2 <= nerve.local_radii_mm().max() <= 3.2
    # Just plantar to the gap between the 3rd and 4th metatarsal heads, below the DTML,
    # 5-15 mm above the sole.
    up = np.array([0.0, 0.0, 1.0])
    assert centre[2] < marks["metatarsal_head_3"][2] - 5.0
    medial_bone = first_distance(case, centre + 4.0 * up, lateral, Tissue.BONE, 15.0)
    lateral_bone = first_distance(case, centre + 4.0 * up, -lateral, Tissue.BONE, 15.0)
    assert 2.5 <= medial_bone <= 8.0 and 2.5 <= lateral_bone <= 8.0
    above = [r[0] for r in runs_along(case, centre, up, 8.0) if r[0] not in (Tissue.NERVE, Tissue.FAT)]
    assert above and above[0] == Tissue.SOFT_TISSUE  # the deep transverse metatarsal ligament
    assert 5.0 <= first_distance(case, marks["skin_entry_plantar"] - up, up, Tissue.NERVE, 30.0) - 1.0 <= 15.0
    for key in ("metatarsal_head_3", "metatarsal_head_4"):
        assert case.labels.sample(marks[key], order=0) == Tissue.BONE
        assert 11.0 <= run_through(case, marks[key], lateral, Tissue.BONE) <= 15.0


# ----------------------------------------------------------------------------- ultrasound
def ultrasound_labels(case: DemoCase) -> np.ndarray:
    """The CT label map sampled at every ultrasound pixel: (rows, columns)."""
    us = case.ultrasound
    _, n_rows, n_columns = us.array.shape
    j, i = np.mgrid[0:n_rows, 0:n_columns]
    world = us.index_to_world(np.stack([i, j, np.zeros_like(i)], axis=-1))
    return case.labels.sample(world, order=0, fill_value=-1).astype(int)


@pytest.mark.parametrize("name", CASES)
def test_ultrasound_frame(cases, name):
    case = cases[name]
    us = case.ultrasound
    assert us.modality == "US" and us.array.dtype == np.uint8 and us.array.shape[0] == 1
    assert 0.1 <= us.spacing[0] <= 0.2 and 0.1 <= us.spacing[1] <= 0.2
    assert 35.0 <= us.array.shape[1] * us.spacing[1] <= 50.0  # depth
    image = us.array[0].astype(float)
    assert 20.0 <= image.mean() <= 150.0 and image.std() >= 20.0
    labels = ultrasound_labels(case)
    assert np.all(labels >= 0)  # the whole frame lies inside the CT volume
    # The probe face is on the skin: each column meets skin within 3 mm.
    rows_3mm = int(3.0 / us.spacing[1])
    assert np.all((labels[:rows_3mm] == Tissue.SKIN).any(axis=0))
    # Bone shadows: in columns that meet bone, the image 3-10 mm below the bone surface
    # is much darker than the 10 mm above it.
    spacing = us.spacing[1]
    above, below = [], []
    for column in range(labels.shape[1]):
        bone_rows = np.flatnonzero(labels[:, column] == Tissue.BONE)
        if bone_rows.size == 0 or bone_rows[0] * spacing < 10.0 or bone_rows[0] * spacing > us.array.shape[1] * spacing - 10.0:
            continue
        top = bone_rows[0]
        above.append(image[top - int(10 / spacing) : top - int(1 / spacing), column].mean())
        below.append(image[top + int(3 / spacing) : top + int(10 / spacing), column].mean())
    assert len(above) >= 20
    assert np.mean(below) < 0.35 * np.mean(above)


def test_intercostal_ultrasound_brightest_at_rib_and_pleura(cases):
    case = cases["intercostal"]
    us = case.ultrasound
    image = ndimage.gaussian_filter1d(us.array[0].astype(float), 1.0, axis=0)  # tame speckle peaks
    labels = ultrasound_labels(case)
    spacing = us.spacing[1]
    near, counted, kinds = 0, 0, set()
    for column in range(labels.shape[1]):
        profile = labels[:, column]
        bone = np.flatnonzero(profile == Tissue.BONE)
        lung = np.flatnonzero(profile == Tissue.LUNG)
        surface = bone[0] if bone.size else (lung[0] if lung.size else None)
        if surface is None:
            continue
        # Skip columns at a rib's rounded edge, where neither echo faces the probe.
        if bone.size and lung.size and abs(int(bone[0]) - int(lung[0])) * spacing < 6.0:
            continue
        kinds.add("bone" if bone.size else "pleura")
        counted += 1
        brightest = int(np.argmax(image[:, column]))
        near += abs(brightest - int(surface)) * spacing <= 1.5
    assert kinds == {"bone", "pleura"} and counted >= 200
    assert near >= 0.85 * counted


# ----------------------------------------------------------------------------- files
@pytest.mark.parametrize("name", ["intercostal", "morton"])
def test_write_demo_case_round_trip(cases, tmp_path, name):
    from planner.imaging import read_volume

    case = cases[name]
    folder = tmp_path / "new" / name
    written = write_demo_case(name, folder)
    assert set(written) == {"ct", "labels", "ultrasound", "nerves"}
    assert all(path.parent == folder and path.is_file() for path in written.values())
    for key, original in (("ct", case.ct), ("labels", case.labels), ("ultrasound", case.ultrasound)):
        loaded = read_volume(written[key])
        assert loaded.modality == original.modality, key
        np.testing.assert_array_equal(loaded.array, original.array)
        np.testing.assert_allclose(loaded.affine, original.affine, atol=1e-4)
    described = json.loads(written["nerves"].read_text())
    assert described["case"] == name and described["frame"] == "LPS" and described["units"] == "mm"
    assert [n["name"] for n in described["nerves"]] == [n.name for n in case.nerves]
    assert [n["target"] for n in described["nerves"]] == [n.target for n in case.nerves]
    for record, nerve in zip(described["nerves"], case.nerves):
        np.testing.assert_allclose(record["points_mm"], nerve.points, atol=1e-3)
    assert [v["kind"] for v in described["vessels"]] == [v.kind for v in case.vessels]
    for key, point in case.landmarks.items():
        np.testing.assert_allclose(described["landmarks"][key], point, atol=1e-3)


def test_write_demo_case_into_a_file_path_is_an_input_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="file"):
        write_demo_case("lfcn", blocker / "out")
