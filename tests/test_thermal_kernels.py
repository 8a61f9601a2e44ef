"""The solver's numba kernels against plain numpy statements of the same formulas.

The kernels are written for speed (runs of equal tissue index, face fluxes carried from
plane to plane inside slabs of z, a row buffer for the RKL2 update); these tests pin them
to the straightforward definitions on small random grids in float64, including grids
with more z planes than slabs, mixed tissue indices along rows, and ``out`` aliasing ``Y2``.
"""

from __future__ import annotations

import numpy as np
import pytest

from planner.thermal import generic_soft_tissue, kernels
from planner.thermal.solver import _Tables


def _tables():
    tissues = [generic_soft_tissue(perfusion=0.0005), generic_soft_tissue(perfusion=0.004)]
    return _Tables(tissues, 37.0, np.float64)


def _reference_state(H, tissue, tables, arterial):
    """Temperature (degC), conductivity (W/m/K) and unfrozen-only source (W/m3), numpy."""
    sol, liq, hl = tables.solidus[tissue], tables.liquidus[tissue], tables.h_liquidus[tissue]
    f = np.clip(H / hl, 0.0, 1.0)
    t = np.where(H < 0, sol + H / tables.c_frozen[tissue],
                 np.where(H > hl, liq + (H - hl) / tables.c_unfrozen[tissue], sol + (liq - sol) * f))
    t_for_k = np.maximum(np.minimum(t, liq), kernels.COLDEST_FOR_CONDUCTIVITY)
    scale = np.where(tables.k_varies[tissue], kernels.KELVIN / (t_for_k + kernels.KELVIN), 1.0)
    k = tables.k_scale[tissue] * (f * tables.k_unfrozen[tissue] + (1 - f) * tables.k_frozen[tissue] * scale)
    p = f * (tables.perfusion[tissue] * (arterial - t) + tables.metabolic[tissue])
    return t, k, p


def _reference_rate(T, K, P, coefficients):
    """``P + div(k grad T)`` with series face conductivities and zero flux at the box faces."""
    rate = P.copy()
    for array_axis, (c_minus, c_plus, share) in zip((2, 1, 0), coefficients):
        n = T.shape[array_axis]
        if n < 2:
            continue
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[array_axis] = slice(0, n - 1)
        hi[array_axis] = slice(1, n)
        shape = [1, 1, 1]
        shape[array_axis] = n - 1
        a = share[:-1].reshape(shape)
        k1, k2 = K[tuple(lo)], K[tuple(hi)]
        flux = k1 * k2 / (a * k2 + (1 - a) * k1) * (T[tuple(hi)] - T[tuple(lo)])
        rate[tuple(lo)] += c_plus[:-1].reshape(shape) * flux
        rate[tuple(hi)] -= c_minus[1:].reshape(shape) * flux
    return rate


def _random_case(shape, seed):
    rng = np.random.default_rng(seed)
    tables = _tables()
    # runs of equal index along x, broken by other tissues, held (+2) and inert (+4) copies
    tissue = rng.integers(0, 2, shape).astype(np.uint8)
    tissue[rng.random(shape) < 0.5] = 0
    tissue[rng.random(shape) < 0.05] += 2
    tissue[rng.random(shape) < 0.05] = 4
    temperature = rng.uniform(-120.0, 40.0, shape)
    temperature[rng.random(shape) < 0.2] = rng.uniform(-9.0, 0.0)  # inside the mushy zone
    H = tables.enthalpy(tissue % 2, temperature)
    coefficients = []
    for n in shape[::-1]:
        c_minus = rng.uniform(1e6, 2e7, n)
        c_plus = rng.uniform(1e6, 2e7, n)
        c_minus[0] = 0.0
        c_plus[-1] = 0.0
        coefficients.append((c_minus, c_plus, rng.uniform(0.3, 0.7, n)))
    return rng, tables, tissue, H, coefficients


SHAPES = [(1, 1, 9), (1, 6, 1), (5, 1, 1), (3, 4, 5), (40, 7, 11)]


@pytest.mark.parametrize("shape", SHAPES)
def test_temperature_conductivity_matches_the_formulas(shape):
    _, tables, tissue, H, _ = _random_case(shape, 1)
    T, K, P = (np.empty(shape) for _ in range(3))
    kernels.temperature_conductivity(H, tissue, tables.solidus, tables.liquidus, tables.h_liquidus, tables.c_frozen,
                                     tables.c_unfrozen, tables.k_frozen, tables.k_unfrozen, tables.k_varies,
                                     tables.k_scale, tables.perfusion, tables.metabolic, 37.0, T, K, P)
    t, k, p = _reference_state(H, tissue, tables, 37.0)
    np.testing.assert_allclose(T, t, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(K, k, rtol=1e-12)
    np.testing.assert_allclose(P, p, rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_stage_matches_the_divergence(shape, mode):
    rng, tables, tissue, H, coefficients = _random_case(shape, 2)
    T, K, P = _reference_state(H, tissue, tables, 37.0)
    Y2 = H * rng.uniform(0.9, 1.1, shape)
    Y0 = H * rng.uniform(0.9, 1.1, shape)
    L0 = rng.normal(0.0, 1e5, shape)
    mu, nu, mut_dt, gt_dt = 1.4, -0.45, 0.02, -0.003
    rate = _reference_rate(T, K, P, coefficients)
    expected = {0: rate, 1: H + mut_dt * rate,
                2: mu * H + nu * Y2 + (1 - mu - nu) * Y0 + mut_dt * rate + gt_dt * L0, 3: rate}[mode]
    flat = [c for axis in coefficients for c in axis]
    out = np.full(shape, np.nan)
    second = Y2.copy()
    kernels.stage(T, K, P, *flat, H, second, Y0, L0, out, mode, mu, nu, mut_dt, gt_dt)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12 * scale)
    if mode == 3:
        # the first RKL2 stage: L0 into out and Y1 = Y0 + mut_dt L0 into the second state
        np.testing.assert_allclose(second, H + mut_dt * rate, rtol=0, atol=1e-12 * np.abs(H).max())
    else:
        np.testing.assert_array_equal(second, Y2)
    if mode == 2:
        # the RKL2 loop passes out = Y2 for most stages
        aliased = Y2.copy()
        kernels.stage(T, K, P, *flat, H, aliased, Y0, L0, aliased, mode, mu, nu, mut_dt, gt_dt)
        np.testing.assert_allclose(aliased, expected, rtol=0, atol=1e-12 * scale)


def test_track_and_min_max_match_numpy():
    rng = np.random.default_rng(3)
    shape = (6, 5, 7)
    widths = [rng.uniform(0.2, 2.0, n) for n in shape[::-1]]
    levels = np.array([0.0, -20.0, -40.0])
    minimum = np.full(shape, np.inf, dtype=np.float32)
    below = np.zeros((3,) + shape, dtype=np.float32)
    volumes = np.zeros(3)
    fields = [rng.uniform(-60.0, 37.0, shape).astype(np.float32) for _ in range(3)]
    for field in fields[1:]:
        field[:, ::2] = rng.uniform(1.0, 37.0, field[:, ::2].shape)  # whole rows warmer than every level
    for field in fields:
        kernels.track(field, *widths, levels, 0.5, minimum, below, volumes)
    cell_volume = widths[2][:, None, None] * widths[1][None, :, None] * widths[0][None, None, :]
    np.testing.assert_array_equal(minimum, np.minimum.reduce(fields))
    for m, level in enumerate(levels):
        np.testing.assert_allclose(below[m], 0.5 * sum((f < level) for f in fields))
        np.testing.assert_allclose(volumes[m], cell_volume[fields[-1] < level].sum(), rtol=1e-12)
    low, high, finite = kernels.min_max_finite(fields[0])
    assert (low, high, finite) == (fields[0].min(), fields[0].max(), True)
    for bad in (np.nan, np.inf, -np.inf):
        broken = fields[0].copy()
        broken[2, 3, 4] = bad
        assert kernels.min_max_finite(broken)[2] is False


def test_conduction_row_bound_bounds_the_largest_eigenvalue_and_is_tight():
    """The stability bound's geometry against the eigenvalues of the assembled operator:
    a stretched box with a held outer layer, a held block with surface links and an inert
    cell; unit conductivity and heat capacity."""
    from planner.thermal.solver import conduction_row_bound

    rng = np.random.default_rng(5)
    shape = (6, 5, 7)
    coefficients = []
    for n in shape[::-1]:
        faces = np.concatenate([[0.0], np.cumsum(rng.uniform(0.5e-3, 1.0e-3, n))])
        w, centres = np.diff(faces), 0.5 * (faces[1:] + faces[:-1])
        d = np.diff(centres)
        c_minus, c_plus = np.zeros(n), np.zeros(n)
        c_minus[1:], c_plus[:-1] = 1.0 / (w[1:] * d), 1.0 / (w[:-1] * d)
        share = np.full(n, 0.5)
        share[:-1] = 0.5 * w[:-1] / d
        coefficients.append((c_minus, c_plus, share))
    n_tissues = 1
    index = np.zeros(shape, dtype=np.uint8)
    index[0], index[-1], index[:, 0], index[:, -1], index[:, :, 0], index[:, :, -1] = 1, 1, 1, 1, 1, 1
    index[2:4, 2, 3] = 1  # a held block
    index[3, 3, 2] = 2  # an inert cell
    held_flat = np.flatnonzero(index.reshape(-1) == 1)
    link_tissue = np.ravel_multi_index(([2, 3, 2], [3, 2, 1], [3, 3, 3]), shape)
    link_held = np.ravel_multi_index(([2, 3, 2], [2, 2, 2], [3, 3, 3]), shape)
    link_coefficient = np.array([coefficients[1][1][3 - 1], coefficients[1][0][2], coefficients[1][1][1]])
    link_extra = np.array([2.5, 0.8, -0.4])
    assert set(link_held) <= set(held_flat)

    K = np.where(index == 2, 1e-9, 1.0)
    free = np.flatnonzero(index.reshape(-1) == 0)
    operator = np.zeros((free.size, free.size))
    for column, cell in enumerate(free):
        T = np.zeros(shape)
        T.reshape(-1)[cell] = 1.0
        rate = _reference_rate(T, K, np.zeros(shape), coefficients).reshape(-1)
        for n in range(link_tissue.size):
            flat = T.reshape(-1)
            rate[link_tissue[n]] += link_coefficient[n] * link_extra[n] * (flat[link_held[n]] - flat[link_tissue[n]])
        operator[:, column] = -rate[free]
    largest = np.max(np.real(np.linalg.eigvals(operator)))
    bound = conduction_row_bound(coefficients, index, n_tissues, link_tissue, link_coefficient, link_extra)
    assert largest <= bound * (1 + 1e-9)
    assert largest >= 0.6 * bound
    # the bound it replaced (every face and link counted twice) is looser
    old = 2.0 * (sum(float(np.max(c[0] + c[1])) for c in coefficients) + link_coefficient[0] * link_extra[0])
    assert bound < old
