"""Numba kernels of the enthalpy solver: the rate function and its helpers.

State: volumetric enthalpy ``H`` (J/m3) per cell, float32 or float64. Tissue is a
``uint8`` index into property tables of length ``3 * n_tissues``: index ``c`` is
tissue ``c`` free, ``c + n`` held (a boundary cell) and ``c + 2n`` inert (a probe shaft:
a vanishing conductivity, so no heat crosses its faces). Held and inert cells are
updated like the others by the stencil and then restored by the step (sparse lists),
which keeps the stencil's inner loop free of table lookups so that it vectorises.

Outer faces of the box are zero-flux (neighbour index clamped to the cell itself);
a body-temperature outer boundary is made by holding the outermost cell layer.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

KELVIN = 273.15
# k_f(T) = k_f0 * 273.15 / T[K] diverges at absolute zero; no cryogen gets near this.
COLDEST_FOR_CONDUCTIVITY = -250.0


@njit(cache=True, inline="always")
def _state(h, solidus, liquidus, h_liquidus, c_frozen, c_unfrozen):
    """Temperature (degC) and unfrozen fraction for enthalpy ``h`` of one tissue."""
    if h < 0.0:
        return solidus + h / c_frozen, 0.0
    if h > h_liquidus:
        return liquidus + (h - h_liquidus) / c_unfrozen, 1.0
    if h_liquidus > 0.0:
        f = h / h_liquidus
        return solidus + (liquidus - solidus) * f, f
    return solidus, 1.0


@njit(parallel=True, fastmath=True, cache=True)
def temperature_conductivity(H, tissue, solidus, liquidus, h_liquidus, c_frozen, c_unfrozen,
                             k_frozen, k_unfrozen, k_varies, k_scale, perfusion, metabolic, arterial, T, K, P):
    """From ``H`` (J/m3) fill ``T`` (degC), ``K`` (W/m/K) and ``P`` (W/m3), the perfusion and
    metabolic source, which acts only in the unfrozen fraction; all (nz, ny, nx).

    The property lookups by tissue index live here, so that the stencil kernel reads plain
    arrays only. Written without branches (selects) so that it vectorises too.
    """
    nz, ny, nx = H.shape
    n_index = solidus.size
    # per-index constants, in the state's precision
    inv_cf = np.empty(n_index, dtype=T.dtype)
    inv_cu = np.empty(n_index, dtype=T.dtype)
    inv_hl = np.empty(n_index, dtype=T.dtype)
    width = np.empty(n_index, dtype=T.dtype)
    sol = np.empty(n_index, dtype=T.dtype)
    liq = np.empty(n_index, dtype=T.dtype)
    hl = np.empty(n_index, dtype=T.dtype)
    kf0 = np.empty(n_index, dtype=T.dtype)
    ku = np.empty(n_index, dtype=T.dtype)
    kv = np.empty(n_index, dtype=T.dtype)
    ks = np.empty(n_index, dtype=T.dtype)
    pf = np.empty(n_index, dtype=T.dtype)
    mt = np.empty(n_index, dtype=T.dtype)
    for c in range(n_index):
        inv_cf[c] = 1.0 / c_frozen[c]
        inv_cu[c] = 1.0 / c_unfrozen[c]
        # a sharp front (no sensible mushy heat, no latent heat) has h_liquidus 0: any h > 0 is unfrozen
        inv_hl[c] = 1.0 / h_liquidus[c] if h_liquidus[c] > 0.0 else 1e20
        width[c] = liquidus[c] - solidus[c]
        sol[c] = solidus[c]
        liq[c] = liquidus[c]
        hl[c] = h_liquidus[c]
        kf0[c] = k_frozen[c]
        ku[c] = k_unfrozen[c]
        kv[c] = 1.0 if k_varies[c] else 0.0
        ks[c] = k_scale[c]
        pf[c] = perfusion[c]
        mt[c] = metabolic[c]
    kelvin = T.dtype.type(KELVIN)
    coldest = T.dtype.type(COLDEST_FOR_CONDUCTIVITY)
    art = T.dtype.type(arterial)
    for row in prange(nz * ny):
        z = row // ny
        y = row - z * ny
        hrow = H[z, y]
        crow = tissue[z, y]
        trow = T[z, y]
        krow = K[z, y]
        prow = P[z, y]
        for x in range(nx):
            c = crow[x]
            h = hrow[x]
            f = min(max(h * inv_hl[c], 0.0), 1.0)
            t_frozen = sol[c] + h * inv_cf[c]
            t_unfrozen = liq[c] + (h - hl[c]) * inv_cu[c]
            t_mushy = sol[c] + width[c] * f
            t = t_frozen if h < 0.0 else (t_unfrozen if h > hl[c] else t_mushy)
            tf = max(min(t, liq[c]), coldest)
            scale = 1.0 + kv[c] * (kelvin / (tf + kelvin) - 1.0)
            trow[x] = t
            krow[x] = ks[c] * (f * ku[c] + (1.0 - f) * kf0[c] * scale)
            prow[x] = f * (pf[c] * (art - t) + mt[c])


@njit(fastmath=True, cache=True, inline="always")
def _face(k1, k2, a):
    """Series (harmonic) conductivity of a face; ``a`` is cell 1's share of the centre distance.
    Conductivities are > 0 (inert cells carry a vanishing one), so no zero check is needed."""
    return k1 * k2 / (a * k2 + (1.0 - a) * k1)


@njit(fastmath=True, cache=True, inline="always")
def _divergence(Trow, Krow, Tym, Kym, Typ, Kyp, Tzm, Kzm, Tzp, Kzp, x, xm, xp,
                cxm, cxp, ax, cy_m, cy_p, ay_m, ay_p, cz_m, cz_p, az_m, az_p):
    t = Trow[x]
    k = Krow[x]
    return (
        cxm[x] * _face(Krow[xm], k, ax[xm]) * (Trow[xm] - t)
        + cxp[x] * _face(k, Krow[xp], ax[x]) * (Trow[xp] - t)
        + cy_m * _face(Kym[x], k, ay_m) * (Tym[x] - t)
        + cy_p * _face(k, Kyp[x], ay_p) * (Typ[x] - t)
        + cz_m * _face(Kzm[x], k, az_m) * (Tzm[x] - t)
        + cz_p * _face(k, Kzp[x], az_p) * (Tzp[x] - t)
    )


@njit(parallel=True, fastmath=True, cache=True)
def stage(T, K, P, cxm, cxp, ax, cym, cyp, ay, czm, czp, az,
          Y1, Y2, Y0, L0, out, mode, mu, nu, mut_dt, gt_dt):
    """One rate evaluation ``L(Y1) = div(k grad T) + P`` fused with the update that uses it.

    ``mode`` 0: ``out = L(Y1)``; 1: ``out = Y1 + mut_dt * L(Y1)`` (forward Euler / RKL
    stage 1); 2: the RKL2 stage ``out = mu Y1 + nu Y2 + (1 - mu - nu) Y0 + mut_dt L(Y1)
    + gt_dt L0``. ``out`` may alias ``Y2`` (read and written at the same cell only).
    ``cxm[i]``/``cxp[i]`` are ``1 / (w_i d)`` (1/m2) for the faces below/above cell ``i`` (0
    at the box edge) and ``ax[i]`` is cell ``i``'s share of the distance to cell ``i + 1``.
    Held and inert cells are computed like any other and restored by the caller.
    The inner loop reads plain arrays only (no table lookups), so it vectorises.
    """
    nz, ny, nx = T.shape
    c0 = 1.0 - mu - nu
    for row in prange(nz * ny):
        z = row // ny
        y = row - z * ny
        zm = max(z - 1, 0)
        zp = min(z + 1, nz - 1)
        ym = max(y - 1, 0)
        yp = min(y + 1, ny - 1)
        cy_m = cym[y]
        cy_p = cyp[y]
        cz_m = czm[z]
        cz_p = czp[z]
        ay_m = ay[ym]
        ay_p = ay[y]
        az_m = az[zm]
        az_p = az[z]
        Trow = T[z, y]
        Krow = K[z, y]
        Prow = P[z, y]
        Tym = T[z, ym]
        Kym = K[z, ym]
        Typ = T[z, yp]
        Kyp = K[z, yp]
        Tzm = T[zm, y]
        Kzm = K[zm, y]
        Tzp = T[zp, y]
        Kzp = K[zp, y]
        orow = out[z, y]
        y1row = Y1[z, y]
        y2row = Y2[z, y]
        y0row = Y0[z, y]
        l0row = L0[z, y]
        # the two end cells clamp their outer neighbour to themselves (zero flux)
        for edge in range(2 if nx > 1 else 1):
            x = 0 if edge == 0 else nx - 1
            rate = Prow[x] + _divergence(Trow, Krow, Tym, Kym, Typ, Kyp, Tzm, Kzm, Tzp, Kzp, x, max(x - 1, 0),
                                         min(x + 1, nx - 1), cxm, cxp, ax, cy_m, cy_p, ay_m, ay_p, cz_m, cz_p,
                                         az_m, az_p)
            if mode == 0:
                orow[x] = rate
            elif mode == 1:
                orow[x] = y1row[x] + mut_dt * rate
            else:
                orow[x] = mu * y1row[x] + nu * y2row[x] + c0 * y0row[x] + mut_dt * rate + gt_dt * l0row[x]
        if mode == 0:
            for x in range(1, nx - 1):
                orow[x] = Prow[x] + _divergence(Trow, Krow, Tym, Kym, Typ, Kyp, Tzm, Kzm, Tzp, Kzp, x, x - 1, x + 1,
                                                cxm, cxp, ax, cy_m, cy_p, ay_m, ay_p, cz_m, cz_p, az_m, az_p)
        elif mode == 1:
            for x in range(1, nx - 1):
                rate = Prow[x] + _divergence(Trow, Krow, Tym, Kym, Typ, Kyp, Tzm, Kzm, Tzp, Kzp, x, x - 1, x + 1,
                                             cxm, cxp, ax, cy_m, cy_p, ay_m, ay_p, cz_m, cz_p, az_m, az_p)
                orow[x] = y1row[x] + mut_dt * rate
        else:
            for x in range(1, nx - 1):
                rate = Prow[x] + _divergence(Trow, Krow, Tym, Kym, Typ, Kyp, Tzm, Kzm, Tzp, Kzp, x, x - 1, x + 1,
                                             cxm, cxp, ax, cy_m, cy_p, ay_m, ay_p, cz_m, cz_p, az_m, az_p)
                orow[x] = mu * y1row[x] + nu * y2row[x] + c0 * y0row[x] + mut_dt * rate + gt_dt * l0row[x]


@njit(cache=True)
def add_links(T, K, link_tissue, link_held, link_coefficient, link_extra, factor, out):
    """Surface-link corrections: ``out[N] += factor * c (scale - 1) k_face (T_P - T_N)``
    on flat views (the stencil already applied scale 1)."""
    for n in range(link_tissue.size):
        a = link_tissue[n]
        b = link_held[n]
        ka = K[a]
        kb = K[b]
        den = ka + kb
        if den > 0.0:
            kf = 2.0 * ka * kb / den
            out[a] += factor * link_coefficient[n] * link_extra[n] * kf * (T[b] - T[a])


@njit(cache=True)
def add_sources(T, cells, rate_constant, rate_per_kelvin, reference, factor, out):
    """Volumetric sources on flat views: ``out[c] += factor * (q_c - g_c (T_c - reference_c))`` (W/m3)."""
    for n in range(cells.size):
        c = cells[n]
        out[c] += factor * (rate_constant[n] - rate_per_kelvin[n] * (T[c] - reference[n]))


@njit(cache=True)
def set_cells(H, cells, values):
    """``H[cells] = values`` on a flat view."""
    for n in range(cells.size):
        H[cells[n]] = values[n]


@njit(cache=True)
def fill_inert(T, inert_cells, neighbours):
    """Give inert (shaft) cells, for display only, the mean temperature of their non-inert
    neighbours; two sweeps reach the cells two deep. ``neighbours`` (n, 6) flat indices,
    -1 where absent or inert."""
    for sweep in range(2):
        for n in range(inert_cells.size):
            total = 0.0
            count = 0
            for m in range(6):
                nb = neighbours[n, m]
                if nb >= 0:
                    total += T[nb]
                    count += 1
            if count > 0:
                T[inert_cells[n]] = total / count


@njit(parallel=True, cache=True)
def track(T, wx, wy, wz, levels, dt, min_temperature, time_below, volumes):
    """Update the running minimum and the time spent below each level; write the volume
    (mm3) below each level into ``volumes`` (n_levels,)."""
    nz, ny, nx = T.shape
    n_levels = levels.size
    partial = np.zeros((nz, n_levels))
    for z in prange(nz):
        for y in range(ny):
            area = wz[z] * wy[y]
            for x in range(nx):
                t = T[z, y, x]
                if t < min_temperature[z, y, x]:
                    min_temperature[z, y, x] = t
                for m in range(n_levels):
                    if t < levels[m]:
                        time_below[m, z, y, x] += dt
                        partial[z, m] += area * wx[x]
    for m in range(n_levels):
        volumes[m] = partial[:, m].sum()


@njit(cache=True)
def _slice_min_max(plane, out, z):
    low = np.inf
    high = -np.inf
    count = 0
    for v in plane.flat:
        if np.isfinite(v):
            low = min(low, v)
            high = max(high, v)
        else:
            count += 1
    out[z, 0] = low
    out[z, 1] = high
    out[z, 2] = count


@njit(parallel=True, cache=True)
def min_max_finite(T):
    """``(min, max, all finite)`` of ``T`` (nz, ny, nx)."""
    nz = T.shape[0]
    out = np.empty((nz, 3))
    for z in prange(nz):
        _slice_min_max(T[z], out, z)
    return out[:, 0].min(), out[:, 1].max(), out[:, 2].sum() == 0


@njit(cache=True, inline="always")
def _enthalpy(t, solidus, liquidus, h_liquidus, c_frozen, c_unfrozen):
    """Volumetric enthalpy (J/m3) of one tissue at ``t`` degC (inverse of :func:`_state`)."""
    if t < solidus:
        return c_frozen * (t - solidus)
    if t > liquidus:
        return h_liquidus + c_unfrozen * (t - liquidus)
    if liquidus > solidus:
        return (t - solidus) / (liquidus - solidus) * h_liquidus
    return 0.0


@njit(cache=True)
def set_held(H_flat, held_cells, held_tissue, held_group, group_target, group_tau, group_start, elapsed,
             solidus, liquidus, h_liquidus, c_frozen, c_unfrozen):
    """Hold each boundary group's cells at ``target + (start - target) exp(-elapsed / tau)`` degC."""
    n_groups = group_target.size
    values = np.empty(n_groups)
    for g in range(n_groups):
        if group_tau[g] > 0.0:
            values[g] = group_target[g] + (group_start[g] - group_target[g]) * np.exp(-elapsed / group_tau[g])
        else:
            values[g] = group_target[g]
    for n in range(held_cells.size):
        c = held_tissue[n]
        H_flat[held_cells[n]] = _enthalpy(values[held_group[n]], solidus[c], liquidus[c], h_liquidus[c],
                                          c_frozen[c], c_unfrozen[c])


@njit(cache=True)
def restore(H_flat, cells, values):
    """``H[cells] = values`` (held outer layer and inert cells keep their enthalpy)."""
    for n in range(cells.size):
        H_flat[cells[n]] = values[n]


@njit(cache=True)
def rkl2_step(H, T, K, P, L0, A, B, tissue, solidus, liquidus, h_liquidus, c_frozen, c_unfrozen,
              k_frozen, k_unfrozen, k_varies, k_scale, perfusion, metabolic, arterial,
              cxm, cxp, ax, cym, cyp, ay, czm, czp, az,
              fixed_cells, fixed_values,
              held_cells, held_tissue, held_group, group_target, group_tau, group_start, elapsed0,
              link_tissue, link_held, link_coefficient, link_extra,
              src_cells, src_q, src_g, src_reference,
              dt, mu, nu, mut, gt, c):
    """One RKL2 step of ``dt`` s with ``mu.size - 1`` stages (1: forward Euler), in place on ``H``.

    ``T``/``K``/``P`` must hold the state's temperature, conductivity and unfrozen-only source
    on entry; they hold the new state's on return. ``A``, ``B``, ``L0`` are scratch arrays.
    After every stage the fixed cells (held outer layer, inert shaft) get back their
    enthalpy and the held boundary cells their prescribed one.
    """
    stages = mu.size - 1
    Hf = H.reshape(-1)
    Tf = T.reshape(-1)
    Kf = K.reshape(-1)
    if stages == 1:
        stage(T, K, P, cxm, cxp, ax, cym, cyp, ay, czm, czp, az, H, H, H, L0, A, 1, 0.0, 0.0, dt, 0.0)
        Af = A.reshape(-1)
        add_links(Tf, Kf, link_tissue, link_held, link_coefficient, link_extra, dt, Af)
        add_sources(Tf, src_cells, src_q, src_g, src_reference, dt, Af)
        restore(Af, fixed_cells, fixed_values)
        set_held(Af, held_cells, held_tissue, held_group, group_target, group_tau, group_start, elapsed0 + dt,
                 solidus, liquidus, h_liquidus, c_frozen, c_unfrozen)
        Hf[:] = Af
        temperature_conductivity(H, tissue, solidus, liquidus, h_liquidus, c_frozen, c_unfrozen,
                                 k_frozen, k_unfrozen, k_varies, k_scale, perfusion, metabolic, arterial, T, K, P)
        return
    # L0 = L(Y0)
    stage(T, K, P, cxm, cxp, ax, cym, cyp, ay, czm, czp, az, H, H, H, L0, L0, 0, 0.0, 0.0, 0.0, 0.0)
    L0f = L0.reshape(-1)
    add_links(Tf, Kf, link_tissue, link_held, link_coefficient, link_extra, 1.0, L0f)
    add_sources(Tf, src_cells, src_q, src_g, src_reference, 1.0, L0f)
    # Y1 = Y0 + mut1 dt L0
    Af = A.reshape(-1)
    factor = mut[1] * dt
    for n in range(Af.size):
        Af[n] = Hf[n] + factor * L0f[n]
    restore(Af, fixed_cells, fixed_values)
    set_held(Af, held_cells, held_tissue, held_group, group_target, group_tau, group_start, elapsed0 + c[1] * dt,
             solidus, liquidus, h_liquidus, c_frozen, c_unfrozen)
    previous = A
    before = H
    for j in range(2, stages + 1):
        temperature_conductivity(previous, tissue, solidus, liquidus, h_liquidus, c_frozen, c_unfrozen,
                                 k_frozen, k_unfrozen, k_varies, k_scale, perfusion, metabolic, arterial, T, K, P)
        if j == 2:
            out = B
        else:
            out = before
        stage(T, K, P, cxm, cxp, ax, cym, cyp, ay, czm, czp, az, previous, before, H, L0, out, 2,
              mu[j], nu[j], mut[j] * dt, gt[j] * dt)
        outf = out.reshape(-1)
        add_links(Tf, Kf, link_tissue, link_held, link_coefficient, link_extra, mut[j] * dt, outf)
        add_sources(Tf, src_cells, src_q, src_g, src_reference, mut[j] * dt, outf)
        restore(outf, fixed_cells, fixed_values)
        set_held(outf, held_cells, held_tissue, held_group, group_target, group_tau, group_start,
                 elapsed0 + c[j] * dt, solidus, liquidus, h_liquidus, c_frozen, c_unfrozen)
        before = previous
        previous = out
    Hf[:] = previous.reshape(-1)
    temperature_conductivity(H, tissue, solidus, liquidus, h_liquidus, c_frozen, c_unfrozen,
                             k_frozen, k_unfrozen, k_varies, k_scale, perfusion, metabolic, arterial, T, K, P)
