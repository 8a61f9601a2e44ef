"""Numba kernels of the enthalpy solver: the rate function and its helpers.

State: volumetric enthalpy ``H`` (J/m3) per cell, float32 or float64. Tissue is a
``uint8`` index into property tables of length ``3 * n_tissues``: index ``c`` is
tissue ``c`` free, ``c + n`` held (a boundary cell, not updated) and ``c + 2n`` inert
(a probe shaft: not updated, zero conductivity, so no heat crosses its faces).

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
                             k_frozen, k_unfrozen, k_varies, k_scale, T, K):
    """Fill ``T`` (degC) and ``K`` (W/m/K) from ``H`` (J/m3); all (nz, ny, nx)."""
    nz, ny, nx = H.shape
    for row in prange(nz * ny):
        z = row // ny
        y = row - z * ny
        if True:
            for x in range(nx):
                c = tissue[z, y, x]
                t, f = _state(H[z, y, x], solidus[c], liquidus[c], h_liquidus[c], c_frozen[c], c_unfrozen[c])
                kf = k_frozen[c]
                if k_varies[c]:
                    tf = min(t, liquidus[c])
                    tf = max(tf, COLDEST_FOR_CONDUCTIVITY)
                    kf = kf * KELVIN / (tf + KELVIN)
                T[z, y, x] = t
                K[z, y, x] = k_scale[c] * (f * k_unfrozen[c] + (1.0 - f) * kf)


@njit(fastmath=True, cache=True, inline="always")
def _face(k1, k2, a):
    """Series (harmonic) conductivity of a face; ``a`` is cell 1's share of the centre distance."""
    den = a * k2 + (1.0 - a) * k1
    if den > 0.0:
        return k1 * k2 / den
    return 0.0


@njit(parallel=True, fastmath=True, cache=True)
def stage(T, K, tissue, held, h_liquidus, perfusion, metabolic, arterial,
          cxm, cxp, ax, cym, cyp, ay, czm, czp, az,
          Y1, Y2, Y0, L0, out, mode, mu, nu, mut_dt, gt_dt):
    """One rate evaluation ``L(Y1)`` fused with the update that uses it.

    ``mode`` 0: ``out = L(Y1)``; 1: ``out = Y1 + mut_dt * L(Y1)`` (forward Euler / RKL
    stage 1); 2: the RKL2 stage ``out = mu Y1 + nu Y2 + (1 - mu - nu) Y0 + mut_dt L(Y1)
    + gt_dt L0``. ``out`` may alias ``Y2`` (read and written at the same cell only).
    ``cxm[i]``/``cxp[i]`` are ``1 / (w_i d)`` (1/m2) for the faces below/above cell ``i``
    and ``ax[i]`` is cell ``i``'s share of the distance to cell ``i + 1``.
    """
    nz, ny, nx = T.shape
    for row in prange(nz * ny):
        z = row // ny
        y = row - z * ny
        zm = max(z - 1, 0)
        zp = min(z + 1, nz - 1)
        if True:
            ym = max(y - 1, 0)
            yp = min(y + 1, ny - 1)
            for x in range(nx):
                c = tissue[z, y, x]
                y1 = Y1[z, y, x]
                if held[c]:
                    rate = 0.0
                else:
                    xm = max(x - 1, 0)
                    xp = min(x + 1, nx - 1)
                    t = T[z, y, x]
                    k = K[z, y, x]
                    rate = (
                        cxm[x] * _face(K[z, y, xm], k, ax[xm]) * (T[z, y, xm] - t)
                        + cxp[x] * _face(k, K[z, y, xp], ax[x]) * (T[z, y, xp] - t)
                        + cym[y] * _face(K[z, ym, x], k, ay[ym]) * (T[z, ym, x] - t)
                        + cyp[y] * _face(k, K[z, yp, x], ay[y]) * (T[z, yp, x] - t)
                        + czm[z] * _face(K[zm, y, x], k, az[zm]) * (T[zm, y, x] - t)
                        + czp[z] * _face(k, K[zp, y, x], az[z]) * (T[zp, y, x] - t)
                    )
                    hl = h_liquidus[c]
                    if y1 > 0.0 and (perfusion[c] != 0.0 or metabolic[c] != 0.0):
                        f = 1.0 if y1 >= hl else y1 / hl
                        rate += f * (perfusion[c] * (arterial - t) + metabolic[c])
                if mode == 0:
                    out[z, y, x] = rate
                elif mode == 1:
                    out[z, y, x] = y1 + mut_dt * rate
                else:
                    out[z, y, x] = (mu * y1 + nu * Y2[z, y, x] + (1.0 - mu - nu) * Y0[z, y, x]
                                    + mut_dt * rate + gt_dt * L0[z, y, x])


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
def rkl2_step(H, T, K, L0, A, B, tissue, held, solidus, liquidus, h_liquidus, c_frozen, c_unfrozen,
              k_frozen, k_unfrozen, k_varies, k_scale, perfusion, metabolic, arterial,
              cxm, cxp, ax, cym, cyp, ay, czm, czp, az,
              held_cells, held_tissue, held_group, group_target, group_tau, group_start, elapsed0,
              link_tissue, link_held, link_coefficient, link_extra,
              src_cells, src_q, src_g, src_reference,
              dt, mu, nu, mut, gt, c):
    """One RKL2 step of ``dt`` s with ``mu.size - 1`` stages (1: forward Euler), in place on ``H``.

    ``T``/``K`` must hold the state's temperature and conductivity on entry; they hold the
    new state's on return. ``A``, ``B``, ``L0`` are scratch arrays of ``H``'s shape.
    """
    stages = mu.size - 1
    Hf = H.reshape(-1)
    Tf = T.reshape(-1)
    Kf = K.reshape(-1)
    if stages == 1:
        stage(T, K, tissue, held, h_liquidus, perfusion, metabolic, arterial, cxm, cxp, ax, cym, cyp, ay,
              czm, czp, az, H, H, H, L0, A, 1, 0.0, 0.0, dt, 0.0)
        Af = A.reshape(-1)
        add_links(Tf, Kf, link_tissue, link_held, link_coefficient, link_extra, dt, Af)
        add_sources(Tf, src_cells, src_q, src_g, src_reference, dt, Af)
        set_held(Af, held_cells, held_tissue, held_group, group_target, group_tau, group_start, elapsed0 + dt,
                 solidus, liquidus, h_liquidus, c_frozen, c_unfrozen)
        Hf[:] = Af
        temperature_conductivity(H, tissue, solidus, liquidus, h_liquidus, c_frozen, c_unfrozen,
                                 k_frozen, k_unfrozen, k_varies, k_scale, T, K)
        return
    # L0 = L(Y0)
    stage(T, K, tissue, held, h_liquidus, perfusion, metabolic, arterial, cxm, cxp, ax, cym, cyp, ay,
          czm, czp, az, H, H, H, L0, L0, 0, 0.0, 0.0, 0.0, 0.0)
    L0f = L0.reshape(-1)
    add_links(Tf, Kf, link_tissue, link_held, link_coefficient, link_extra, 1.0, L0f)
    add_sources(Tf, src_cells, src_q, src_g, src_reference, 1.0, L0f)
    # Y1 = Y0 + mut1 dt L0
    Af = A.reshape(-1)
    factor = mut[1] * dt
    for n in range(Af.size):
        Af[n] = Hf[n] + factor * L0f[n]
    set_held(Af, held_cells, held_tissue, held_group, group_target, group_tau, group_start, elapsed0 + c[1] * dt,
             solidus, liquidus, h_liquidus, c_frozen, c_unfrozen)
    previous = A
    before = H
    for j in range(2, stages + 1):
        temperature_conductivity(previous, tissue, solidus, liquidus, h_liquidus, c_frozen, c_unfrozen,
                                 k_frozen, k_unfrozen, k_varies, k_scale, T, K)
        if j == 2:
            out = B
        else:
            out = before
        stage(T, K, tissue, held, h_liquidus, perfusion, metabolic, arterial, cxm, cxp, ax, cym, cyp, ay,
              czm, czp, az, previous, before, H, L0, out, 2, mu[j], nu[j], mut[j] * dt, gt[j] * dt)
        outf = out.reshape(-1)
        add_links(Tf, Kf, link_tissue, link_held, link_coefficient, link_extra, mut[j] * dt, outf)
        add_sources(Tf, src_cells, src_q, src_g, src_reference, mut[j] * dt, outf)
        set_held(outf, held_cells, held_tissue, held_group, group_target, group_tau, group_start,
                 elapsed0 + c[j] * dt, solidus, liquidus, h_liquidus, c_frozen, c_unfrozen)
        before = previous
        previous = out
    Hf[:] = previous.reshape(-1)
    temperature_conductivity(H, tissue, solidus, liquidus, h_liquidus, c_frozen, c_unfrozen,
                             k_frozen, k_unfrozen, k_varies, k_scale, T, K)
