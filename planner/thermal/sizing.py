"""Size the solver's box from the physics: a quick 1D radial solve around one probe.

The 3D box needs a fine core where the ice and the steep gradients are, and enough
margin beyond for the body-temperature boundary not to matter. Both follow from the
radial temperature field around a single long probe, which a 1D enthalpy solve on a
graded radial mesh gives in milliseconds. Several probes side by side make a larger
ice ball than one (they share the cold), but that growth happens between and around
the probes, inside the segments' bounding box grown by the single-probe radius; the
margin factors below leave room for the rest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numba import njit

from planner.thermal.probes import PlacedProbe
from planner.thermal.properties import TissueProperties
from planner.thermal.protocol import ProtocolStep


@njit(cache=True)
def _radial_run(faces, h_state, t_state, k_frozen0, k_varies, k_unfrozen, c_frozen, c_unfrozen, solidus, liquidus,
                h_liquidus, perfusion, arterial, kinds, values, taus, extras, durations, dt_limit, levels):
    """Explicit 1D radial enthalpy solve; returns the largest radius (mm) reached by each level."""
    n = h_state.size
    centres = 0.5 * (faces[1:] + faces[:-1])
    volumes = 0.5 * (faces[1:] ** 2 - faces[:-1] ** 2)  # per radian per metre, m2
    reach = np.zeros(levels.size)
    flux = np.zeros(n + 1)
    k = np.zeros(n)
    probe_t = t_state[0]
    for step in range(durations.size):
        kind = kinds[step]
        steps = max(1, int(math.ceil(durations[step] / dt_limit)))
        dt = durations[step] / steps
        start_t = t_state[0]
        for m in range(steps):
            elapsed = (m + 1) * dt
            for i in range(n):
                hh = h_state[i]
                if hh < 0.0:
                    t = solidus + hh / c_frozen
                    f = 0.0
                elif hh > h_liquidus:
                    t = liquidus + (hh - h_liquidus) / c_unfrozen
                    f = 1.0
                else:
                    f = hh / h_liquidus if h_liquidus > 0.0 else 1.0
                    t = solidus + (liquidus - solidus) * f
                t_state[i] = t
                kf = k_frozen0
                if k_varies:
                    kf = k_frozen0 * 273.15 / (max(min(t, liquidus), -250.0) + 273.15)
                k[i] = f * k_unfrozen + (1.0 - f) * kf
            for i in range(1, n):
                kface = 2.0 * k[i - 1] * k[i] / (k[i - 1] + k[i])
                flux[i] = -kface * faces[i] * (t_state[i] - t_state[i - 1]) / (centres[i] - centres[i - 1])
            flux[n] = -k[n - 1] * faces[n] * (arterial - t_state[n - 1]) / (faces[n] - centres[n - 1])
            # probe surface (inner face): 0 none, 1 held temperature, 2 heat flux, 3 convective
            if kind == 1:
                target = values[step]
                if taus[step] > 0.0:
                    probe_t = target + (start_t - target) * math.exp(-elapsed / taus[step])
                else:
                    probe_t = target
                flux[0] = -k[0] * faces[0] * (t_state[0] - probe_t) / (centres[0] - faces[0])
            elif kind == 2:
                flux[0] = -values[step] / (2.0 * math.pi)  # W/m extracted, per radian (inwards)
            elif kind == 3:
                flux[0] = -extras[step] * faces[0] * (t_state[0] - values[step])
            else:
                flux[0] = 0.0
            for i in range(n):
                rate = (flux[i] - flux[i + 1]) / volumes[i]
                if h_state[i] > 0.0:
                    f = 1.0 if h_state[i] >= h_liquidus else h_state[i] / h_liquidus
                    rate += f * perfusion * (arterial - t_state[i])
                h_state[i] += dt * rate
            for lv in range(levels.size):
                for i in range(n - 1, -1, -1):
                    if t_state[i] < levels[lv]:
                        if faces[i + 1] > reach[lv]:
                            reach[lv] = faces[i + 1]
                        break
    return reach * 1e3


def radial_reach(
    probe: PlacedProbe,
    protocol: Sequence[ProtocolStep],
    tissue: TissueProperties,
    *,
    body_temperature: float = 37.0,
    levels: Sequence[float] = (0.0, 36.0),
    outer_mm: float = 80.0,
) -> np.ndarray:
    """Largest radius (mm from the probe axis) each temperature ``level`` reaches during
    ``protocol`` around one infinitely long ``probe`` in homogeneous ``tissue``.

    ``levels`` default: the ice edge (0 degC) and the edge of any noticeable cooling (36 degC
    for a 37 degC body).
    """
    radius = probe.radius_mm * 1e-3
    first = 0.2e-3
    faces = [radius]
    while faces[-1] < outer_mm * 1e-3:
        faces.append(faces[-1] + min(first * 1.04 ** (len(faces) - 1), 2e-3))
    faces = np.array(faces)
    t_state = np.full(faces.size - 1, float(body_temperature))
    h_state = np.asarray(tissue.enthalpy(t_state), dtype=float)
    kinds, values, taus, extras, durations = [], [], [], [], []
    boundary = probe.boundary
    for step in protocol:
        durations.append(step.duration)
        taus.append(boundary.cooldown_time)
        extras.append(0.0)
        if step.kind == "passive_thaw":
            kinds.append(0)
            values.append(0.0)
        elif step.kind == "active_thaw":
            kinds.append(1)
            values.append(step.thaw_temperature)
        elif boundary.kind == "temperature":
            kinds.append(1)
            values.append(boundary.freeze_temperature)
        elif boundary.kind == "heat_flux":
            kinds.append(2)
            values.append(boundary.heat_flux_per_length)
        else:
            kinds.append(3)
            values.append(boundary.coolant_temperature)
            extras[-1] = boundary.heat_transfer_coefficient
    coldest = min([body_temperature] + [v for kd, v in zip(kinds, values) if kd in (1, 3)] + [-200.0] * (2 in kinds))
    k_frozen_max = float(tissue.frozen_conductivity_at(max(min(coldest, tissue.solidus), -250.0)))
    alpha = max(k_frozen_max / tissue.heat_capacity_frozen, tissue.conductivity_unfrozen / tissue.heat_capacity_unfrozen)
    dt_limit = 0.4 * first**2 / alpha
    return _radial_run(
        faces, h_state, t_state, tissue.conductivity_frozen, tissue.frozen_conductivity_varies,
        tissue.conductivity_unfrozen, tissue.heat_capacity_frozen, tissue.heat_capacity_unfrozen, tissue.solidus,
        tissue.liquidus, tissue.enthalpy_at_liquidus, tissue.perfusion_coefficient, float(body_temperature),
        np.array(kinds, dtype=np.int64), np.array(values, dtype=float), np.array(taus, dtype=float),
        np.array(extras, dtype=float), np.array(durations, dtype=float), dt_limit, np.array(levels, dtype=float),
    )
