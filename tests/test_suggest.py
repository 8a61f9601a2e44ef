"""Suggested placement on a synthetic block: skin on top, fat, muscle, a bone plate, and a
straight nerve at a known depth."""

import numpy as np
import pytest

from planner.anatomy import Nerve, check_trajectory, distance_to_skin
from planner.errors import InputError
from planner.labels import Tissue
from planner.metrics import AXONOTMESIS_C
from planner.suggest import nerve_segment, suggest_placement
from planner.thermal.protocol import ProtocolStep
from planner.volume import Volume, affine_from_geometry

H = 0.5  # label voxel size, mm
SKIN_TOP = 40.0  # the skin surface, mm (z up; air above)
PROTOCOL = [ProtocolStep("freeze", 120.0)]
MODEL = "n2o-14g"
# A small search keeps the test quick; the preview table is computed once (1 mm cells).
SEARCH = {"tip_step_mm": 4.0, "n_directions": 40, "preview_spacing_mm": 1.0}


def block(*, bone_plate=None, bone_window_x=None):
    """Labels of a 50 x 40 x 45 mm block (x, y, z): air above z = 40, skin 1.5 mm, fat 4 mm,
    muscle below; optionally bone from z = bone_plate[0] to bone_plate[1] with a window
    (no bone) for x in bone_window_x."""
    nz, ny, nx = 90, 80, 100
    z = (np.arange(nz) + 0.5) * H
    x = (np.arange(nx) + 0.5) * H
    array = np.full((nz, ny, nx), Tissue.MUSCLE, np.uint8)
    array[z > SKIN_TOP] = Tissue.AIR
    array[(z > SKIN_TOP - 1.5) & (z <= SKIN_TOP)] = Tissue.SKIN
    array[(z > SKIN_TOP - 5.5) & (z <= SKIN_TOP - 1.5)] = Tissue.FAT
    if bone_plate is not None:
        layer = (z > bone_plate[0]) & (z <= bone_plate[1])
        plate = np.ones(nx, dtype=bool) if bone_window_x is None else ~((x > bone_window_x[0]) & (x < bone_window_x[1]))
        array[np.ix_(layer, np.ones(ny, dtype=bool), plate)] = Tissue.BONE
    return Volume(array, affine_from_geometry((H, H, H), (H / 2,) * 3), modality="SEG", units="label")


def nerve_at_depth(depth_mm, *, radius=0.75, name="N"):
    z = SKIN_TOP - depth_mm
    return Nerve(name, [[5.0, 20.0, z], [45.0, 20.0, z]], radius)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("preview_cache")


def assert_clear(suggestion, labels, nerve):
    for probe in suggestion.probes:
        warnings = check_trajectory(probe.tip, probe.entry, labels, nerves=[nerve], probe_diameter_mm=2.11)
        assert not [w for w in warnings if w.code.startswith(("shaft_crosses", "tip_outside", "entry_"))], warnings
        assert abs(distance_to_skin(labels, probe.entry)) < 1.0  # the entry is on the skin


def test_the_suggestion_covers_a_nerve_and_beats_a_bad_start(cache):
    labels = block(bone_plate=(8.0, 12.0))
    nerve = nerve_at_depth(15.0)
    bad_start = [((25.0, 32.0, 25.0), (25.0, 32.0, SKIN_TOP))]  # 12 mm beside the nerve
    suggestion = suggest_placement(nerve, MODEL, labels=labels, protocol=PROTOCOL, segment_mm=(12.0, 28.0),
                                   start=bad_start, confirm_spacing_mm=1.0, cache_dir=cache, **SEARCH)
    assert suggestion.found and len(suggestion.probes) == 1
    assert suggestion.nerve.length_mm == pytest.approx(16.0)
    assert suggestion.start_covered_mm == 0.0
    assert suggestion.preview_covered_mm > 3.0
    # The full solver confirms coverage below -20 degC over several millimetres.
    assert suggestion.covered_mm is not None and suggestion.covered_mm > 2.0
    assert suggestion.covered_mm == pytest.approx(suggestion.metrics.nerve("N").covered_mm[AXONOTMESIS_C])
    assert suggestion.preview_minus_full_mm == pytest.approx(suggestion.preview_covered_mm - suggestion.covered_mm)
    assert_clear(suggestion, labels, nerve)
    # The skin stays out of the ice by the margin (within a cell of the full solver's 1 mm grid).
    assert suggestion.preview_skin_min_c >= 0.0
    assert suggestion.metrics.skin.clearance_mm > 3.0 - 1.0
    assert not [w for w in suggestion.metrics.warnings if w.code == "skin_frozen"]
    lines = suggestion.describe()
    assert any(line.startswith("full solver:") for line in lines)
    data = suggestion.to_dict()
    assert data["probes"][0]["model"] == MODEL and data["covered_mm"] == pytest.approx(suggestion.covered_mm, abs=0.01)


def test_the_shaft_goes_through_the_window_in_a_bone_plate(cache):
    # Bone 4 mm above the nerve everywhere except a window at x 30-40 mm: the only clear way
    # in passes through the window.
    labels = block(bone_plate=(18.0, 22.0), bone_window_x=(30.0, 40.0))
    nerve = nerve_at_depth(25.0)
    suggestion = suggest_placement(nerve, MODEL, labels=labels, protocol=PROTOCOL, segment_mm=(15.0, 35.0),
                                   confirm=False, cache_dir=cache, **SEARCH)
    assert suggestion.found
    assert_clear(suggestion, labels, nerve)
    (probe,) = suggestion.probes
    tip, entry = np.array(probe.tip), np.array(probe.entry)
    # Where the shaft passes the plate (z = 20), it is inside the window.
    s = (20.0 - tip[2]) / (entry[2] - tip[2])
    assert 30.0 < tip[0] + s * (entry[0] - tip[0]) < 40.0
    assert suggestion.preview_covered_mm > 0.0
    assert suggestion.metrics is None and suggestion.covered_mm is None


def test_a_shallow_nerve_cannot_be_frozen_without_freezing_near_the_skin(cache):
    # 8 mm deep, under 1.5 mm of skin: the band to keep free of ice (3 mm under the skin)
    # ends 3.5 mm above the nerve, and the 0 degC surface reaches about 5 mm from the probe.
    labels = block()
    nerve = nerve_at_depth(8.0)
    options = dict(labels=labels, protocol=PROTOCOL, segment_mm=(12.0, 28.0), confirm=False, cache_dir=cache, **SEARCH)
    safe = suggest_placement(nerve, MODEL, **options)
    assert not safe.found and safe.probes == []
    assert any(w.startswith("no placement found") for w in safe.warnings)
    # Without a margin there is a placement, and its ice stays out of the skin itself.
    free = suggest_placement(nerve, MODEL, skin_margin_mm=0.0, **options)
    assert free.found and free.preview_covered_mm > 0.0
    assert free.preview_skin_min_c >= 0.0
    assert_clear(free, labels, nerve)


def test_a_second_probe_adds_coverage(cache):
    labels = block()
    nerve = nerve_at_depth(15.0)
    two = suggest_placement(nerve, MODEL, n_probes=2, labels=labels, protocol=PROTOCOL, segment_mm=(12.0, 28.0),
                            confirm=False, cache_dir=cache, **SEARCH)
    assert len(two.probes) == 2 and [p.name for p in two.probes] == ["A", "B"]
    one_alone, both = two.preview_covered_per_probe_mm
    assert both > one_alone > 0.0
    assert two.preview_covered_mm == both
    a, b = (np.array(p.tip) for p in two.probes)
    assert np.linalg.norm(a - b) >= 3.0  # the probes are apart
    assert_clear(two, labels, nerve)


def test_the_search_field_is_the_preview(cache):
    """The search's own lookups agree with planner.thermal.preview.preview_at_points."""
    from planner.catalog import get_probe, tissue_properties_for_labels
    from planner.suggest import _Context
    from planner.thermal.preview import preview_at_points

    labels = block()
    nerve = nerve_at_depth(15.0)
    properties = tissue_properties_for_labels()
    options = {"solver_spacing_mm": 1.0, "cache_dir": cache}
    context = _Context(segment=nerve, model=get_probe(MODEL), labels=labels, protocol=PROTOCOL, properties=properties,
                       skin_margin_mm=3.0, nerves=[nerve], preview_options=options, search_tissue=int(Tissue.MUSCLE))
    rng = np.random.default_rng(4)
    points = np.array([25.0, 20.0, 25.0]) + rng.uniform(-8, 8, (500, 3))
    tips = [np.array([24.0, 22.0, 23.0]), np.array([29.0, 18.0, 26.0])]
    directions = [np.array([0.0, 0.0, -1.0]), np.array([0.6, 0.0, -0.8])]
    ours = context.field(points, tips, directions)
    probes = [context.place(t, d, name=n) for t, d, n in zip(tips, directions, "AB")]
    theirs = preview_at_points(probes, PROTOCOL, points, properties=properties, tissue=int(Tissue.MUSCLE), **options)
    assert ours.min() < -20.0 and ours.max() > 30.0
    assert np.allclose(ours, theirs, atol=0.05)


def test_nerve_segment_cuts_by_arc_length():
    nerve = Nerve("N", [[0, 0, 0], [10, 0, 0], [10, 10, 0]], 1.0)
    part = nerve_segment(nerve, 5.0, 15.0)
    assert part.length_mm == pytest.approx(10.0)
    assert np.allclose(part.centreline[0], [5, 0, 0]) and np.allclose(part.centreline[-1], [10, 5, 0])
    assert nerve_segment(nerve, -5.0, 3.0).length_mm == pytest.approx(3.0)
    with pytest.raises(InputError, match="empty"):
        nerve_segment(nerve, 30.0, 40.0)


def test_bad_arguments_are_input_errors():
    labels = block()
    nerve = nerve_at_depth(15.0)
    with pytest.raises(InputError, match="n_probes"):
        suggest_placement(nerve, MODEL, labels=labels, protocol=PROTOCOL, n_probes=3)
    with pytest.raises(InputError, match="unknown|probe"):
        suggest_placement(nerve, "no-such-probe", labels=labels, protocol=PROTOCOL)
    with pytest.raises(InputError, match="labels"):
        suggest_placement(nerve, MODEL, labels=None, protocol=PROTOCOL)
