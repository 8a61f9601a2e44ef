"""Grid construction, shape rasterisation and box sizing."""

import numpy as np
import pytest

from planner.thermal import PlacedProbe, ProbeBoundary, ProtocolStep, generic_soft_tissue
from planner.thermal.geometry import Cylinder, HalfSpace, Sphere, rasterise
from planner.thermal.grid import ThermalGrid, stretched_faces, uniform_faces, zoned_faces
from planner.thermal.properties import TissueProperties
from planner.thermal.sizing import radial_reach


def test_stretched_faces_keep_a_uniform_core_and_grow_outwards():
    faces = stretched_faces(-2.0, 2.0, -20.0, 20.0, 0.25, ratio=1.2, max_cell=1.0)
    widths = np.diff(faces)
    core = (faces[:-1] >= -2.0 - 1e-9) & (faces[1:] <= 2.0 + 1e-9)
    assert np.allclose(widths[core], 0.25) and core.sum() == 16
    assert faces[0] <= -20.0 and faces[-1] >= 20.0
    assert widths.max() == pytest.approx(1.0)
    ratios = widths[1:] / widths[:-1]
    assert np.all(ratios <= 1.2 + 1e-9) and np.all(ratios >= 1 / 1.2 - 1e-9)
    assert np.allclose(uniform_faces(-1.0, 1.0, 0.5), [-1.0, -0.5, 0.0, 0.5, 1.0])


def test_zoned_faces_have_a_fine_core_a_middle_zone_and_a_growing_far_field():
    faces = zoned_faces(-1.0, 1.0, -6.0, 6.0, -30.0, 30.0, 0.25, 0.5, middle_ratio=1.25, outer_ratio=1.5, max_cell=4.0)
    widths = np.diff(faces)
    centres = 0.5 * (faces[1:] + faces[:-1])
    assert np.allclose(widths[np.abs(centres) < 1.0], 0.25) and (np.abs(centres) < 1.0).sum() == 8
    # the middle zone reaches its spacing within a few cells and keeps it to its edge
    middle = (np.abs(centres) > 2.0) & (np.abs(centres) < 6.0)
    assert np.allclose(widths[middle], 0.5)
    assert np.all(widths[(np.abs(centres) > 1.0) & (np.abs(centres) < 6.0)] <= 0.5 + 1e-9)
    # beyond it the cells grow by at most 1.5x up to max_cell, and the box is covered
    outer = np.abs(centres) > 6.5
    assert widths[outer].max() == pytest.approx(4.0) and widths[outer].min() > 0.5
    ratios = widths[1:] / widths[:-1]
    assert np.all(ratios <= 1.5 + 1e-9) and np.all(ratios >= 1 / 1.5 - 1e-9)
    assert faces[0] <= -30.0 and faces[-1] >= 30.0
    assert np.allclose(faces, -faces[::-1])
    # no middle zone of its own: the same faces as stretched_faces
    assert np.allclose(zoned_faces(-2.0, 2.0, -2.0, 2.0, -20.0, 20.0, 0.25, 0.25, outer_ratio=1.2, max_cell=1.0),
                       stretched_faces(-2.0, 2.0, -20.0, 20.0, 0.25, ratio=1.2, max_cell=1.0))
    with pytest.raises(ValueError, match="middle_spacing"):
        zoned_faces(-1.0, 1.0, -2.0, 2.0, -3.0, 3.0, 0.5, 0.25)


def test_grid_geometry_round_trips_and_uniform_affine_matches_cell_centres():
    angle = np.deg2rad(20.0)
    direction = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    grid = ThermalGrid.uniform((4, 5, 6), 0.5, origin=(10.0, -3.0, 7.0), direction=direction, lower=(-1.5, -1.25, -1.0))
    assert grid.shape == (4, 5, 6) and grid.is_uniform
    points = np.random.default_rng(3).normal(size=(10, 3))
    assert np.allclose(grid.world_to_local(grid.local_to_world(points)), points)
    affine = grid.affine
    first_centre = grid.local_to_world([grid.centres(0)[0], grid.centres(1)[0], grid.centres(2)[0]])
    assert np.allclose(affine[:3, 3], first_centre)
    assert np.allclose(affine[:3, :3], direction * 0.5)
    assert grid.cell_volumes().sum() == pytest.approx(4 * 5 * 6 * 0.125)
    assert np.array_equal(grid.locate([[-1.4, -1.2, -0.9], [100.0, 0, 0]]), [[0, 0, 0], [-1, -1, -1]])


def test_half_space_links_put_the_surface_on_the_face():
    grid = ThermalGrid(np.arange(-1, 10) * 0.5, [0.0, 1.0], [0.0, 1.0], np.zeros(3), np.eye(3))
    region = rasterise(grid, HalfSpace((0.0, 0.0, 0.0), (1.0, 0.0, 0.0)))
    assert region.cells.tolist() == [0]
    assert region.link_scale.tolist() == pytest.approx([2.0])  # surface half a cell from the tissue centre


def test_cut_cell_links_for_a_thick_cylinder_and_a_sphere():
    faces = np.arange(-16, 17) * 0.25
    grid = ThermalGrid(faces, faces, np.arange(-4, 5) * 0.25, np.zeros(3), np.eye(3))
    cylinder = rasterise(grid, Cylinder((0.0, 0.0, -1.0), (0.0, 0.0, 1.0), 1.0))
    # the cells whose centre is inside, by volume, approximate the cylinder's volume
    assert cylinder.weights.sum() == pytest.approx(1.0)
    assert np.all((cylinder.link_scale >= 1.0) & (cylinder.link_scale <= 4.0))
    sphere = rasterise(grid, Sphere((0.0, 0.0, 0.0), 0.6))
    assert sphere.cells.size > 0 and np.all(sphere.link_scale >= 1.0)


def test_needle_on_a_grid_line_gets_peaceman_consistent_links():
    """A line of held cells acts like a 0.208 h cylinder; a needle of that radius needs no correction."""
    faces = (np.arange(-8, 9) - 0.5) * 1.0
    grid = ThermalGrid(faces, faces, np.arange(0, 5) * 1.0, np.zeros(3), np.eye(3))
    for radius, expected in ((0.208, 1.0), (0.41, (np.pi / 2) / np.log(1 / 0.41))):
        region = rasterise(grid, Cylinder((0.0, 0.0, 0.5), (0.0, 0.0, 3.5), radius))
        sideways = np.isclose(region.link_coefficient, 1e6)  # links across the axis (1 mm cells)
        assert region.cells.size == 4
        assert region.link_scale[sideways] == pytest.approx(np.full(sideways.sum(), expected), rel=2e-3)
        assert any("below the cell size" in note for note in region.notes)


def test_radial_sizing_matches_the_line_sink_front():
    """A thin heat-flux probe in R98 tissue: the 0 degC reach is the Carslaw-Jaeger front."""
    tissue = TissueProperties("R98", 0.5, 2.0, 3.6e6, 1.8e6, 300e6, liquidus=0.25, solidus=-0.25,
                              frozen_conductivity_varies=False)
    probe = PlacedProbe("p", (0, 0, 0), (0, 0, 1), 0.05, 10.0, ProbeBoundary("heat_flux", heat_flux_per_length=500.0))
    reach = radial_reach(probe, [ProtocolStep("freeze", 600.0)], tissue, levels=(0.0, -20.0))
    assert reach[0] == pytest.approx(12.247, rel=0.03)
    assert reach[1] == pytest.approx(7.278, rel=0.05)


def test_radial_sizing_grows_with_colder_probes_and_longer_freezes():
    tissue = generic_soft_tissue(perfusion=0.0005)

    def reach(temperature, seconds):
        probe = PlacedProbe("p", (0, 0, 0), (0, 0, 1), 1.65, 7.0,
                            ProbeBoundary("temperature", freeze_temperature=temperature))
        return radial_reach(probe, [ProtocolStep("freeze", seconds)], tissue)

    assert reach(-140.0, 120.0)[0] > reach(-75.0, 120.0)[0] > 0
    assert reach(-75.0, 300.0)[0] > reach(-75.0, 120.0)[0]
    assert reach(-75.0, 120.0)[1] > reach(-75.0, 120.0)[0]  # cooling reaches beyond the ice


def test_probe_aligned_grid_puts_the_first_needle_on_cell_centres_and_count_only_plans_steps():
    from planner.thermal import simulate

    boundary = ProbeBoundary("temperature", freeze_temperature=-75.0)
    probe = PlacedProbe("p", (1.3, -2.7, 4.1), (11.3, 7.3, 14.1), 0.41, 6.0, boundary)
    protocol = [ProtocolStep("freeze", 30.0), ProtocolStep("passive_thaw", 10.0)]
    planned = simulate([probe], protocol, tissue=3, properties={3: generic_soft_tissue()}, spacing_mm=0.3,
                       count_only=True)
    grid = planned.grid
    assert np.allclose(grid.direction[:, 2], probe.axis)
    assert np.allclose(grid.origin, probe.tip)
    for axis in (0, 1):
        assert np.min(np.abs(grid.centres(axis))) < 1e-9  # the needle's axis is a line of cell centres
    assert planned.steps > 0 and planned.history["stage_updates"] >= planned.steps * grid.size * 2
    assert np.mean(planned.temperatures == np.float32(37.0)) > 0.99  # nothing was computed beyond the probe
