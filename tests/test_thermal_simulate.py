"""simulate(): grids around probes, probe rasterisation in any orientation, protocols,
label maps, results, and input validation."""

import json

import numpy as np
import pytest
from scipy import ndimage

from planner.errors import InputError
from planner.labels import Tissue
from planner.thermal import (
    PlacedProbe,
    ProbeBoundary,
    ProtocolStep,
    SimulationCancelled,
    ThermalSolverError,
    generic_soft_tissue,
    simulate,
)
from planner.thermal.grid import ThermalGrid
from planner.thermal.simulation import default_margins
from planner.thermal.solver import Phase, solve
from planner.volume import Volume, affine_from_geometry

MUSCLE = int(Tissue.MUSCLE)
FAT = int(Tissue.FAT)
PROPERTIES = {MUSCLE: generic_soft_tissue(perfusion=0.0005, name="muscle")}
N2O = ProbeBoundary("temperature", freeze_temperature=-75.0)
SMALL_BOX = dict(core_margin_mm=6.0, outer_margin_mm=8.0)


def probe_along(direction, *, diameter=1.65, length=5.0, tip=(0.0, 0.0, 0.0), boundary=N2O, name="p"):
    direction = np.asarray(direction, dtype=float)
    direction /= np.linalg.norm(direction)
    tip = np.asarray(tip, dtype=float)
    return PlacedProbe(name, tuple(tip), tuple(tip + 40.0 * direction), diameter, length, boundary)


def run(probes, steps=(ProtocolStep("freeze", 60.0),), **options):
    settings = dict(tissue=MUSCLE, properties=PROPERTIES, spacing_mm=0.5)
    settings.update(SMALL_BOX)
    settings.update(options)
    return simulate(probes, list(steps), **settings)


# ----------------------------------------------------------------- geometry of the ice ball
@pytest.fixture(scope="module")
def single_z():
    return run([probe_along((0, 0, 1))], orientation="world")


def test_ice_ball_surrounds_the_active_segment(single_z):
    result = single_z
    extent = result.isotherm_extent_mm(0.0)
    # a 5 mm segment: the ice is longer than the segment and wider than the probe
    assert extent["along"] > 5.0 + 2.0
    assert 1.65 + 2.0 < extent["across"] < extent["along"] + 4.0
    volume = result.temperature_volume(-1)
    mid_segment = np.array([0.0, 0.0, 2.5])
    assert volume.sample(mid_segment[None], order=0)[0] == pytest.approx(-75.0, abs=0.5)
    far = np.array([[0.0, 12.0, 2.5]])
    assert volume.sample(far, order=1)[0] > 30.0


@pytest.mark.parametrize("direction", [(1, 0, 0), (0, 1, 0), (1, 1, 1)])
def test_ice_ball_does_not_depend_on_probe_orientation(single_z, direction):
    """Same probe along x, y and a diagonal of a world-aligned grid: same ice ball within a cell."""
    result = run([probe_along(direction)], orientation="world")
    for level in (0.0, -20.0):
        reference = single_z.isotherm_extent_mm(level)
        got = result.isotherm_extent_mm(level)
        for key in ("along", "across"):
            assert got[key] == pytest.approx(reference[key], abs=0.5), (level, key)
        assert result.isotherm_volume_ml(level) == pytest.approx(single_z.isotherm_volume_ml(level), rel=0.1)


def test_two_close_probes_make_one_ice_ball_larger_than_two_singles(single_z):
    pair = run([probe_along((0, 0, 1), tip=(-2.5, 0.0, 0.0), name="a"),
                probe_along((0, 0, 1), tip=(2.5, 0.0, 0.0), name="b")], orientation="world")
    single_diameter = single_z.isotherm_extent_mm(-20.0)["across"]
    assert 5.0 < single_diameter  # the probes are closer than one single ice ball is wide
    cold = pair.temperatures[-1] < -20.0
    _, n_parts = ndimage.label(cold)
    assert n_parts == 1
    # volume beats even the sum of two singles (which bounds their union from above)
    assert pair.isotherm_volume_ml(-20.0) > 2.0 * single_z.isotherm_volume_ml(-20.0)


def test_needle_thinner_than_a_cell_gives_a_consistent_ice_ball():
    """A 27 G (0.41 mm) needle on 0.5 mm and 0.25 mm grids: the same ice ball within a cell."""
    needle = probe_along((0, 0, 1), diameter=0.41, length=6.0)
    box = dict(core_margin_mm=4.0, outer_margin_mm=5.0)
    steps = [ProtocolStep("freeze", 40.0)]
    coarse = run([needle], steps, spacing_mm=0.5, **box)
    fine = run([needle], steps, spacing_mm=0.25, **box)
    assert any("below the cell size" in note for note in coarse.notes)
    for level in (0.0, -20.0):
        assert coarse.isotherm_extent_mm(level)["across"] == pytest.approx(
            fine.isotherm_extent_mm(level)["across"], abs=0.5
        )
    assert coarse.isotherm_extent_mm(0.0)["across"] > 3.0


# ----------------------------------------------------------------- protocol and boundaries
def test_snapshots_land_exactly_and_history_follows_growth():
    steps = [ProtocolStep("freeze", 40.0), ProtocolStep("passive_thaw", 20.0), ProtocolStep("freeze", 30.0)]
    result = run([probe_along((0, 0, 1))], steps, snapshot_times=(0.0, 13.7, 40.0, 60.0, 90.0))
    assert np.array_equal(result.snapshot_times, [0.0, 13.7, 40.0, 60.0, 90.0])
    history = result.history["time"]
    for t in (13.7, 40.0, 60.0, 90.0):
        assert np.min(np.abs(history - t)) < 1e-9
    assert np.all(result.temperatures[0] == pytest.approx(37.0))
    ice = result.history["volume_ml"][0.0]
    at = lambda t: ice[np.argmin(np.abs(history - t))]  # noqa: E731
    assert at(13.7) < at(40.0)  # grows while freezing
    assert at(60.0) < at(40.0)  # shrinks in the passive thaw
    assert at(90.0) > at(60.0)  # grows again
    assert result.isotherm_volume_ml(0.0, -1) == pytest.approx(ice[-1], rel=1e-6)
    # time below 0 degC never exceeds the protocol, and the probe cells spent the freeze there
    assert result.time_below[0.0].max() <= 90.0 + 1e-3
    assert result.time_below[-40.0].max() >= 60.0
    assert np.all(result.min_temperature <= result.temperatures.min(axis=0) + 1e-6)


def test_active_thaw_warms_the_probe_and_cooldown_is_gradual():
    slow = ProbeBoundary("temperature", freeze_temperature=-75.0, cooldown_time=20.0)
    steps = [ProtocolStep("freeze", 40.0), ProtocolStep("active_thaw", 20.0, thaw_temperature=25.0)]
    result = run([probe_along((0, 0, 1), boundary=slow)], steps, snapshot_times=(10.0, 40.0, 60.0),
                 orientation="world")
    volume_at = lambda i: result.temperature_volume(i).sample(np.array([[0.0, 0.0, 2.5]]), order=0)[0]  # noqa: E731
    expected_10 = -75.0 + (37.0 - (-75.0)) * np.exp(-10.0 / 20.0)
    assert volume_at(0) == pytest.approx(expected_10, abs=0.5)
    at_40 = -75.0 + 112.0 * np.exp(-2.0)
    assert volume_at(1) == pytest.approx(at_40, abs=0.5)
    # active thaw approaches the thaw temperature with the probe's own time constant
    assert volume_at(2) == pytest.approx(25.0 + (at_40 - 25.0) * np.exp(-20.0 / 20.0), abs=0.5)


@pytest.mark.parametrize(
    "boundary",
    [
        ProbeBoundary("heat_flux", heat_flux_per_length=300.0),
        ProbeBoundary("convective", heat_transfer_coefficient=2000.0, coolant_temperature=-88.0),
    ],
)
def test_flux_and_convective_probes_freeze(boundary):
    result = run([probe_along((0, 0, 1), boundary=boundary)], orientation="world")
    assert result.isotherm_volume_ml(0.0) > 0.05
    if boundary.kind == "convective":
        assert result.min_temperature.min() > -88.0  # never below the coolant


def test_probes_not_driven_by_a_step_stay_passive():
    steps = [ProtocolStep("freeze", 30.0, probes=(0,))]
    result = run([probe_along((0, 0, 1), tip=(-6.0, 0, 0), name="a"),
                  probe_along((0, 0, 1), tip=(6.0, 0, 0), name="b")], steps, orientation="world")
    sample = result.temperature_volume(-1).sample(np.array([[-6.0, 0, 2.5], [6.0, 0, 2.5]]), order=0)
    assert sample[0] == pytest.approx(-75.0, abs=0.5)
    assert sample[1] > 30.0


# ----------------------------------------------------------------- label maps
def test_labels_are_resampled_nearest_neighbour_in_any_orientation():
    """A label volume rotated 30 degrees about z: fat where the volume's i index is high."""
    angle = np.deg2rad(30.0)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    shape = (40, 40, 40)
    origin = -direction @ np.array([19.5, 19.5, 19.5])
    labels = np.full(shape, MUSCLE, dtype=np.uint8)
    labels[:, :, 20:] = FAT  # i >= 20
    volume = Volume(labels, affine_from_geometry((1.0, 1.0, 1.0), origin, direction), modality="SEG", units="label")
    properties = {MUSCLE: PROPERTIES[MUSCLE], FAT: generic_soft_tissue(name="fat")}
    probe = probe_along((0, 0, 1), tip=(-4.0, 0.0, -2.0))
    result = simulate([probe], [ProtocolStep("freeze", 10.0)], tissue_labels=volume, properties=properties,
                      spacing_mm=0.5, core_margin_mm=3.0, outer_margin_mm=3.0)
    from planner.thermal.simulation import _resample_labels

    grid = result.grid
    resampled = _resample_labels(volume, grid, fill_label=None)
    centres = grid.local_to_world(grid.cell_centres_local().reshape(-1, 3))
    i_index = volume.world_to_index(centres)[:, 0]
    clear = np.abs(i_index - 19.5) > 0.6
    expected = np.where(i_index >= 19.5, FAT, MUSCLE)
    assert np.array_equal(resampled.reshape(-1)[clear], expected[clear])


def test_probe_outside_the_label_volume_is_refused():
    volume = Volume(np.full((10, 10, 10), MUSCLE, np.uint8), np.eye(4), modality="SEG", units="label")
    with pytest.raises(InputError, match="outside the tissue label volume"):
        simulate([probe_along((0, 0, 1), tip=(50.0, 0, 0))], [ProtocolStep("freeze", 10.0)],
                 tissue_labels=volume, properties=PROPERTIES)


def test_missing_properties_for_a_label_is_refused():
    labels = np.full((30, 30, 30), FAT, np.uint8)
    volume = Volume(labels, affine_from_geometry((1, 1, 1), (-15, -15, -15)), modality="SEG", units="label")
    with pytest.raises(InputError, match="no entry for tissue label"):
        simulate([probe_along((0, 0, 1))], [ProtocolStep("freeze", 10.0)], tissue_labels=volume,
                 properties=PROPERTIES, spacing_mm=0.5, core_margin_mm=2.0, outer_margin_mm=2.0)


# ----------------------------------------------------------------- validation and control
def test_input_errors_name_the_field():
    probe = probe_along((0, 0, 1))
    with pytest.raises(InputError, match="protocol"):
        simulate([probe], [], tissue=MUSCLE, properties=PROPERTIES)
    with pytest.raises(InputError, match="probes"):
        simulate([], [ProtocolStep("freeze", 10.0)], tissue=MUSCLE, properties=PROPERTIES)
    with pytest.raises(InputError, match="tissue"):
        simulate([probe], [ProtocolStep("freeze", 10.0)], properties=PROPERTIES)
    with pytest.raises(InputError, match="spacing_mm"):
        simulate([probe], [ProtocolStep("freeze", 10.0)], tissue=MUSCLE, properties=PROPERTIES, spacing_mm=0.0)
    with pytest.raises(InputError, match="snapshot_times"):
        run([probe], snapshot_times=(100.0,))
    with pytest.raises(InputError, match=r"protocol\[0\]\.probes"):
        run([probe], [ProtocolStep("freeze", 10.0, probes=(3,))])


def test_progress_and_cancel():
    seen = []
    run([probe_along((0, 0, 1))], [ProtocolStep("freeze", 20.0)], progress=seen.append)
    assert seen and seen[-1] == pytest.approx(1.0) and all(b >= a for a, b in zip(seen, seen[1:]))
    with pytest.raises(SimulationCancelled):
        run([probe_along((0, 0, 1))], [ProtocolStep("freeze", 20.0)], cancel=lambda: True)


def test_non_finite_state_stops_with_a_clear_error(monkeypatch):
    """Force too few RKL2 stages for the step: the blow-up must be caught, not returned."""
    import planner.thermal.solver as solver_module

    grid = ThermalGrid.uniform((6, 6, 6), 0.5)
    initial = np.random.default_rng(1).uniform(-50.0, 37.0, grid.shape)
    with pytest.raises(InputError, match="initial_temperature"):
        solve(grid, np.zeros(grid.shape, np.uint8), [generic_soft_tissue()], [Phase(5.0)],
              initial_temperature=np.where(initial > 0, np.nan, initial), outer_boundary="insulated")
    monkeypatch.setattr(solver_module, "rkl2_stages_for", lambda dt, dt_fe: 2)
    with pytest.raises(ThermalSolverError, match="non-finite"):
        solve(grid, np.zeros(grid.shape, np.uint8), [generic_soft_tissue()], [Phase(2000.0)],
              initial_temperature=initial, outer_boundary="insulated", max_step=50.0)


def test_fine_cells_line_the_probes_and_the_ice_zone_is_coarser_but_as_accurate():
    """Rectilinear grid: the finest cells near the probe, twice as large across the rest of the
    ice; the ice ball matches a grid fine all through the ice zone. (The nested layout, the
    default, is checked against both in test_thermal_nested.)"""
    probe = probe_along((0, 0, 1))
    zoned = run([probe], spacing_mm=0.25, orientation="world", layout="rectilinear")
    uniform = run([probe], spacing_mm=0.25, orientation="world", middle_spacing_mm=0.25, stretch_ratio=1.2)
    widths = zoned.grid.widths(0)
    centres = zoned.grid.centres(0)
    near = np.abs(centres) < probe.radius_mm + 1.5
    assert np.allclose(widths[near], 0.25)
    assert np.allclose(widths[(np.abs(centres) > 5.0) & (np.abs(centres) < 7.0)], 0.5)
    assert zoned.grid.size < 0.5 * uniform.grid.size
    for level in (0.0, -20.0, -40.0):
        assert zoned.isotherm_volume_ml(level) == pytest.approx(uniform.isotherm_volume_ml(level), rel=0.02)
    assert zoned.isotherm_extent_mm(0.0)["across"] == pytest.approx(uniform.isotherm_extent_mm(0.0)["across"], abs=0.3)


def test_default_step_follows_the_ice_zone_cell_up_to_twice_the_finest():
    """A coarser ice zone than the default does not lengthen the default step (longer steps
    were measured to go wrong where fronts meet); a uniform one shortens it."""
    probe = probe_along((0, 0, 1))
    steps = (ProtocolStep("freeze", 600.0),)
    plans = {middle: run([probe], steps, spacing_mm=0.25, middle_spacing_mm=middle, count_only=True)
             for middle in (None, 0.25, 1.0)}
    assert plans[1.0].dt == pytest.approx(plans[None].dt, rel=1e-9)
    assert plans[0.25].dt == pytest.approx(plans[None].dt / 4.0, rel=0.01)  # steps land on the phase end
    assert plans[1.0].grid.size < plans[None].grid.size


def test_default_margins_are_those_simulate_uses_and_keep_a_cut_short_run_on_the_whole_grid():
    """A benchmark that solves only the start of a protocol passes the whole protocol's margins
    and gets the whole protocol's grid, not the smaller one its own duration would size."""
    probe = probe_along((0, 0, 1))
    whole = [ProtocolStep("freeze", 120.0), ProtocolStep("passive_thaw", 60.0), ProtocolStep("freeze", 120.0)]
    start = [ProtocolStep("freeze", 10.0)]
    settings = dict(tissue=MUSCLE, properties=PROPERTIES, spacing_mm=0.5, count_only=True)
    planned = simulate([probe], whole, **settings)
    core, outer = default_margins([probe], whole, PROPERTIES, 0.5)
    assert simulate([probe], whole, core_margin_mm=core, outer_margin_mm=outer, **settings).grid.shape == planned.grid.shape
    cut_short = simulate([probe], start, core_margin_mm=core, outer_margin_mm=outer, **settings)
    assert cut_short.grid.shape == planned.grid.shape
    assert simulate([probe], start, **settings).grid.size < planned.grid.size
    # the closed-form bounds are looser than the radial solve
    assert default_margins([probe], whole, PROPERTIES, 0.5, sizing="bounds")[0] > core


def test_euler_and_rkl2_agree(single_z):
    """The super-time-stepping scheme against plain forward Euler on the same problem."""
    euler = run([probe_along((0, 0, 1))], orientation="world", method="euler")
    assert euler.stages == 1 and single_z.stages > 2
    assert np.abs(euler.temperatures[-1] - single_z.temperatures[-1]).max() < 2.0
    assert euler.isotherm_volume_ml(-20.0) == pytest.approx(single_z.isotherm_volume_ml(-20.0), rel=0.03)


def test_summary_is_json_ready_and_surface_is_in_world_mm(single_z):
    summary = single_z.summary()
    text = json.dumps(summary)
    assert "isotherms" in summary and "-20" in summary["isotherms"] and text
    surface = single_z.isotherm_surface(0.0)
    assert surface.n_points > 100
    radial = np.hypot(surface.points[:, 0], surface.points[:, 1])
    across = single_z.isotherm_extent_mm(0.0)["across"]
    assert radial.max() == pytest.approx(across / 2, abs=0.6)
    min_volume = single_z.min_temperature_volume()
    assert min_volume.array.shape == single_z.grid.shape or not single_z.grid.is_uniform


# ----------------------------------------------------------------- maximum principle (issue 3)
MUSCLE_VARIABLE_K = generic_soft_tissue(perfusion=0.0005, name="muscle")


@pytest.mark.parametrize(("spacing", "frozen_k_varies"), [(1.0, True), (1.0, False), (2.0, True), (2.0, False)])
def test_coarse_grid_long_steps_stay_within_the_boundary_temperatures(spacing, frozen_k_varies):
    """Two 16 G N2O probes (-75 degC, 5 s cool-down) in muscle, 20 s freeze + 10 s passive thaw,
    default (long) RKL2 steps: no cell may get colder than the probe or warmer than the body.
    With a constant frozen conductivity the 1 mm grid's unchecked steps reached -84 degC."""
    import dataclasses

    props = {MUSCLE: dataclasses.replace(MUSCLE_VARIABLE_K, frozen_conductivity_varies=frozen_k_varies)}
    boundary = ProbeBoundary("temperature", freeze_temperature=-75.0, cooldown_time=5.0)
    probes = [PlacedProbe(name, (x, 0.0, 0.0), (x, 0.0, 40.0), 1.65, 6.0, boundary)
              for name, x in (("a", -3.0), ("b", 3.0))]
    steps = [ProtocolStep("freeze", 20.0), ProtocolStep("passive_thaw", 10.0)]
    result = simulate(probes, steps, tissue=MUSCLE, properties=props, spacing_mm=spacing)
    assert result.min_temperature.min() >= -75.0 - 0.5
    assert result.min_temperature.min() < -60.0  # the probe did freeze
    assert float(np.max(result.temperatures)) <= 37.0 + 1e-3


def test_a_retried_step_is_reported_in_the_notes():
    """The 1 mm constant-k_f case needs retried steps: the solver says so and still lands on time."""
    import dataclasses

    props = {MUSCLE: dataclasses.replace(MUSCLE_VARIABLE_K, frozen_conductivity_varies=False)}
    boundary = ProbeBoundary("temperature", freeze_temperature=-75.0, cooldown_time=5.0)
    probes = [PlacedProbe(name, (x, 0.0, 0.0), (x, 0.0, 40.0), 1.65, 6.0, boundary)
              for name, x in (("a", -3.0), ("b", 3.0))]
    result = simulate(probes, [ProtocolStep("freeze", 20.0)], tissue=MUSCLE, properties=props, spacing_mm=1.0,
                      middle_spacing_mm=1.0, max_step=8.0)
    assert any("retried at half length" in note for note in result.notes)
    assert result.snapshot_times[-1] == pytest.approx(20.0)
    assert result.min_temperature.min() >= -75.5
