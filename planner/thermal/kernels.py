"""Numba kernels of the enthalpy solver: the rate function and its helpers.

State: volumetric enthalpy ``H`` (J/m3) per cell, float32 or float64. Tissue is a
``uint8`` index into property tables of length ``3 * n_tissues``: index ``c`` is
tissue ``c`` free, ``c + n`` held (a boundary cell) and ``c + 2n`` inert (a probe shaft:
a vanishing conductivity, so no heat crosses its faces). Held and inert cells are
updated like the others by the stencil and then restored by the step (sparse lists),
which keeps the stencil's inner loop free of table lookups so that it vectorises.

Outer faces of the box are zero-flux (no flux is computed through them);
a body-temperature outer boundary is made by holding the outermost cell layer.

A nested grid (:class:`planner.thermal.grid.NestedGrid`) is solved as flat arrays, level
after level: the stencil runs on each level's view, the cells a finer level covers are
inert, and :func:`add_interface_fluxes` carries the heat between levels.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

KELVIN = 273.15
# k_f(T) = k_f0 * 273.15 / T[K] diverges at absolute zero; no cryogen gets near this.
COLDEST_FOR_CONDUCTIVITY = -250.0
# z slabs the stencil kernel shares among threads (at most this many threads help it).
SLABS = 8


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


@njit(fastmath=True, error_model="numpy", cache=True)
def _state_run(h_run, t_run, k_run, p_run, inv_hl, inv_cf, inv_cu, solidus, liquidus, h_liquidus, width,
               k_frozen, k_unfrozen, k_varies, k_scale, perfusion, metabolic, arterial):
    """Temperature, conductivity and unfrozen-only source for a run of cells of one tissue
    index (scalar properties, in the state's precision; see :func:`temperature_conductivity`).
    ``error_model="numpy"``: a float division without a zero check, so that the loop vectorises."""
    real = t_run.dtype.type
    one = real(1.0)
    zero = real(0.0)
    kelvin = real(KELVIN)
    coldest = real(COLDEST_FOR_CONDUCTIVITY)
    for x in range(h_run.size):
        h = h_run[x]
        f = min(max(h * inv_hl, zero), one)
        t_frozen = solidus + h * inv_cf
        t_unfrozen = liquidus + (h - h_liquidus) * inv_cu
        t_mushy = solidus + width * f
        t = t_frozen if h < zero else (t_unfrozen if h > h_liquidus else t_mushy)
        tf = max(min(t, liquidus), coldest)
        scale = one + k_varies * (kelvin / (tf + kelvin) - one)
        t_run[x] = t
        k_run[x] = k_scale * (f * k_unfrozen + (one - f) * k_frozen * scale)
        p_run[x] = f * (perfusion * (arterial - t) + metabolic)


@njit(parallel=True, fastmath=True, error_model="numpy", cache=True)
def temperature_conductivity(H, tissue, solidus, liquidus, h_liquidus, c_frozen, c_unfrozen,
                             k_frozen, k_unfrozen, k_varies, k_scale, perfusion, metabolic, arterial, T, K, P):
    """From ``H`` (J/m3) fill ``T`` (degC), ``K`` (W/m/K) and ``P`` (W/m3), the perfusion and
    metabolic source, which acts only in the unfrozen fraction; all (nz, ny, nx).

    The property lookups by tissue index live here, so that the stencil kernel reads plain
    arrays only. Written with selects, not branches, so that it vectorises too.
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
    art = T.dtype.type(arterial)
    for row in prange(nz * ny):
        z = row // ny
        y = row - z * ny
        hrow = H[z, y]
        crow = tissue[z, y]
        trow = T[z, y]
        krow = K[z, y]
        prow = P[z, y]
        # A row is mostly one tissue index (held, inert or other tissues interrupt it):
        # take the properties once per run of equal indices, so that the inner loop uses
        # scalars instead of per-cell table gathers (about 4x faster). The run is a separate
        # function: inlined into this loop nest, it did not vectorise (2x slower).
        start = 0
        while start < nx:
            c = crow[start]
            stop = start + 1
            while stop < nx and crow[stop] == c:
                stop += 1
            _state_run(hrow[start:stop], trow[start:stop], krow[start:stop], prow[start:stop], inv_hl[c], inv_cf[c],
                       inv_cu[c], sol[c], liq[c], hl[c], width[c], kf0[c], ku[c], kv[c], ks[c], pf[c], mt[c], art)
            start = stop


@njit(parallel=True, fastmath=True, error_model="numpy", cache=True)
def stage(T, K, P, cxm, cxp, ax, cym, cyp, ay, czm, czp, az,
          Y1, Y2, Y0, L0, out, mode, mu, nu, mut_dt, gt_dt):
    """One rate evaluation ``L(Y1) = div(k grad T) + P`` fused with the update that uses it.

    ``mode`` 0: ``out = L(Y1)``; 1: ``out = Y1 + mut_dt * L(Y1)`` (forward Euler / RKL
    stage 1); 2: the RKL2 stage ``out = mu Y1 + nu Y2 + (1 - mu - nu) Y0 + mut_dt L(Y1)
    + gt_dt L0``; 3: the first RKL2 stage, ``out = L(Y1)`` and ``Y2 = Y1 + mut_dt * out``.
    ``out`` may alias ``Y2`` in mode 2 (read and written at the same cell only). The
    coefficients are used in the state's precision (float64 scalars would turn the update
    loop into float64 arithmetic with conversions, 15 % slower).
    ``cxm[i]``/``cxp[i]`` are ``1 / (w_i d)`` (1/m2) for the faces below/above cell ``i`` (0
    at the box edge) and ``ax[i]`` is cell ``i``'s share of the distance to cell ``i + 1``.
    Held and inert cells are computed like any other and restored by the caller.

    Each face's flux ``k_face (T_2 - T_1)`` (series conductivity, W/m/K * K) is computed
    once and used by both of its cells: threads take contiguous slabs of z planes and
    sweep them in order, carrying the fluxes through the faces below the current row
    (x: a row buffer, y: a row, z: a plane). The outer faces of the box carry no flux.
    """
    nz, ny, nx = T.shape
    real = T.dtype.type
    zero = real(0.0)
    one = real(1.0)
    mu = real(mu)
    nu = real(nu)
    mut_dt = real(mut_dt)
    gt_dt = real(gt_dt)
    # Numba shares the slabs among threads in equal contiguous blocks (static schedule, so a
    # thread the OS holds back delays the whole stage on a busy machine); each slab recomputes
    # the plane of faces below it (one plane in every nz / SLABS). A fixed count,
    # because reading the thread count here would keep numba from caching the kernel.
    n_slabs = min(nz, SLABS)
    for slab in prange(n_slabs):
        z_lo = slab * nz // n_slabs
        z_hi = (slab + 1) * nz // n_slabs
        flux_z = np.empty((ny, nx), dtype=T.dtype)  # through the face below each cell of plane z
        flux_y = np.empty(nx, dtype=T.dtype)  # through the faces below row y
        flux_x = np.empty(nx + 1, dtype=T.dtype)  # flux_x[x]: through the face below cell x
        rate = np.empty(nx, dtype=T.dtype)
        if z_lo == 0:
            flux_z[:, :] = zero
        else:
            a = real(az[z_lo - 1])
            for y in range(ny):
                k1 = K[z_lo - 1, y]
                k2 = K[z_lo, y]
                t1 = T[z_lo - 1, y]
                t2 = T[z_lo, y]
                row = flux_z[y]
                for x in range(nx):
                    row[x] = k1[x] * k2[x] / (a * k2[x] + (one - a) * k1[x]) * (t2[x] - t1[x])
        flux_x[0] = zero
        flux_x[nx] = zero
        for z in range(z_lo, z_hi):
            cz_m = real(czm[z])
            cz_p = real(czp[z])
            a_z = real(az[z])
            flux_y[:] = zero
            for y in range(ny):
                Trow = T[z, y]
                Krow = K[z, y]
                Prow = P[z, y]
                cy_m = real(cym[y])
                cy_p = real(cyp[y])
                for x in range(nx - 1):
                    a = real(ax[x])
                    k1 = Krow[x]
                    k2 = Krow[x + 1]
                    flux_x[x + 1] = k1 * k2 / (a * k2 + (one - a) * k1) * (Trow[x + 1] - Trow[x])
                below_z = flux_z[y]
                for x in range(nx):
                    rate[x] = (Prow[x] + real(cxp[x]) * flux_x[x + 1] - real(cxm[x]) * flux_x[x]
                               - cy_m * flux_y[x] - cz_m * below_z[x])
                if y + 1 < ny:
                    a_y = real(ay[y])
                    Kn = K[z, y + 1]
                    Tn = T[z, y + 1]
                    for x in range(nx):
                        k1 = Krow[x]
                        k2 = Kn[x]
                        f = k1 * k2 / (a_y * k2 + (one - a_y) * k1) * (Tn[x] - Trow[x])
                        rate[x] += cy_p * f
                        flux_y[x] = f
                if z + 1 < nz:
                    Kn = K[z + 1, y]
                    Tn = T[z + 1, y]
                    for x in range(nx):
                        k1 = Krow[x]
                        k2 = Kn[x]
                        f = k1 * k2 / (a_z * k2 + (one - a_z) * k1) * (Tn[x] - Trow[x])
                        rate[x] += cz_p * f
                        below_z[x] = f  # now the face below this cell in plane z + 1
                orow = out[z, y]
                if mode == 0:
                    for x in range(nx):
                        orow[x] = rate[x]
                elif mode == 1:
                    y1row = Y1[z, y]
                    for x in range(nx):
                        orow[x] = y1row[x] + mut_dt * rate[x]
                elif mode == 3:
                    y1row = Y1[z, y]
                    y2row = Y2[z, y]
                    for x in range(nx):
                        orow[x] = rate[x]
                        y2row[x] = y1row[x] + mut_dt * rate[x]
                else:
                    y1row = Y1[z, y]
                    y2row = Y2[z, y]
                    y0row = Y0[z, y]
                    l0row = L0[z, y]
                    # through the row buffer: ``out`` is often ``Y2`` itself, and the vectoriser's
                    # overlap check then falls back to scalar code (40 % slower stage). Written as
                    # Y0 plus small differences: mu Y1 + nu Y2 + c0 Y0 cancels large enthalpies
                    # (mu ~ 2, nu ~ -1), which in float32 arithmetic loses a few ulps per stage
                    # (0.06 degC on average over the two-probe benchmark); this rounds about once.
                    for x in range(nx):
                        y0 = y0row[x]
                        rate[x] = y0 + (mu * (y1row[x] - y0) + nu * (y2row[x] - y0)
                                        + mut_dt * rate[x] + gt_dt * l0row[x])
                    for x in range(nx):
                        orow[x] = rate[x]


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


@njit(parallel=True, fastmath=True, cache=True)
def track(T, wx, wy, wz, levels, dt, min_temperature, time_below, volumes):
    """Update the running minimum and the time spent below each level; write the volume
    (mm3) below each level into ``volumes`` (n_levels,)."""
    nz, ny, nx = T.shape
    n_levels = levels.size
    partial = np.zeros((nz, n_levels))
    warmest = -np.inf
    for m in range(n_levels):
        warmest = max(warmest, levels[m])
    real = T.dtype.type
    step = time_below.dtype.type(dt)
    nothing = time_below.dtype.type(0.0)
    for z in prange(nz):
        below = np.zeros(n_levels)
        for y in range(ny):
            trow = T[z, y]
            mrow = min_temperature[z, y]
            coldest = np.inf
            for x in range(nx):
                t = trow[x]
                mrow[x] = min(mrow[x], t)
                coldest = min(coldest, t)
            # most rows are warmer than every level: skip them; the others in branch-free
            # loops (one per level) that vectorise
            if coldest < warmest:
                area = wz[z] * wy[y]
                for m in range(n_levels):
                    level = real(levels[m])
                    brow = time_below[m, z, y]
                    total = 0.0
                    for x in range(nx):
                        inside = trow[x] < level
                        brow[x] += step if inside else nothing
                        total += wx[x] if inside else 0.0
                    below[m] += area * total
        for m in range(n_levels):
            partial[z, m] = below[m]
    for m in range(n_levels):
        volumes[m] = partial[:, m].sum()


@njit(parallel=True, cache=True)
def min_max_finite(T):
    """``(min, max, all finite)`` of ``T`` (nz, ny, nx); min and max are meaningful only
    when all values are finite."""
    nz, ny, nx = T.shape
    out = np.empty((nz, 3))
    for z in prange(nz):
        low = np.inf
        high = -np.inf
        # v - v is 0 for finite v and NaN otherwise: a branch-free finiteness check
        check = 0.0
        for y in range(ny):
            row = T[z, y]
            for x in range(nx):
                v = row[x]
                low = min(low, v)
                high = max(high, v)
                check += v - v
        out[z, 0] = low
        out[z, 1] = high
        out[z, 2] = check
    return out[:, 0].min(), out[:, 1].max(), bool(np.all(out[:, 2] == 0.0))


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


@njit(cache=True, inline="always")
def _flow(k_child, t_child, k_parent, t_parent, share):
    """Series conductivity of a child-parent link times the temperature step (W/m/K * K)."""
    return k_child * k_parent / (share * k_parent + (1.0 - share) * k_child) * (t_parent - t_child)


@njit(cache=True, inline="always")
def _four(face, i, j):
    """Sum of the four child flows ``face[2i:2i+2, 2j:2j+2]`` under one parent."""
    return face[2 * i, 2 * j] + face[2 * i + 1, 2 * j] + face[2 * i, 2 * j + 1] + face[2 * i + 1, 2 * j + 1]


@njit(parallel=True, fastmath=True, error_model="numpy", cache=True)
def _interface_children(Tc, Kc, Oc, Tp, Kp, box, c_child, share, xm, xp, ym, yp, zm, zp):
    """The children's side of one level boundary: each child cell on the box gains the flow
    from the parent beside it, and the flow is kept per box face (``xm``/``xp``: (nz, ny),
    ``ym``/``yp``: (nz, nx), ``zm``/``zp``: (ny, nx)) for :func:`_interface_parents`. One
    thread per plane of children: no two write a cell."""
    x0, x1, y0, y1, z0, z1 = box[0], box[1], box[2], box[3], box[4], box[5]
    nz, ny, nx = Tc.shape
    for cz in prange(nz):
        pz = z0 + cz // 2
        for cy in range(ny):
            py = y0 + cy // 2
            f = _flow(Kc[cz, cy, 0], Tc[cz, cy, 0], Kp[pz, py, x0 - 1], Tp[pz, py, x0 - 1], share)
            xm[cz, cy] = f
            Oc[cz, cy, 0] += c_child * f
            f = _flow(Kc[cz, cy, nx - 1], Tc[cz, cy, nx - 1], Kp[pz, py, x1], Tp[pz, py, x1], share)
            xp[cz, cy] = f
            Oc[cz, cy, nx - 1] += c_child * f
        for cx in range(nx):
            px = x0 + cx // 2
            f = _flow(Kc[cz, 0, cx], Tc[cz, 0, cx], Kp[pz, y0 - 1, px], Tp[pz, y0 - 1, px], share)
            ym[cz, cx] = f
            Oc[cz, 0, cx] += c_child * f
            f = _flow(Kc[cz, ny - 1, cx], Tc[cz, ny - 1, cx], Kp[pz, y1, px], Tp[pz, y1, px], share)
            yp[cz, cx] = f
            Oc[cz, ny - 1, cx] += c_child * f
        if cz == 0 or cz == nz - 1:
            pz = z0 - 1 if cz == 0 else z1
            face = zm if cz == 0 else zp
            for cy in range(ny):
                py = y0 + cy // 2
                for cx in range(nx):
                    px = x0 + cx // 2
                    f = _flow(Kc[cz, cy, cx], Tc[cz, cy, cx], Kp[pz, py, px], Tp[pz, py, px], share)
                    face[cy, cx] = f
                    Oc[cz, cy, cx] += c_child * f


@njit(parallel=True, fastmath=True, error_model="numpy", cache=True)
def _interface_parents(Op, box, c_parent, xm, xp, ym, yp, zm, zp):
    """The parents' side of one level boundary: each parent cell beside the child box loses
    the flow into its four children, summed from the faces :func:`_interface_children` kept
    (one thread per plane of parents: no two write a cell)."""
    x0, x1, y0, y1, z0, z1 = box[0], box[1], box[2], box[3], box[4], box[5]
    for pz in prange(z0 - 1, z1 + 1):
        if pz == z0 - 1 or pz == z1:
            face = zm if pz == z0 - 1 else zp
            for py in range(y0, y1):
                for px in range(x0, x1):
                    Op[pz, py, px] -= c_parent * _four(face, py - y0, px - x0)
            continue
        i = pz - z0
        for py in range(y0, y1):
            Op[pz, py, x0 - 1] -= c_parent * _four(xm, i, py - y0)
            Op[pz, py, x1] -= c_parent * _four(xp, i, py - y0)
        for px in range(x0, x1):
            Op[pz, y0 - 1, px] -= c_parent * _four(ym, i, px - x0)
            Op[pz, y1, px] -= c_parent * _four(yp, i, px - x0)


@njit(cache=True)
def add_interface_fluxes(T, K, levels, boxes, child_spacing, factor, out):
    """Heat across the boundaries of a nested grid's levels, on flat fields (see
    :meth:`planner.thermal.grid.NestedGrid.interface_links`, which lists the same links).

    ``boxes[l]`` = ``(x0, x1, y0, y1, z0, z1)``: the cells of level ``l - 1`` that level ``l``
    covers (row 0 unused); ``child_spacing[l]`` level ``l``'s cell (m). Each boundary cell of
    level ``l`` links to the parent cell beside it, across centres ``d = 1.5 h`` apart (the
    parent cells there are ``2 h`` wide): ``out[child] += factor k_face (T_p - T_c) / (h d)``,
    and the parent loses the same heat per its volume, ``h^2 / (d 8 h^3)``. Conservative: each
    link's flow is computed once, on the children's side, and the parents sum it.
    """
    real = out.dtype.type
    share = real(1.0 / 3.0)
    for number in range(1, levels.shape[0]):
        h = child_spacing[number]
        c_child = real(factor / (1.5 * h * h))
        c_parent = real(factor / (12.0 * h * h))
        Tc, Kc, Oc = _view(T, levels, number), _view(K, levels, number), _view(out, levels, number)
        Tp, Kp, Op = _view(T, levels, number - 1), _view(K, levels, number - 1), _view(out, levels, number - 1)
        nz, ny, nx = Tc.shape
        xm, xp = np.empty((nz, ny), dtype=out.dtype), np.empty((nz, ny), dtype=out.dtype)
        ym, yp = np.empty((nz, nx), dtype=out.dtype), np.empty((nz, nx), dtype=out.dtype)
        zm, zp = np.empty((ny, nx), dtype=out.dtype), np.empty((ny, nx), dtype=out.dtype)
        # children first (they keep the flows), then parents; a cell can be both (a level's
        # edge cell beside a finer box), and the two passes never run at once
        _interface_children(Tc, Kc, Oc, Tp, Kp, boxes[number], c_child, share, xm, xp, ym, yp, zm, zp)
        _interface_parents(Op, boxes[number], c_parent, xm, xp, ym, yp, zm, zp)


@njit(cache=True)
def _view(flat, levels, number):
    """Level ``number``'s (nz, ny, nx) view of a flat nested-grid field (``levels`` rows:
    offset, nz, ny, nx)."""
    start = levels[number, 0]
    shape = (levels[number, 1], levels[number, 2], levels[number, 3])
    return flat[start:start + shape[0] * shape[1] * shape[2]].reshape(shape)


# Row length of a flat field seen as rows by :func:`state_flat` (long rows vectorise well;
# enough of them to share among threads).
STATE_ROW = 512


@njit(cache=True)
def state_flat(H, tissue, solidus, liquidus, h_liquidus, c_frozen, c_unfrozen,
               k_frozen, k_unfrozen, k_varies, k_scale, perfusion, metabolic, arterial, T, K, P):
    """:func:`temperature_conductivity` on flat fields (any grid: it works cell by cell), as rows of
    ``STATE_ROW`` cells and a shorter last one; one parallel pass over all levels of a nested grid
    instead of one per level, on rows longer than most levels' (a quarter faster)."""
    n = H.size
    full = n // STATE_ROW * STATE_ROW
    parts = ((0, full, full // STATE_ROW, STATE_ROW), (full, n, 1, n - full))
    for start, stop, rows, length in parts:
        if stop > start:
            shape = (1, rows, length)
            temperature_conductivity(H[start:stop].reshape(shape), tissue[start:stop].reshape(shape), solidus,
                                     liquidus, h_liquidus, c_frozen, c_unfrozen, k_frozen, k_unfrozen, k_varies,
                                     k_scale, perfusion, metabolic, arterial, T[start:stop].reshape(shape),
                                     K[start:stop].reshape(shape), P[start:stop].reshape(shape))


@njit(cache=True)
def stage_levels(T, K, P, levels, axis_start, cxm, cxp, ax, cym, cyp, ay, czm, czp, az,
                 Y1, Y2, Y0, L0, out, mode, mu, nu, mut_dt, gt_dt):
    """:func:`stage` on every level of flat nested-grid fields; the axis coefficients of all
    levels are concatenated, level ``l``'s x ones starting at ``axis_start[l, 0]`` (y: 1, z: 2)."""
    for number in range(levels.shape[0]):
        nz, ny, nx = levels[number, 1], levels[number, 2], levels[number, 3]
        x0, y0, z0 = axis_start[number, 0], axis_start[number, 1], axis_start[number, 2]
        stage(_view(T, levels, number), _view(K, levels, number), _view(P, levels, number),
              cxm[x0:x0 + nx], cxp[x0:x0 + nx], ax[x0:x0 + nx], cym[y0:y0 + ny], cyp[y0:y0 + ny], ay[y0:y0 + ny],
              czm[z0:z0 + nz], czp[z0:z0 + nz], az[z0:z0 + nz],
              _view(Y1, levels, number), _view(Y2, levels, number), _view(Y0, levels, number),
              _view(L0, levels, number), _view(out, levels, number), mode, mu, nu, mut_dt, gt_dt)


@njit(cache=True)
def _add_sparse(T, K, levels, link_tissue, link_held, link_coefficient, link_extra, boxes, child_spacing,
                src_cells, src_q, src_g, src_reference, factor, out):
    """The rate terms outside the stencil, times ``factor``, added to ``out``: surface links,
    the links between nested levels and volumetric sources."""
    add_links(T, K, link_tissue, link_held, link_coefficient, link_extra, factor, out)
    add_interface_fluxes(T, K, levels, boxes, child_spacing, factor, out)
    add_sources(T, src_cells, src_q, src_g, src_reference, factor, out)


@njit(cache=True)
def rkl2_step(H, T, K, P, L0, A, B, tissue, levels, axis_start,
              solidus, liquidus, h_liquidus, c_frozen, c_unfrozen,
              k_frozen, k_unfrozen, k_varies, k_scale, perfusion, metabolic, arterial,
              cxm, cxp, ax, cym, cyp, ay, czm, czp, az,
              fixed_cells, fixed_values,
              held_cells, held_tissue, held_group, group_target, group_tau, group_start, elapsed0,
              link_tissue, link_held, link_coefficient, link_extra,
              boxes, child_spacing,
              src_cells, src_q, src_g, src_reference,
              dt, mu, nu, mut, gt, c):
    """One RKL2 step of ``dt`` s with ``mu.size - 1`` stages (1: forward Euler), in place on ``H``.

    All fields are flat nested-grid arrays (one level: the grid in C order); ``levels`` and
    ``axis_start`` place the levels in them (see :func:`stage_levels`). ``T``/``K``/``P`` must
    hold the state's temperature, conductivity and unfrozen-only source on entry; they hold
    the new state's on return. ``A``, ``B``, ``L0`` are scratch arrays. After every stage the
    fixed cells (held outer layer, inert shaft, covered cells) get back their enthalpy and
    the held boundary cells their prescribed one.
    """
    stages = mu.size - 1
    if stages == 1:
        stage_levels(T, K, P, levels, axis_start, cxm, cxp, ax, cym, cyp, ay, czm, czp, az, H, H, H, L0, A,
                     1, 0.0, 0.0, dt, 0.0)
        _add_sparse(T, K, levels, link_tissue, link_held, link_coefficient, link_extra, boxes, child_spacing,
                    src_cells, src_q, src_g, src_reference, dt, A)
        restore(A, fixed_cells, fixed_values)
        set_held(A, held_cells, held_tissue, held_group, group_target, group_tau, group_start, elapsed0 + dt,
                 solidus, liquidus, h_liquidus, c_frozen, c_unfrozen)
        H[:] = A
        state_flat(H, tissue, solidus, liquidus, h_liquidus, c_frozen, c_unfrozen,
                   k_frozen, k_unfrozen, k_varies, k_scale, perfusion, metabolic, arterial, T, K, P)
        return
    # L0 = L(Y0) and Y1 = Y0 + mut1 dt L0 in one pass, then the sparse terms on both
    factor = mut[1] * dt
    stage_levels(T, K, P, levels, axis_start, cxm, cxp, ax, cym, cyp, ay, czm, czp, az, H, A, H, L0, L0,
                 3, 0.0, 0.0, factor, 0.0)
    for weight, target in ((1.0, L0), (factor, A)):
        _add_sparse(T, K, levels, link_tissue, link_held, link_coefficient, link_extra, boxes, child_spacing,
                    src_cells, src_q, src_g, src_reference, weight, target)
    restore(A, fixed_cells, fixed_values)
    set_held(A, held_cells, held_tissue, held_group, group_target, group_tau, group_start, elapsed0 + c[1] * dt,
             solidus, liquidus, h_liquidus, c_frozen, c_unfrozen)
    previous = A
    before = H
    for j in range(2, stages + 1):
        state_flat(previous, tissue, solidus, liquidus, h_liquidus, c_frozen, c_unfrozen,
                   k_frozen, k_unfrozen, k_varies, k_scale, perfusion, metabolic, arterial, T, K, P)
        if j == 2:
            out = B
        else:
            out = before
        stage_levels(T, K, P, levels, axis_start, cxm, cxp, ax, cym, cyp, ay, czm, czp, az, previous, before, H,
                     L0, out, 2, mu[j], nu[j], mut[j] * dt, gt[j] * dt)
        _add_sparse(T, K, levels, link_tissue, link_held, link_coefficient, link_extra, boxes, child_spacing,
                    src_cells, src_q, src_g, src_reference, mut[j] * dt, out)
        restore(out, fixed_cells, fixed_values)
        set_held(out, held_cells, held_tissue, held_group, group_target, group_tau, group_start,
                 elapsed0 + c[j] * dt, solidus, liquidus, h_liquidus, c_frozen, c_unfrozen)
        before = previous
        previous = out
    H[:] = previous
    state_flat(H, tissue, solidus, liquidus, h_liquidus, c_frozen, c_unfrozen,
               k_frozen, k_unfrozen, k_varies, k_scale, perfusion, metabolic, arterial, T, K, P)
