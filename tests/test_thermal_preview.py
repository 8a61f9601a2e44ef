"""The fast preview (planner.thermal.preview) against the full solver it is built from.

Tiny cases only: a 1.5 mm probe held at -100 degC in R98 tissue with perfusion, 30 s freeze
and 10 s passive thaw, 0.5 mm cells. The precomputed tables go to a temporary cache folder.
"""

import math

import numpy as np
import pytest

from planner.errors import InputError
from planner.thermal import PlacedProbe, ProbeBoundary, ProtocolStep, generic_soft_tissue, simulate
from planner.thermal import preview
from planner.thermal.geometry import Cylinder
from planner.thermal.preview import (
    PreviewResult,
    clear_preview_cache,
    preview_at_points,
    preview_ice_ball,
    probe_field_table,
    probe_steps,
)
from planner.volume import Volume, affine_from_geometry

SPACING = 0.5
TISSUE = 7
PROPERTIES = {TISSUE: generic_soft_tissue(perfusion=0.0005)}
BOUNDARY = ProbeBoundary("temperature", freeze_temperature=-100.0, cooldown_time=0.0)
PROTOCOL = (ProtocolStep("freeze", 30.0), ProtocolStep("passive_thaw", 10.0))
LEVELS = (0.0, -20.0, -40.0)


def probe(name, tip, direction, *, length=30.0):
    direction = np.asarray(direction, dtype=float) / np.linalg.norm(direction)
    tip = np.asarray(tip, dtype=float)
    return PlacedProbe(name, tuple(tip), tuple(tip + length * direction), 1.5, 6.0, BOUNDARY, tip_offset_mm=1.0)


def solve_full(probes):
    # the reference is fine all through the ice (the default grid coarsens away from the
    # probes, which would mix its own small error into the preview's)
    return simulate(probes, PROTOCOL, tissue=TISSUE, properties=PROPERTIES, spacing_mm=SPACING,
                    middle_spacing_mm=SPACING)


def preview_points(probes, points, **kwargs):
    return preview_at_points(probes, PROTOCOL, points, properties=PROPERTIES, tissue=TISSUE,
                             solver_spacing_mm=SPACING, **kwargs)


def cell_centres(result):
    return result.grid.local_to_world(result.grid.cell_centres_local().reshape(-1, 3))


def in_probe(points, probes):
    """True for points inside a probe's body (tip to entry): the full solver's shaft cells are
    not tissue (they stay at body temperature), so they are left out of every comparison."""
    inside = np.zeros(len(points), dtype=bool)
    for probe in probes:
        inside |= Cylinder(probe.tip, probe.entry, probe.radius_mm).inside(points)
    return inside


def volumes_ml(result, values, level, probes):
    """ml of the tissue cells of ``result``'s grid where ``values`` (per cell) is below ``level``."""
    tissue = ~in_probe(cell_centres(result), probes)
    cold = values.reshape(-1) < level
    return float(result.grid.cell_volumes().reshape(-1)[cold & tissue].sum() * 1e-3)


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    """Tables cached in a temporary folder, never in the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("preview-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRYOPLAN_CACHE_DIR", str(folder))
        clear_preview_cache()
        yield folder
        clear_preview_cache()


@pytest.fixture(scope="module")
def oblique():
    """A probe oblique to every world axis, and the full solver's run of it alone."""
    placed = probe("oblique", (5.0, -3.0, 2.0), (1.0, 2.0, 2.0))
    return placed, solve_full([placed])


# ------------------------------------------------------------------ agreement with the solver
def test_single_oblique_probe_agrees_with_the_full_solver(oblique):
    placed, full = oblique
    values = preview_points([placed], cell_centres(full))
    reference = full.min_temperature.reshape(-1)
    for level in LEVELS:
        expected = volumes_ml(full, reference, level, [placed])
        assert expected > 0.02
        assert volumes_ml(full, values, level, [placed]) == pytest.approx(expected, rel=0.03), level
    either = ((reference < 0) | (values < 0)) & ~in_probe(cell_centres(full), [placed])
    weights = full.grid.cell_volumes().reshape(-1)[either]
    assert np.average(np.abs(values[either] - reference[either]), weights=weights) < 1.5
    # Within 2 mm of the probe the solver's own field is lumpy from cell to cell (its staircase
    # surface), which the azimuthal average smooths out; beyond, the two agree closely.
    offset = cell_centres(full) - np.asarray(placed.tip)
    along = offset @ placed.axis
    radial = np.linalg.norm(offset - along[:, None] * placed.axis, axis=1)
    far = either & (radial > placed.radius_mm + 2.0)
    assert far.sum() > 500
    assert np.abs(values[far] - reference[far]).mean() < 0.75
    assert np.abs(values[far] - reference[far]).max() < 5.0


def test_lattice_preview_matches_the_solver_and_the_point_lookup(oblique):
    placed, full = oblique
    result = preview_ice_ball([placed], PROTOCOL, properties=PROPERTIES, tissue=TISSUE, solver_spacing_mm=SPACING,
                              spacing_mm=SPACING)
    assert isinstance(result, PreviewResult)
    for level in LEVELS:
        assert result.isotherm_volume_ml(level) == pytest.approx(full.isotherm_volume_ml(level, "min"), rel=0.05)
        full_extent = full.isotherm_extent_mm(level, "min")
        extent = result.isotherm_extent_mm(level)
        assert extent["max_diameter"] == pytest.approx(full_extent["max_diameter"], abs=2 * SPACING)
        assert extent["along"] == pytest.approx(full_extent["along"], abs=2 * SPACING)
    # The voxels are exactly where the point lookup says.
    nz, ny, nx = result.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    ijk = np.stack([i, j, k, np.ones_like(i)], axis=-1).reshape(-1, 4).astype(float)
    world = ijk @ result.affine[:3].T
    np.testing.assert_allclose(result.min_temperature.reshape(-1), preview_points([placed], world), atol=1e-3)
    # The lattice covers the 0 degC ice with room to spare: its faces are warmer.
    faces = [result.min_temperature[0], result.min_temperature[-1], result.min_temperature[:, 0],
             result.min_temperature[:, -1], result.min_temperature[:, :, 0], result.min_temperature[:, :, -1]]
    assert min(float(face.min()) for face in faces) > 0.0
    assert result.min_temperature.min() == pytest.approx(-100.0, abs=1.0)


def test_lattice_stays_put_when_a_probe_moves():
    base = probe("a", (0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    shifted = probe("a", (0.3, 0.1, 0.0), (0.0, 0.0, 1.0))
    first = preview_ice_ball([base], PROTOCOL, properties=PROPERTIES, tissue=TISSUE, solver_spacing_mm=SPACING)
    second = preview_ice_ball([shifted], PROTOCOL, properties=PROPERTIES, tissue=TISSUE, solver_spacing_mm=SPACING)
    # Voxel centres of both lattices lie on the same 0.5 mm world lattice.
    for result in (first, second):
        origin = result.affine[:3, 3] / 0.5
        np.testing.assert_allclose(origin, np.round(origin), atol=1e-9)
    # A moved probe moves its ice ball with it.
    assert second.isotherm_volume_ml(-20.0) == pytest.approx(first.isotherm_volume_ml(-20.0), rel=0.03)
    tip_value = preview_points([shifted], np.array([[0.3, 0.1, 3.0]]))[0]
    assert tip_value == pytest.approx(-100.0, abs=0.5)


def test_two_probes_combine_by_minimum():
    a = probe("a", (0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    b = probe("b", (6.0, 1.0, -2.0), (0.0, 0.3, 1.0))
    points = np.random.default_rng(0).uniform(-10.0, 16.0, size=(20000, 3))
    both = preview_points([a, b], points)
    np.testing.assert_array_equal(both, np.minimum(preview_points([a], points), preview_points([b], points)))
    assert np.count_nonzero(both < 0) > 100


def test_far_apart_probes_are_the_two_singles_and_match_the_solver():
    # Parallel and a whole number of cells apart, so that both probes sit on the solver's
    # grid as the table's probe did: the full solver's ice is sensitive (several % in volume
    # at this coarse 0.5 mm grid) to where a thin probe falls within its cells.
    a = probe("a", (0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    b = probe("b", (25.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    full = solve_full([a, b])
    points = cell_centres(full)
    both = preview_points([a, b], points)
    for level in LEVELS:
        expected = volumes_ml(full, full.min_temperature, level, [a, b])
        assert volumes_ml(full, both, level, [a, b]) == pytest.approx(expected, rel=0.03)
    single = preview_ice_ball([a], PROTOCOL, properties=PROPERTIES, tissue=TISSUE, solver_spacing_mm=SPACING)
    pair = preview_ice_ball([a, b], PROTOCOL, properties=PROPERTIES, tissue=TISSUE, solver_spacing_mm=SPACING)
    for level in LEVELS:
        assert pair.isotherm_volume_ml(level) == pytest.approx(2 * single.isotherm_volume_ml(level), rel=0.02)


def test_close_probes_preview_underestimates_the_merged_ice_ball():
    # PHYSICS.md: the union of single-probe balls is conservative at -20 / -40 degC.
    pair = [probe("a", (-2.0, 0.0, 0.0), (0.0, 0.0, 1.0)), probe("b", (2.0, 0.0, 0.0), (0.0, 0.0, 1.0))]
    full = solve_full(pair)
    values = preview_points(pair, cell_centres(full))
    for level in (-20.0, -40.0):
        assert volumes_ml(full, values, level, pair) < 0.9 * volumes_ml(full, full.min_temperature, level, pair)
    # Adding a cold probe only cools: the union is nowhere colder than the joint field, bar
    # the solver's cell-to-cell lumpiness within a couple of cells of the probes.
    centres = cell_centres(full)
    away = np.ones(len(centres), dtype=bool)
    for placed in pair:
        offset = centres - np.asarray(placed.tip)
        along = offset @ placed.axis
        away &= np.linalg.norm(offset - along[:, None] * placed.axis, axis=1) > placed.radius_mm + 1.5
    assert np.all(values[away] >= full.min_temperature.reshape(-1)[away] - 1.0)


def test_kirchhoff_combination_is_the_union_for_one_probe():
    placed = probe("a", (0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    points = np.random.default_rng(1).uniform(-12.0, 12.0, size=(50000, 3))
    points = points[~in_probe(points, [placed])]
    union = preview_points([placed], points)
    kirchhoff = preview_points([placed], points, combine="kirchhoff")
    # Same field; it differs only by interpolating between table nodes in another variable.
    assert np.abs(kirchhoff - union).mean() < 0.05
    assert np.abs(kirchhoff - union).max() < 1.5


def test_kirchhoff_combination_estimates_the_interaction_of_close_probes():
    pair = [probe("a", (-2.0, 0.0, 0.0), (0.0, 0.0, 1.0)), probe("b", (2.0, 0.0, 0.0), (0.0, 0.0, 1.0))]
    full = solve_full(pair)
    centres = cell_centres(full)
    union = preview_points(pair, centres)
    kirchhoff = preview_points(pair, centres, combine="kirchhoff")
    # Adding a probe's deficit only cools, and never below the coldest probe.
    assert np.all(kirchhoff <= union + 1e-3)
    assert kirchhoff.min() >= -100.0 - 1e-3
    reference = full.min_temperature
    for level in (-20.0, -40.0):
        expected = volumes_ml(full, reference, level, pair)
        error_union = volumes_ml(full, union, level, pair) / expected - 1.0
        error_kirchhoff = volumes_ml(full, kirchhoff, level, pair) / expected - 1.0
        assert abs(error_kirchhoff) < 0.12
        assert abs(error_kirchhoff) < abs(error_union)
    # The lattice grows to hold the merged ice.
    result = preview_ice_ball(pair, PROTOCOL, properties=PROPERTIES, tissue=TISSUE, solver_spacing_mm=SPACING,
                              combine="kirchhoff")
    assert result.combine == "kirchhoff" and "Kirchhoff" in result.caveat
    values = result.min_temperature
    faces = [values[0], values[-1], values[:, 0], values[:, -1], values[:, :, 0], values[:, :, -1]]
    assert min(float(face.min()) for face in faces) > 0.0
    assert result.isotherm_volume_ml(-20.0) > preview_ice_ball(
        pair, PROTOCOL, properties=PROPERTIES, tissue=TISSUE, solver_spacing_mm=SPACING).isotherm_volume_ml(-20.0)


def test_kirchhoff_deficit_has_the_known_form():
    # Unfrozen: k_u (body - T); frozen with k_f(T) = k_f0 * 273.15 / T[K]: a logarithm.
    tissue = PROPERTIES[TISSUE]
    temperatures, deficit = preview._kirchhoff_curve(tissue, 37.0)
    at = lambda t: float(np.interp(t, temperatures, deficit))  # noqa: E731
    assert at(37.0) == pytest.approx(0.0, abs=1e-6)
    assert at(10.0) == pytest.approx(0.5 * 27.0, rel=1e-4)
    mushy = at(-8.0) - at(-1.0)
    assert at(-50.0) - at(-8.0) == pytest.approx(2.0 * 273.15 * math.log(265.15 / 223.15), rel=1e-3)
    assert 0.5 * 7.0 < mushy < 2.0 * 273.15 / 265.15 * 7.0


# ------------------------------------------------------------------ labelled approximation
def test_result_is_labelled_an_approximation(oblique):
    placed, _ = oblique
    result = preview_ice_ball([placed], PROTOCOL, properties=PROPERTIES, tissue=TISSUE, solver_spacing_mm=SPACING)
    assert result.approximate is True
    assert result.combine == "union"
    assert "APPROXIMATE" in result.caveat and "union of single-probe" in result.caveat
    assert "%" in result.caveat  # carries the measured error
    assert result.caveat == preview.CAVEATS["union"]
    assert "APPROXIMATE" in repr(result)
    volume = result.to_volume()
    assert volume.metadata["approximate"] is True and volume.metadata["caveat"] == result.caveat
    np.testing.assert_array_equal(volume.array, result.min_temperature)
    np.testing.assert_allclose(volume.affine, result.affine)
    summary = result.summary()
    assert summary["approximate"] is True and summary["caveat"] == result.caveat
    assert [entry["level_c"] for entry in summary["coldest_reached"]] == list(LEVELS)
    assert summary["coldest_reached"][0]["volume_ml"] == pytest.approx(result.isotherm_volume_ml(0.0))


def test_isotherm_surface_surrounds_the_probe(oblique):
    placed, _ = oblique
    result = preview_ice_ball([placed], PROTOCOL, properties=PROPERTIES, tissue=TISSUE, solver_spacing_mm=SPACING)
    surface = result.isotherm_surface(-20.0)
    assert surface.n_points > 100
    offset = np.asarray(surface.points) - np.asarray(placed.tip)
    along = offset @ placed.axis
    radial = np.linalg.norm(offset - along[:, None] * placed.axis, axis=1)
    # A closed surface around the active segment (1 to 7 mm up the shaft), off the probe.
    assert along.min() < 1.0 < 7.0 < along.max()
    assert radial[(along > 1.0) & (along < 7.0)].min() > placed.radius_mm
    # The isotherm's radius at mid-segment matches the table's -20 degC radius there.
    table = result.tables[0]
    radii = np.arange(table.min_temperature.shape[1]) * table.step_mm
    profile = table.lookup(radii, np.full(radii.shape, 4.0))
    expected = float(np.interp(-20.0, profile, radii))
    middle = np.abs(along - 4.0) < 0.3
    assert np.median(radial[middle]) == pytest.approx(expected, abs=SPACING / 2)
    assert result.isotherm_surface(-150.0).n_points == 0


def test_snapshot_fields_are_no_colder_than_the_minimum(oblique):
    placed, _ = oblique
    result = preview_ice_ball([placed], PROTOCOL, properties=PROPERTIES, tissue=TISSUE, solver_spacing_mm=SPACING,
                              snapshot_times=(30.0, 40.0))
    assert result.temperatures.shape == (2,) + result.shape
    assert np.all(result.temperatures >= result.min_temperature - 1e-4)
    # After 10 s of passive thaw the probe region has warmed.
    assert result.temperatures[1].min() > result.temperatures[0].min() + 5.0
    with pytest.raises(InputError, match="snapshot time 12.5 s: not precomputed"):
        result.tables[0].field(12.5)


# ------------------------------------------------------------------ caches
def test_cache_in_memory_and_on_disk(cache_dir, monkeypatch):
    placed = probe("a", (0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    steps = probe_steps(PROTOCOL, 0)
    first = probe_field_table(placed, steps, tissue=PROPERTIES[TISSUE], solver_spacing_mm=SPACING)
    # Same description, another place: the very same table from memory.
    elsewhere = probe("b", (10.0, 5.0, -3.0), (1.0, 0.0, 0.0))
    assert probe_field_table(elsewhere, steps, tissue=PROPERTIES[TISSUE], solver_spacing_mm=SPACING) is first
    assert (cache_dir / "preview" / f"{first.key.digest()}.npz").is_file()

    # A new session: memory cleared, the solver must not run again.
    clear_preview_cache()

    def no_solver(*args, **kwargs):
        raise AssertionError("the solver ran although the table was on disk")

    monkeypatch.setattr(preview, "_solve_table", no_solver)
    again = probe_field_table(placed, steps, tissue=PROPERTIES[TISSUE], solver_spacing_mm=SPACING)
    assert again is not first and again.key == first.key
    np.testing.assert_array_equal(again.min_temperature, first.min_temperature)
    np.testing.assert_array_equal(again.temperatures, first.temperatures)
    assert (again.step_mm, again.z0_mm, again.precompute_s) == (first.step_mm, first.z0_mm, first.precompute_s)

    # Another protocol, tissue or probe model is another key (and would need the solver).
    longer = (ProtocolStep("freeze", 45.0), ProtocolStep("passive_thaw", 10.0))
    warmer = ProbeBoundary("temperature", freeze_temperature=-90.0, cooldown_time=0.0)
    other_probe = PlacedProbe("c", (0, 0, 0), (0, 0, 30), 1.5, 6.0, warmer, tip_offset_mm=1.0)
    for args, kwargs in (
        ((placed, probe_steps(longer, 0)), {"tissue": PROPERTIES[TISSUE]}),
        ((placed, steps), {"tissue": generic_soft_tissue(perfusion=0.001)}),
        ((other_probe, steps), {"tissue": PROPERTIES[TISSUE]}),
    ):
        with pytest.raises(AssertionError, match="solver ran"):
            probe_field_table(*args, solver_spacing_mm=SPACING, **kwargs)
    changed = preview.ProbeFieldKey(**{**first.key.__dict__, "steps": probe_steps(longer, 0)})
    assert changed != first.key and changed.digest() != first.key.digest()
    # A changed solver (its source fingerprint) never reuses a stored table.
    digest = first.key.digest()
    monkeypatch.setattr(preview, "solver_fingerprint", lambda: "another solver")
    assert first.key.digest() != digest


def test_damaged_cache_file_is_recomputed(cache_dir, monkeypatch):
    placed = probe("a", (0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    steps = probe_steps(PROTOCOL, 0)
    table = probe_field_table(placed, steps, tissue=PROPERTIES[TISSUE], solver_spacing_mm=SPACING)
    path = cache_dir / "preview" / f"{table.key.digest()}.npz"
    path.write_bytes(b"not a table")
    clear_preview_cache()
    calls = []
    monkeypatch.setattr(preview, "_solve_table", lambda key, **kw: calls.append(key) or table)
    probe_field_table(placed, steps, tissue=PROPERTIES[TISSUE], solver_spacing_mm=SPACING)
    assert calls == [table.key]
    assert preview._load_table(table.key, path) is not None  # rewritten
    # A cache folder that cannot be written is no error: the table is simply not kept.
    blocked = cache_dir / "a file"
    blocked.write_text("")
    clear_preview_cache()
    again = probe_field_table(placed, steps, tissue=PROPERTIES[TISSUE], solver_spacing_mm=SPACING, cache_dir=blocked)
    assert again is table and len(calls) == 2


# ------------------------------------------------------------------ protocols and tissue
def test_probe_steps_make_undriven_steps_passive():
    protocol = (
        ProtocolStep("freeze", 60.0, probes=(0,)),
        ProtocolStep("active_thaw", 20.0, probes=(1,), thaw_temperature=30.0),
        ProtocolStep("freeze", 60.0),
    )
    assert probe_steps(protocol, 0) == (
        ProtocolStep("freeze", 60.0), ProtocolStep("passive_thaw", 20.0), ProtocolStep("freeze", 60.0))
    assert probe_steps(protocol, 1) == (
        ProtocolStep("passive_thaw", 60.0), ProtocolStep("active_thaw", 20.0, thaw_temperature=30.0),
        ProtocolStep("freeze", 60.0))


def test_tissue_taken_at_each_probe_from_a_label_map():
    array = np.full((40, 40, 40), TISSUE, dtype=np.uint8)
    array[:, :, :20] = 0  # air on the low-x half
    labels = Volume(array, affine_from_geometry((1.0, 1.0, 1.0), (-20.0, -20.0, -20.0), np.eye(3)))
    inside = probe("in", (5.0, 0.0, -5.0), (0.0, 0.0, 1.0))
    result = preview_ice_ball([inside], PROTOCOL, properties=PROPERTIES, tissue_labels=labels,
                              solver_spacing_mm=SPACING)
    assert result.tables[0].key.tissue == PROPERTIES[TISSUE]
    in_air = probe("air", (-10.0, 0.0, -5.0), (0.0, 0.0, 1.0))
    with pytest.raises(InputError, match="probe 'air'.*label 0"):
        preview_ice_ball([inside, in_air], PROTOCOL, properties=PROPERTIES, tissue_labels=labels)
    outside = probe("out", (60.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    with pytest.raises(InputError, match="probe 'out'.*outside"):
        preview_ice_ball([outside], PROTOCOL, properties=PROPERTIES, tissue_labels=labels)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "change, message",
    [
        ({"probes": []}, "probes: need at least one probe"),
        ({"probes": ["not a probe"]}, r"probes\[0\]"),
        ({"protocol": []}, "protocol: needs at least one step"),
        ({"protocol": [ProtocolStep("passive_thaw", 30.0)]}, "no freeze step"),
        ({"protocol": [ProtocolStep("freeze", 30.0, probes=(3,))]}, "out of range"),
        ({"spacing_mm": 0.0}, "spacing_mm"),
        ({"spacing_mm": math.nan}, "spacing_mm"),
        ({"direction": np.ones((3, 3))}, "direction"),
        ({"tissue": 99}, "tissue label 99"),
        ({"properties": {}}, "properties"),
        ({"levels": ()}, "levels"),
        ({"snapshot_times": (500.0,)}, "snapshot_times"),
        ({"combine": "sum"}, "combine"),
    ],
)
def test_bad_input_is_refused(change, message):
    arguments = dict(probes=[probe("a", (0, 0, 0), (0, 0, 1))], protocol=PROTOCOL, properties=PROPERTIES,
                     tissue=TISSUE, solver_spacing_mm=SPACING)
    arguments.update(change)
    with pytest.raises(InputError, match=message):
        preview_ice_ball(arguments.pop("probes"), arguments.pop("protocol"), **arguments)


def test_zero_duration_step_and_bad_points_are_refused():
    with pytest.raises(InputError, match="duration"):
        ProtocolStep("freeze", 0.0)
    placed = probe("a", (0, 0, 0), (0, 0, 1))
    with pytest.raises(InputError, match="points"):
        preview_points([placed], np.zeros((4, 2)))
    with pytest.raises(InputError, match="points"):
        preview_points([placed], np.array([[0.0, np.inf, 0.0]]))
