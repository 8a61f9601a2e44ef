"""The thermal solver against closed-form answers (shared PHYSICS.md, "Validation cases").

Every case runs through the same 3D finite-volume kernel, rasterisation and time loop that
plans use (``planner.thermal.solver.solve``): the planar cases on a slab one cell thick, the
radial cases on a long probe (one cell thick along the probe, zero flux there), the sphere
on a 3D octant. Expected values are recomputed here with scipy from the transcendental
equations and also compared with the PHYSICS.md figures.
"""

import functools

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import erf, erfc, exp1, k0, k1

from planner.thermal.geometry import Cylinder, HalfSpace, Sphere, rasterise
from planner.thermal.grid import ThermalGrid, stretched_faces, uniform_faces
from planner.thermal.properties import TissueProperties, generic_soft_tissue
from planner.thermal.solver import HeldBoundary, Phase, SourceBoundary, solve

K_U, K_F, C_U, C_F, LATENT = 0.5, 2.0, 3.6e6, 1.8e6, 300e6
ALPHA_F, ALPHA_U = K_F / C_F, K_U / C_U


def r98(*, width=0.0, perfusion=0.0, latent=LATENT, blood=4.0e6, **overrides):
    """R98 soft tissue, constant frozen conductivity, phase change ``width`` degC wide around 0."""
    values = dict(
        name="R98",
        conductivity_unfrozen=K_U,
        conductivity_frozen=K_F,
        heat_capacity_unfrozen=C_U,
        heat_capacity_frozen=C_F,
        latent_heat=latent,
        liquidus=width / 2,
        solidus=-width / 2,
        perfusion=perfusion,
        blood_heat_capacity=blood,
        frozen_conductivity_varies=False,
    )
    values.update(overrides)
    return TissueProperties(**values)


# ----------------------------------------------------------------- grids
def slab_grid(spacing, length=45.0, outer=90.0):
    """Cells along x from the surface at x = 0 (one held cell below it), one cell in y and z."""
    x = stretched_faces(-spacing, length, -spacing, outer, spacing, ratio=1.1)
    return ThermalGrid(x, [0.0, 1.0], [0.0, 1.0], np.zeros(3), np.eye(3))


def cross_section_grid(spacing, core, outer, *, ratio=1.12):
    """A long probe along z through the centre of cell (0, 0): x, y stretched, one cell in z."""
    half = (np.ceil(core / spacing) + 0.5) * spacing
    faces = stretched_faces(-half, half, -outer, outer, spacing, ratio=ratio, max_cell=16 * spacing)
    return ThermalGrid(faces, faces, [-0.5, 0.5], np.zeros(3), np.eye(3))


def slab_front(result, grid, snapshot, level):
    """Position (mm) where the profile along x first rises through ``level``."""
    x = grid.centres(0)
    values = result.temperatures[snapshot, 0, 0, :]
    i = int(np.argmax(values > level))
    return float(np.interp(level, values[i - 1 : i + 1], x[i - 1 : i + 1]))


def radial_crossing(result, grid, snapshot, level):
    """Radius (mm) where T rises through ``level`` along +x, -x, +y, -y from the axis (mean)."""
    centre = grid.shape[1] // 2, grid.shape[2] // 2
    x = grid.centres(0)
    radii = []
    field = result.temperatures[snapshot, 0]
    for profile, positions in (
        (field[centre[0], centre[1]:], x[centre[1]:]),
        (field[centre[0], centre[1]::-1], -x[centre[1]::-1]),
        (field[centre[0]:, centre[1]], x[centre[0]:]),
        (field[centre[0]::-1, centre[1]], -x[centre[0]::-1]),
    ):
        i = int(np.argmax(profile > level))
        radii.append(np.interp(level, profile[i - 1 : i + 1], positions[i - 1 : i + 1]))
    return float(np.mean(radii))


def frozen_radius(result, grid, tissue, snapshot):
    """Radius (mm) of the circle with the frozen area: sum of (1 - f_u) over the cross-section."""
    temperatures = result.temperatures[snapshot, 0].astype(float)
    frozen = 1.0 - tissue.unfrozen_fraction(temperatures)
    area = (frozen * grid.cell_volumes()[0] / grid.widths(2)[0]).sum()
    return float(np.sqrt(area / np.pi))


# ----------------------------------------------------------------- 1. Neumann
def neumann_lambda(t_surface=-150.0, t_initial=37.0):
    nu = np.sqrt(ALPHA_F / ALPHA_U)

    def equation(lam):
        return (
            np.exp(-lam**2) / erf(lam)
            - (K_U / K_F) * nu * (t_initial - 0.0) / (0.0 - t_surface) * np.exp(-(lam**2) * nu**2) / erfc(lam * nu)
            - lam * np.sqrt(np.pi) * LATENT / (C_F * (0.0 - t_surface))
        )

    return brentq(equation, 1e-3, 3.0)


def neumann_position(level, t, lam, t_surface=-150.0):
    """Depth (mm) of the ``level`` isotherm on the frozen side at ``t`` s."""
    fraction = (level - t_surface) / (0.0 - t_surface) * erf(lam)
    from scipy.special import erfinv

    return 2 * np.sqrt(ALPHA_F * t) * erfinv(fraction) * 1e3


def run_slab(spacing, *, width=0.5, times=(60.0, 300.0, 600.0), max_step=None, dtype=np.float64):
    grid = slab_grid(spacing)
    surface = rasterise(grid, HalfSpace((0.0, 0.0, 0.0), (1.0, 0.0, 0.0)))
    tissue = r98(width=width)
    result = solve(
        grid, np.zeros(grid.shape, np.uint8), [tissue],
        [Phase(max(times), held=[HeldBoundary(surface, -150.0)])],
        snapshot_times=times, outer_boundary="insulated", max_step=max_step, dtype=dtype,
    )
    return grid, result


def test_neumann_lambda_matches_physics_notes():
    assert neumann_lambda() == pytest.approx(0.49893, abs=2e-5)
    lam = neumann_lambda()
    expected = {0.0: (8.148, 18.218, 25.765), -20.0: (6.907, 15.445, 21.843), -40.0: (5.742, 12.840, 18.158)}
    for level, positions in expected.items():
        for t, position in zip((60, 300, 600), positions):
            assert neumann_position(level, t, lam) == pytest.approx(position, abs=1.5e-3)


@functools.lru_cache(maxsize=None)
def slab_run(spacing):
    """The Neumann slab at ``spacing`` mm, computed once per test session."""
    return run_slab(spacing)


def test_neumann_planar_fronts_within_two_percent():
    grid, result = slab_run(0.25)
    lam = neumann_lambda()
    for level in (0.0, -20.0, -40.0):
        for snapshot, t in enumerate((60.0, 300.0, 600.0)):
            got = slab_front(result, grid, snapshot, level)
            assert got == pytest.approx(neumann_position(level, t, lam), rel=0.02), (level, t)


def test_neumann_error_falls_with_refinement():
    """Frozen-side temperature error (RMS over three times) and worst front error both fall."""
    lam = neumann_lambda()
    rms_errors, front_errors = [], []
    for spacing in (1.0, 0.5, 0.25):
        grid, result = slab_run(spacing)
        x = grid.centres(0)
        rms = []
        for snapshot, t in enumerate((60.0, 300.0, 600.0)):
            front = 2 * lam * np.sqrt(ALPHA_F * t) * 1e3
            frozen = (x > 0) & (x < 0.9 * front)
            exact = -150.0 + 150.0 * erf(x[frozen] * 1e-3 / (2 * np.sqrt(ALPHA_F * t))) / erf(lam)
            rms.append(np.sqrt(np.mean((result.temperatures[snapshot, 0, 0, frozen] - exact) ** 2)))
        rms_errors.append(np.mean(rms))
        front_errors.append(
            max(
                abs(slab_front(result, grid, snapshot, level) / neumann_position(level, t, lam) - 1)
                for level in (0.0, -20.0, -40.0)
                for snapshot, t in enumerate((60.0, 300.0, 600.0))
            )
        )
    assert rms_errors[1] < 0.7 * rms_errors[0] and rms_errors[2] < 0.7 * rms_errors[1], rms_errors
    assert front_errors[1] < front_errors[0] and front_errors[2] < front_errors[1], front_errors


# ----------------------------------------------------------------- 2. one-phase Stefan
@pytest.mark.parametrize("stefan, expected", [(0.1, 0.22002), (0.5, 0.46479), (1.0, 0.62006), (2.0, 0.80060)])
def test_one_phase_stefan_lambda(stefan, expected):
    lam = brentq(lambda l: l * np.exp(l * l) * erf(l) - stefan / np.sqrt(np.pi), 1e-6, 5.0)
    assert lam == pytest.approx(expected, abs=1e-5)
    drop = 50.0  # surface 50 degC below the melting point; latent heat sets the Stefan number
    tissue = r98(latent=C_F * drop / stefan)
    grid = slab_grid(0.25, length=40.0, outer=60.0)
    surface = rasterise(grid, HalfSpace((0.0, 0.0, 0.0), (1.0, 0.0, 0.0)))
    duration = (14.0e-3 / (2 * lam)) ** 2 / ALPHA_F  # the front reaches 14 mm
    result = solve(
        grid, np.zeros(grid.shape, np.uint8), [tissue], [Phase(duration, held=[HeldBoundary(surface, -drop)])],
        initial_temperature=1e-9, arterial_temperature=0.0, outer_boundary="insulated", dtype=np.float64,
    )
    x = grid.centres(0)
    frozen = 1.0 - tissue.unfrozen_fraction(result.temperatures[-1, 0, 0].astype(float))
    thickness = (frozen * grid.widths(0))[x > 0].sum() * 1e-3
    assert thickness / (2 * np.sqrt(ALPHA_F * duration)) == pytest.approx(lam, rel=0.005)


# ----------------------------------------------------------------- 3. line sink
def line_sink_lambda(q=500.0, t_initial=37.0):
    mu = ALPHA_F / ALPHA_U

    def balance(lam):
        return (
            q / (4 * np.pi) * np.exp(-lam * lam)
            - K_U * t_initial * np.exp(-lam * lam * mu) / exp1(lam * lam * mu)
            - lam * lam * ALPHA_F * LATENT
        )

    return brentq(balance, 1e-3, 2.0)


def quarter_grid(spacing, core, outer, *, ratio=1.12, max_cell_factor=16, thickness=1.0):
    """A quarter cross-section x, y >= 0 around a long probe on the z axis (zero-flux on the
    x = 0 and y = 0 symmetry planes), fine to ``core`` mm then stretched to ``outer`` mm."""
    faces = stretched_faces(0.0, core, 0.0, outer, spacing, ratio=ratio, max_cell=max_cell_factor * spacing)
    return ThermalGrid(faces, faces, [-thickness / 2, thickness / 2], np.zeros(3), np.eye(3))


def first_row(result, grid, snapshot):
    """Temperatures along the first cell row (y = h / 2) and their true distance from the axis (mm)."""
    x = grid.centres(0)
    return np.hypot(x, grid.centres(1)[0]), result.temperatures[snapshot, 0, 0, :].astype(float)


def crossing(radii, values, level):
    """Radius where ``values`` first rise through ``level``; interpolated in ln r (radial profiles
    are close to logarithmic)."""
    i = int(np.argmax(values > level))
    return float(np.exp(np.interp(level, values[i - 1 : i + 1], np.log(radii[i - 1 : i + 1]))))


def quarter_frozen_radius(result, grid, tissue, snapshot):
    """Radius (mm) of the circle with the frozen area (four quarters, sum of 1 - f_u)."""
    frozen = 1.0 - tissue.unfrozen_fraction(result.temperatures[snapshot, 0].astype(float))
    area = 4 * (frozen * grid.cell_volumes()[0] / grid.widths(2)[0]).sum()
    return float(np.sqrt(area / np.pi))


QUARTER = ("x-", "y-")


def test_line_sink_radii_and_temperatures():
    """Case 3: Q = 500 W/m from t = 0; a quarter cross-section at 0.125 mm, the sink over the cells
    within 0.2 mm of the axis."""
    lam = line_sink_lambda()
    assert lam == pytest.approx(0.23717, abs=1e-5)
    tissue = r98(width=0.5)
    grid = quarter_grid(0.125, core=16.0, outer=40.0)
    sink = rasterise(grid, Cylinder((0.0, 0.0, -0.5), (0.0, 0.0, 0.5), 0.2))
    times = (60.0, 300.0, 600.0)
    result = solve(
        grid, np.zeros(grid.shape, np.uint8), [tissue],
        [Phase(600.0, sources=[SourceBoundary(sink, power_w=-500.0 * 1e-3 / 4)])],
        snapshot_times=times, dtype=np.float64, insulated_faces=QUARTER,
    )
    expected_front = (3.873, 8.660, 12.247)
    expected_m20 = (2.301, 5.146, 7.278)
    expected_t075 = (-64.3, -96.2, -110.0)
    for snapshot, t in enumerate(times):
        front = 2 * lam * np.sqrt(ALPHA_F * t) * 1e3
        assert front == pytest.approx(expected_front[snapshot], abs=1.5e-3)

        def exact(r):
            return -500.0 / (4 * np.pi * K_F) * (exp1((r * 1e-3) ** 2 / (4 * ALPHA_F * t)) - exp1(lam * lam))

        r20 = brentq(lambda r: exact(r) + 20.0, 1e-4, front)
        assert r20 == pytest.approx(expected_m20[snapshot], abs=2e-3)
        assert exact(0.75) == pytest.approx(expected_t075[snapshot], abs=0.06)
        radii, values = first_row(result, grid, snapshot)
        assert quarter_frozen_radius(result, grid, tissue, snapshot) == pytest.approx(front, rel=0.015)
        assert crossing(radii, values, -20.0) == pytest.approx(r20, rel=0.015)
        assert np.interp(0.75, radii, values) == pytest.approx(exact(0.75), abs=1.0)


# ----------------------------------------------------------------- 4. steady perfused ice ball
def steady_cylinder_radius(a=0.75e-3, t_probe=-150.0, coefficient=4e4):
    delta = np.sqrt(K_U / coefficient)

    def balance(radius):
        frozen = K_F * (0.0 - t_probe) / (radius * np.log(radius / a))
        unfrozen = K_U * (37.0 - 0.0) * k1(radius / delta) / (delta * k0(radius / delta))
        return frozen - unfrozen

    return brentq(balance, 1.01 * a, 0.2), delta


def test_steady_perfused_cylinder():
    """Case 4: probe radius 0.75 mm at -150 degC, w rho_b c_b = 4e4 W/m3/K where unfrozen."""
    radius, delta = steady_cylinder_radius()
    a = 0.75e-3

    def frozen_profile_radius(level):
        return a * np.exp((level - (-150.0)) / (0.0 - (-150.0)) * np.log(radius / a))

    assert radius * 1e3 == pytest.approx(16.76, abs=0.01)
    assert frozen_profile_radius(-20.0) * 1e3 == pytest.approx(11.08, abs=0.01)
    assert frozen_profile_radius(-40.0) * 1e3 == pytest.approx(7.32, abs=0.01)
    tissue = r98(width=0.5, perfusion=0.01, blood=4.0e6)
    grid = quarter_grid(0.25, core=19.0, outer=40.0)
    probe = rasterise(grid, Cylinder((0.0, 0.0, -1.0), (0.0, 0.0, 1.0), 0.75))
    held = HeldBoundary(probe, -150.0)
    result = solve(
        grid, np.zeros(grid.shape, np.uint8), [tissue],
        [Phase(600.0, held=[held]), Phase(1200.0, held=[held], max_step=5.0),
         Phase(28200.0, held=[held], max_step=200.0)],
        snapshot_times=(600.0, 1800.0, 30000.0), dtype=np.float64, insulated_faces=QUARTER,
    )
    assert quarter_frozen_radius(result, grid, tissue, 0) == pytest.approx(12.9, rel=0.03)
    assert quarter_frozen_radius(result, grid, tissue, 1) == pytest.approx(15.8, rel=0.03)
    assert quarter_frozen_radius(result, grid, tissue, 2) == pytest.approx(radius * 1e3, rel=0.02)
    radii, values = first_row(result, grid, 2)
    assert crossing(radii, values, -20.0) == pytest.approx(frozen_profile_radius(-20.0) * 1e3, rel=0.02)
    assert crossing(radii, values, -40.0) == pytest.approx(frozen_profile_radius(-40.0) * 1e3, rel=0.02)


# ----------------------------------------------------------------- 5. Pennes, no phase change
def no_phase_change_tissue(coefficient=2000.0):
    """k = 0.5 W/m/K, C = 3.6 MJ/m3/K, perfusion w rho_b c_b = ``coefficient``, no freezing above -100 degC."""
    return r98(
        conductivity_frozen=K_U, heat_capacity_frozen=C_U, latent=0.0, liquidus=-100.0, solidus=-100.0,
        perfusion=coefficient / 4.0e6, blood=4.0e6,
    )


def test_pennes_cylinder_without_phase_change():
    delta = np.sqrt(K_U / 2000.0) * 1e3
    assert delta == pytest.approx(15.81, abs=0.01)

    def exact(r):
        return 37.0 + (10.0 - 37.0) * k0(r / delta) / k0(1.0 / delta)

    expected = {2.0: 16.414, 5.0: 24.587, 10.0: 30.094}
    for r, value in expected.items():
        assert exact(r) == pytest.approx(value, abs=1e-3)
    grid = quarter_grid(0.25, core=11.0, outer=5.2 * delta, ratio=1.15)
    assert grid.x_faces[-1] >= 5 * delta
    probe = rasterise(grid, Cylinder((0.0, 0.0, -1.0), (0.0, 0.0, 1.0), 1.0))
    result = solve(
        grid, np.zeros(grid.shape, np.uint8), [no_phase_change_tissue()],
        [Phase(36000.0, held=[HeldBoundary(probe, 10.0)], max_step=300.0)],
        dtype=np.float64, insulated_faces=QUARTER,
    )
    radii, values = first_row(result, grid, -1)
    for r, value in expected.items():
        got = np.interp(np.log(r), np.log(radii), values)
        assert got == pytest.approx(exact(r), abs=0.05), r


def test_pennes_sphere_without_phase_change():
    delta = np.sqrt(K_U / 2000.0) * 1e3

    def exact(r):
        return 37.0 + (10.0 - 37.0) * (1.0 / r) * np.exp(-(r - 1.0) / delta)

    expected = {2.0: 24.327, 5.0: 32.807, 10.0: 35.472}
    for r, value in expected.items():
        assert exact(r) == pytest.approx(value, abs=1e-3)
    faces = stretched_faces(0.0, 3.0, 0.0, 5.2 * delta, 0.25, ratio=1.2, max_cell=4.0)
    grid = ThermalGrid(faces, faces, faces, np.zeros(3), np.eye(3))
    sphere = rasterise(grid, Sphere((0.0, 0.0, 0.0), 1.0))
    result = solve(
        grid, np.zeros(grid.shape, np.uint8), [no_phase_change_tissue()],
        [Phase(36000.0, held=[HeldBoundary(sphere, 10.0)], max_step=600.0)],
        dtype=np.float64, insulated_faces=("x-", "y-", "z-"),
    )
    x = grid.centres(0)
    radii = np.sqrt(x**2 + 2 * x[0] ** 2)
    values = result.temperatures[-1, 0, 0, :].astype(float)
    for r, value in expected.items():
        got = np.interp(r, radii, values)
        assert got == pytest.approx(exact(r), abs=0.05), r


# ----------------------------------------------------------------- 6. conservation
@pytest.mark.parametrize("stretched", [False, True])
def test_enthalpy_is_conserved_in_an_insulated_box(stretched):
    rng = np.random.default_rng(7)
    if stretched:
        faces = [stretched_faces(-1.0, 1.0, -3.0, 3.0, 0.5, ratio=1.3) for _ in range(3)]
        grid = ThermalGrid(*faces, np.zeros(3), np.eye(3))
    else:
        grid = ThermalGrid.uniform((8, 9, 10), 0.5)
    soft = generic_soft_tissue()
    other = r98(width=2.0, name="other", conductivity_frozen=1.3, frozen_conductivity_varies=True)
    tissue_index = rng.integers(0, 2, size=grid.shape).astype(np.uint8)
    initial = rng.uniform(-60.0, 30.0, size=grid.shape)
    result = solve(
        grid, tissue_index, [soft, other], [Phase(40.0, max_step=2.0)],
        initial_temperature=initial, outer_boundary="insulated", snapshot_times=(0.0, 40.0), dtype=np.float64,
    )
    volumes = grid.cell_volumes()
    before = np.where(tissue_index == 0, soft.enthalpy(initial), other.enthalpy(initial))
    after = result.final_enthalpy
    assert np.ptp(result.temperatures[-1]) < 0.5 * np.ptp(initial)  # it did evolve
    assert np.abs(after - before).max() > 1e6  # cells exchanged heat
    scale = float((np.abs(before) * volumes).sum())
    assert abs(float((after * volumes).sum()) - float((before * volumes).sum())) <= 1e-12 * scale
