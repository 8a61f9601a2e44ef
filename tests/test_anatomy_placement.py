"""Probe placement geometry: insertion depth, angle to the skin, entry from a direction,
the active segment; skin distance and normal on a tilted plane of skin."""

import numpy as np
import pytest

from planner.anatomy import distance_to_skin, place_probe, placement_from_plan_probe, skin_normal
from planner.errors import InputError
from planner.labels import Tissue
from planner.plan import plan_from_dict
from planner.volume import Volume, affine_from_geometry

from geometry import rotation


GRIDS = {
    "axis-aligned": affine_from_geometry((0.5, 0.5, 0.5), (0.0, 0.0, 0.0)),
    "oblique anisotropic": affine_from_geometry((0.5, 0.6, 0.7), (-25.0, 40.0, 10.0), rotation(-30, 20, 65)),
}
SHAPE = (60, 64, 64)  # (k, j, i)
NORMAL_LOCAL = np.array([0.25, -0.35, 1.0]) / np.linalg.norm([0.25, -0.35, 1.0])
SKIN_POINT_LOCAL = np.array([16.0, 19.0, 20.0])


class TiltedSkin:
    """Body below a tilted plane (outward normal NORMAL_LOCAL in the grid's own mm frame):
    skin 1.5 mm thick over muscle, air above. Everything analytic is done in the grid
    frame and carried to world, so the answers hold on any grid."""

    def __init__(self, affine):
        self.volume = Volume(np.zeros(SHAPE, np.uint8), affine)
        self.spacing = self.volume.spacing
        k, j, i = np.indices(SHAPE)
        local = np.stack([i, j, k], axis=-1) * self.spacing
        height = (local - SKIN_POINT_LOCAL) @ NORMAL_LOCAL
        labels = np.full(SHAPE, Tissue.MUSCLE, np.uint8)
        labels[height > -1.5] = Tissue.SKIN
        labels[height > 0] = Tissue.AIR
        self.labels = Volume(labels, affine, modality="SEG", units="label")
        # The voxelised surface lies between the last body and first air voxel centres:
        # on average a quarter of a voxel's width along the normal above the plane.
        self.tolerance = 0.5 * float(np.abs(NORMAL_LOCAL) @ self.spacing)

    def world(self, local):
        return self.volume.index_to_world(np.asarray(local, dtype=float) / self.spacing)

    def world_direction(self, local_direction):
        return self.world(local_direction) - self.world(np.zeros(3))

    def shaft(self, angle_deg, depth_mm):
        """Entry on the plane and a tip ``depth_mm`` along a shaft at ``angle_deg`` to the normal."""
        side = np.cross(NORMAL_LOCAL, [1.0, 0.0, 0.0])
        side /= np.linalg.norm(side)
        angle = np.radians(angle_deg)
        inward = -(np.cos(angle) * NORMAL_LOCAL + np.sin(angle) * side)
        return self.world(SKIN_POINT_LOCAL), self.world(SKIN_POINT_LOCAL + inward * depth_mm)


@pytest.fixture(scope="module", params=list(GRIDS))
def tilted(request):
    return TiltedSkin(GRIDS[request.param])


def test_distance_to_a_tilted_skin_is_the_perpendicular_distance(tilted):
    normal_world = tilted.world_direction(NORMAL_LOCAL)
    above = tilted.world(SKIN_POINT_LOCAL + NORMAL_LOCAL * 5.0)
    below = tilted.world(SKIN_POINT_LOCAL - NORMAL_LOCAL * 3.0)
    assert distance_to_skin(tilted.labels, above) == pytest.approx(5.0, abs=tilted.tolerance)
    assert distance_to_skin(tilted.labels, below) == pytest.approx(-3.0, abs=tilted.tolerance)
    normal = skin_normal(tilted.labels, tilted.world(SKIN_POINT_LOCAL))
    assert np.degrees(np.arccos(np.clip(normal @ normal_world, -1, 1))) < 1.0


@pytest.mark.parametrize("angle_deg", [0.0, 30.0, 55.0])
def test_insertion_depth_and_angle_to_the_skin_match_the_geometry(tilted, angle_deg):
    entry, tip = tilted.shaft(angle_deg, 25.0)
    placement = place_probe(tilted.labels, tip=tip, entry=entry, model="n2o-16g", name="A")
    assert placement.angle_to_skin_normal_deg == pytest.approx(angle_deg, abs=1.0)
    assert placement.angle_to_skin_surface_deg == pytest.approx(90.0 - angle_deg, abs=1.0)
    along_shaft = tilted.tolerance / np.cos(np.radians(angle_deg))
    assert placement.insertion_depth_mm == pytest.approx(25.0, abs=along_shaft)
    assert placement.shaft_length_mm == pytest.approx(25.0)
    assert abs(placement.entry_to_skin_mm) <= tilted.tolerance
    np.testing.assert_allclose(placement.direction, (tip - entry) / 25.0)


def test_entry_from_a_direction_and_depth_or_from_the_skin(tilted):
    entry, tip = tilted.shaft(40.0, 20.0)
    direction = (tip - entry) * 3.0  # any length
    by_depth = place_probe(tilted.labels, tip=tip, direction=direction, depth_mm=20.0, model="n2o-14g")
    np.testing.assert_allclose(by_depth.entry, entry, atol=1e-9)
    by_skin = place_probe(tilted.labels, tip=tip, direction=direction, model="n2o-14g")
    assert np.linalg.norm(by_skin.entry - entry) < tilted.tolerance / np.cos(np.radians(40.0))
    assert by_skin.insertion_depth_mm == by_skin.shaft_length_mm
    assert abs(by_skin.entry_to_skin_mm) < tilted.tolerance


def test_an_entry_lifted_off_the_skin_keeps_the_depth_from_the_skin(tilted):
    entry, tip = tilted.shaft(0.0, 20.0)
    lifted = entry + tilted.world_direction(NORMAL_LOCAL) * 6.0
    placement = place_probe(tilted.labels, tip=tip, entry=lifted, diameter_mm=1.0, active_length_mm=5.0)
    assert placement.entry_to_skin_mm == pytest.approx(6.0, abs=tilted.tolerance)
    assert placement.insertion_depth_mm == pytest.approx(20.0, abs=tilted.tolerance)
    assert placement.shaft_length_mm == pytest.approx(26.0)
    assert placement.model == ""


def test_the_active_segment_runs_back_from_the_tip_offset():
    tip, entry = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 53.0])
    placement = place_probe(None, tip=tip, entry=entry, model="argon-17g")  # offset 3, length 15
    np.testing.assert_allclose(placement.active_segment, [[1, 2, 6], [1, 2, 21]])
    np.testing.assert_allclose(placement.active_centre, [1, 2, 13.5])
    assert placement.radius_mm == pytest.approx(1.47 / 2)
    assert placement.insertion_depth_mm is None and placement.angle_to_skin_normal_deg is None
    custom = place_probe(None, tip=tip, entry=entry, model="argon-17g", tip_offset_mm=0.0, active_length_mm=4.0)
    np.testing.assert_allclose(custom.active_segment, [[1, 2, 3], [1, 2, 7]])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"entry": [0, 0, 10], "direction": [0, 0, -1]}, "either entry or direction"),
        ({}, "either entry or direction"),
        ({"entry": [0, 0, 10], "depth_mm": 5.0}, "depth_mm goes with direction"),
        ({"entry": [0, 0, 0]}, "entry must differ"),
        ({"direction": [0, 0, 0], "depth_mm": 5.0}, "must not be zero"),
        ({"direction": [0, 0, 1], "depth_mm": -5.0}, "depth_mm"),
        ({"direction": [0, 0, 1]}, "needs a tissue map"),
        ({"entry": [0, 0, 10], "model": "no-such-probe"}, "unknown probe model"),
        ({"entry": [0, 0, 10], "model": None}, "diameter_mm: needed"),
    ],
)
def test_place_probe_refuses_unclear_input(kwargs, message):
    kwargs = {"model": "n2o-16g", **kwargs}
    with pytest.raises(InputError, match=message):
        place_probe(None, tip=[0, 0, 0], **kwargs)


def test_plan_probes_take_their_numbers_from_the_catalogue_or_the_plan():
    plan = plan_from_dict({
        "format": "cryoplan.plan", "schema_version": 1, "name": "p", "volume": None,
        "tissue": {"source": "homogeneous", "class": "muscle"},
        "probes": [
            {"name": "A", "model": "n2o-16g", "tip": [0, 0, 0], "entry": [0, 0, 30]},
            {"name": "B", "model": "custom", "tip": [5, 0, 0], "entry": [5, 0, 30], "diameter_mm": 1.2,
             "active_length_mm": 9, "tip_offset_mm": 1, "boundary": {"kind": "temperature", "freeze_temperature": -80}},
        ],
        "protocol": [{"kind": "freeze", "duration_s": 60}],
    })
    a, b = (placement_from_plan_probe(probe, None) for probe in plan.probes)
    assert (a.name, a.model, a.diameter_mm, a.active_length_mm) == ("A", "n2o-16g", 1.65, 6.0)
    assert (b.name, b.model, b.diameter_mm, b.active_length_mm, b.tip_offset_mm) == ("B", "custom", 1.2, 9.0, 1.0)
    np.testing.assert_allclose(b.active_segment, [[5, 0, 1], [5, 0, 10]])
