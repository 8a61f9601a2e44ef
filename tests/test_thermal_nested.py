"""The nested grid (planner.thermal.grid.NestedGrid): nesting rules, the coupling between
levels (the kernel against the link list, heat conservation), results on one grid, and
simulate(layout="nested") against the rectilinear grid."""

import numpy as np
import pytest

from planner.labels import Tissue
from planner.thermal import PlacedProbe, ProbeBoundary, ProtocolStep, generic_soft_tissue, kernels, simulate
from planner.thermal.grid import NestedGrid, ThermalGrid, uniform_faces
from planner.thermal.solver import Phase, solve

MUSCLE = int(Tissue.MUSCLE)
PROPERTIES = {MUSCLE: generic_soft_tissue(perfusion=0.0005, name="muscle")}


def three_levels(h=0.5):
    """Level 0: 12 cells of 4h per axis with two stretched ones each side; level 1 (2h) over its
    cells 4..8 in x, 3..9 in y, 4..9 in z; level 2 (h) inside that."""
    def axis(lo1, hi1, lo2, hi2):
        core = uniform_faces(0.0, 12 * 4 * h, 4 * h)
        coarse = np.concatenate([[-10 * h, -4 * h], core, [core[-1] + 6 * h, core[-1] + 14 * h]])
        return coarse, uniform_faces(lo1 * 4 * h, hi1 * 4 * h, 2 * h), uniform_faces(lo2 * 4 * h, hi2 * 4 * h, h)
    x, y, z = axis(4, 8, 5, 7), axis(3, 9, 4.5, 7.5), axis(4, 9, 5, 8)
    frame = dict(origin=np.array([1.0, -2.0, 3.0]), direction=np.eye(3))
    return NestedGrid([ThermalGrid(x[i], y[i], z[i], **frame) for i in range(3)])


def test_nesting_rules_are_checked():
    grid = three_levels()
    assert grid.size == sum(level.size for level in grid.levels)
    assert grid.covered().sum() == 4 * 6 * 5 + 4 * 6 * 6  # parent cells under levels 1 and 2
    base = grid.levels[0]
    # a child whose box edge is not a parent face
    bad = ThermalGrid(uniform_faces(8.2, 16.2, 1.0), base.y_faces[4:7], base.z_faces[4:7], base.origin, base.direction)
    with pytest.raises(ValueError, match="must be faces of level 0"):
        NestedGrid([base, bad])
    # a child touching the parent's outer layer
    edge = ThermalGrid(uniform_faces(base.x_faces[0], base.x_faces[3], 1.0), uniform_faces(6.0, 10.0, 1.0),
                       uniform_faces(8.0, 12.0, 1.0), base.origin, base.direction)
    with pytest.raises(ValueError, match="at least one parent cell inside"):
        NestedGrid([base, edge])
    # a child of the parent's cell size
    same = ThermalGrid(uniform_faces(8.0, 16.0, 2.0), uniform_faces(6.0, 10.0, 2.0), uniform_faces(8.0, 12.0, 2.0),
                       base.origin, base.direction)
    with pytest.raises(ValueError, match="twice its cell width"):
        NestedGrid([base, same])


def reference_interface(grid, T, K, factor):
    """The coupling from the link list, in plain numpy."""
    child, parent, c_child, c_parent, share = grid.interface_links()
    k1, k2 = K[child].astype(float), K[parent].astype(float)
    flow = factor * k1 * k2 / (share * k2 + (1 - share) * k1) * (T[parent] - T[child])
    out = np.zeros(T.size)
    np.add.at(out, child, c_child * flow)
    np.add.at(out, parent, -c_parent * flow)
    return out


def test_interface_kernel_matches_the_link_list_and_conserves_heat():
    grid = three_levels()
    rng = np.random.default_rng(3)
    T = rng.uniform(-80.0, 37.0, grid.size).astype(np.float64)
    K = rng.uniform(0.4, 3.0, grid.size).astype(np.float64)
    levels = np.array([[o, *lv.shape] for lv, o in zip(grid.levels, grid.offsets)], dtype=np.int64)
    boxes = np.zeros((3, 6), dtype=np.int64)
    spacing = np.zeros(3)
    for number in (1, 2):
        boxes[number] = np.ravel(grid.child_ranges(number))
        spacing[number] = grid.levels[number].spacing * 1e-3
    out = np.zeros(grid.size)
    kernels.add_interface_fluxes(T, K, levels, boxes, spacing, 0.7, out)
    expected = reference_interface(grid, T, K, 0.7)
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
    # every boundary cell of levels 1 and 2 has a link, and nothing else moves
    child, parent = grid.interface_links()[:2]
    assert np.all(out[np.setdiff1d(np.arange(grid.size), np.r_[child, parent])] == 0.0)
    # what the children gain the parents lose (W, summed over cell volumes)
    volumes = grid.cell_volumes()
    assert abs(np.sum(out * volumes)) < 1e-9 * np.sum(np.abs(out) * volumes)


def test_a_closed_nested_box_conserves_heat_and_relaxes_to_one_temperature():
    grid = three_levels()
    rng = np.random.default_rng(5)
    initial = rng.uniform(-30.0, 37.0, grid.size)
    tissue = generic_soft_tissue(perfusion=0.0, name="no sources")  # no perfusion, no metabolic heat
    result = solve(grid, np.zeros(grid.size, np.uint8), [tissue], [Phase(200.0)], initial_temperature=initial,
                   outer_boundary="insulated", dtype=np.float64)
    output = result.grid
    # the merged enthalpy (cell by cell, order 0) integrates to the nested grid's
    start = solve(grid, np.zeros(grid.size, np.uint8), [tissue], [Phase(1e-6)], initial_temperature=initial,
                  outer_boundary="insulated", dtype=np.float64, max_step=1e-6)
    volumes = output.cell_volumes()
    before = float(np.sum(start.final_enthalpy * volumes))
    after = float(np.sum(result.final_enthalpy * volumes))
    assert after == pytest.approx(before, rel=1e-9)
    final = result.temperatures[-1]
    assert final.max() - final.min() < 0.5 * (initial.max() - initial.min())


def test_results_on_one_grid_are_exact_for_linear_fields():
    grid = three_levels()
    centres = np.concatenate([level.cell_centres_local().reshape(-1, 3) for level in grid.levels])
    field = 2.0 * centres[:, 0] - 0.5 * centres[:, 1] + 3.0 * centres[:, 2]
    output = grid.output_grid()
    merged = grid.to_output(field)
    expected = output.cell_centres_local() @ np.array([2.0, -0.5, 3.0])
    # away from level 0's outermost cells (where interpolation clamps) the trilinear merge is exact
    inner = (slice(3, -3),) * 3
    np.testing.assert_allclose(merged[inner], expected[inner], atol=1e-9)
    # order 0 keeps integrals: each output cell takes its level cell's value
    volumes = grid.cell_volumes()
    covered = grid.covered()
    injected = grid.to_output(field, order=0)
    assert np.sum(injected * output.cell_volumes()) == pytest.approx(np.sum((field * volumes)[~covered]), rel=1e-12)
    # the output grid's faces: each level's own inside its box
    assert np.allclose(np.diff(output.x_faces)[np.abs(output.centres(0) - 12.0) < 1.0], 0.5)


def test_simulate_nested_matches_the_rectilinear_grid_with_a_third_of_the_cells():
    boundary = ProbeBoundary("temperature", freeze_temperature=-75.0, cooldown_time=5.0)
    probes = [PlacedProbe(f"p{i}", (x, 0.0, 0.0), (x, 0.0, 40.0), 1.65, 5.0, boundary) for i, x in enumerate((-2.5, 2.5))]
    steps = [ProtocolStep("freeze", 40.0), ProtocolStep("passive_thaw", 10.0), ProtocolStep("freeze", 20.0)]
    common = dict(tissue=MUSCLE, properties=PROPERTIES, spacing_mm=0.25)
    nested = simulate(probes, steps, layout="nested", **common)
    plain = simulate(probes, steps, layout="rectilinear", **common)
    assert "nested grid" in nested.method and "nested grid" not in plain.method
    assert nested.history["solver_cells"] < 0.5 * plain.history["solver_cells"]
    for level in (0.0, -20.0, -40.0):
        assert nested.isotherm_volume_ml(level) == pytest.approx(plain.isotherm_volume_ml(level), rel=0.03), level
        # history is tracked on the solver's own cells: close to the interpolated result
        assert nested.history["volume_ml"][level][-1] == pytest.approx(nested.isotherm_volume_ml(level), rel=0.03)
    assert float(nested.min_temperature.min()) == pytest.approx(float(plain.min_temperature.min()), abs=1.0)
    # the ice ball sits where the rectilinear grid puts it
    for level in (0.0, -20.0):
        a, b = nested.isotherm_extent_mm(level), plain.isotherm_extent_mm(level)
        assert a["along"] == pytest.approx(b["along"], abs=0.5) and a["across"] == pytest.approx(b["across"], abs=0.5)


def test_nested_layout_falls_back_when_it_cannot_nest():
    probe = PlacedProbe("p", (0.0, 0.0, 0.0), (0.0, 0.0, 40.0), 1.65, 5.0, ProbeBoundary("temperature", -75.0))
    common = dict(tissue=MUSCLE, properties=PROPERTIES, spacing_mm=0.5, core_margin_mm=4.0, outer_margin_mm=4.0)
    # an ice zone at 1.5x the fine cell cannot be a level of half-size cells
    result = simulate([probe], [ProtocolStep("freeze", 10.0)], layout="nested", middle_spacing_mm=0.75, **common)
    assert "nested grid" not in result.method
    assert any("nested layout does not apply" in note and "0.75 mm" in note for note in result.notes)
    assert "nested grid" in simulate([probe], [ProtocolStep("freeze", 10.0)], **common).method  # the default
    with pytest.raises(Exception, match="layout"):
        simulate([probe], [ProtocolStep("freeze", 10.0)], layout="octree", **common)


def test_coarse_cells_near_a_thin_probe_match_a_grid_fine_all_through_the_ice():
    """0.5 mm cells around a 1.5 mm probe (three cells across): the near-probe box reaches nine
    cells from the probe axis, so the 2:1 jump stays clear of the steep frozen profile. With the
    jump 6.5 cells from the axis the -20 degC volume came out 9-12 % above the uniform grid's."""
    boundary = ProbeBoundary("temperature", freeze_temperature=-100.0, cooldown_time=0.0)
    probe = PlacedProbe("p", (0.0, 0.0, 0.0), (0.0, 0.0, 30.0), 1.5, 6.0, boundary, tip_offset_mm=1.0)
    steps = [ProtocolStep("freeze", 30.0), ProtocolStep("passive_thaw", 10.0)]
    common = dict(tissue=MUSCLE, properties=PROPERTIES, spacing_mm=0.5)
    nested = simulate([probe], steps, **common)
    uniform = simulate([probe], steps, middle_spacing_mm=0.5, **common)
    assert "nested grid" in nested.method and "nested grid" not in uniform.method
    finest = np.isclose(nested.grid.widths(0), 0.5)
    assert nested.grid.centres(0)[finest].max() >= 9 * 0.5 - 0.25  # the last fine cell centre
    for level in (0.0, -20.0, -40.0):
        assert nested.isotherm_volume_ml(level, "min") == pytest.approx(uniform.isotherm_volume_ml(level, "min"),
                                                                        rel=0.02), level
