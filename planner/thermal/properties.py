"""Thermal properties of one tissue class, and its enthalpy-temperature relation.

The solver state is the volumetric enthalpy ``H`` (J/m3). Per tissue, with
solidus ``T_s`` and liquidus ``T_l`` (degC), ``H = 0`` at ``T_s`` and

- frozen, ``T < T_s``:  ``H = C_f (T - T_s)``
- mushy, ``T_s <= T <= T_l``: ``H = C_m (T - T_s)`` with
  ``C_m = (C_f + C_u) / 2 + L / (T_l - T_s)``; the unfrozen fraction ``f_u`` rises
  linearly from 0 to 1 across the zone (``T_l == T_s`` is a sharp front: the latent
  heat is taken at one temperature)
- unfrozen, ``T > T_l``: ``H = H_l + C_u (T - T_l)``, ``H_l = C_m (T_l - T_s)``.

Conductivity is ``f_u k_u + (1 - f_u) k_f(T)`` with ``k_f(T) = k_f0 * 273.15 / (T + 273.15)``
when ``frozen_conductivity_varies`` (ice conducts better as it gets colder), else ``k_f0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from planner.errors import InputError

KELVIN = 273.15


@dataclass(frozen=True)
class TissueProperties:
    """Thermal properties of one tissue class (SI units, temperatures in degC).

    Parameters
    ----------
    name : str
        Tissue name, e.g. ``"muscle"``.
    conductivity_unfrozen : float
        W/m/K above the liquidus.
    conductivity_frozen : float
        W/m/K at 0 degC; below the solidus it is scaled by ``273.15 / T[K]`` when
        ``frozen_conductivity_varies``.
    heat_capacity_unfrozen, heat_capacity_frozen : float
        Volumetric heat capacity ``rho * c``, J/m3/K.
    latent_heat : float
        Volumetric latent heat, J/m3 (``rho * water fraction * 334 kJ/kg``).
    liquidus, solidus : float
        degC; freezing happens between them (``solidus <= liquidus``).
    perfusion : float
        1/s, blood volume flow per tissue volume; acts only where unfrozen.
    blood_heat_capacity : float
        J/m3/K, volumetric heat capacity of blood.
    metabolic_heat : float
        W/m3; acts only where unfrozen.
    frozen_conductivity_varies : bool
        Scale the frozen conductivity with ``273.15 / T[K]`` (off for the classical
        validation cases, which use a constant frozen conductivity).
    source : str
        Where the numbers come from.

    Raises
    ------
    InputError
        On non-physical values (non-positive conductivity or heat capacity, negative
        latent heat, perfusion or blood heat capacity, ``solidus > liquidus``); the
        message names the tissue and the field.
    """

    name: str
    conductivity_unfrozen: float
    conductivity_frozen: float
    heat_capacity_unfrozen: float
    heat_capacity_frozen: float
    latent_heat: float
    liquidus: float = -1.0
    solidus: float = -8.0
    perfusion: float = 0.0
    blood_heat_capacity: float = 3.8e6
    metabolic_heat: float = 0.0
    frozen_conductivity_varies: bool = True
    source: str = ""

    def __post_init__(self) -> None:
        positive = (
            ("conductivity_unfrozen", "W/m/K"),
            ("conductivity_frozen", "W/m/K"),
            ("heat_capacity_unfrozen", "J/m3/K"),
            ("heat_capacity_frozen", "J/m3/K"),
        )
        non_negative = (
            ("latent_heat", "J/m3"),
            ("perfusion", "1/s"),
            ("blood_heat_capacity", "J/m3/K"),
        )
        for field_name, unit in positive + non_negative:
            value = getattr(self, field_name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"tissue {self.name!r}: {field_name} must be a finite number, got {value!r}")
            if (field_name, unit) in positive and value <= 0:
                raise InputError(f"tissue {self.name!r}: {field_name} must be > 0 {unit}, got {value}")
            if value < 0:
                raise InputError(f"tissue {self.name!r}: {field_name} must be >= 0 {unit}, got {value}")
        for field_name in ("liquidus", "solidus", "metabolic_heat"):
            value = getattr(self, field_name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"tissue {self.name!r}: {field_name} must be a finite number, got {value!r}")
        if self.solidus > self.liquidus:
            raise InputError(
                f"tissue {self.name!r}: solidus ({self.solidus} degC) must not be above "
                f"liquidus ({self.liquidus} degC)"
            )
        if self.solidus <= -KELVIN:
            raise InputError(f"tissue {self.name!r}: solidus must be above absolute zero")

    # ------------------------------------------------------------ derived values
    @property
    def mushy_heat_capacity_sensible(self) -> float:
        """J/m3/K, the sensible part of the mushy-zone heat capacity, ``(C_f + C_u) / 2``."""
        return 0.5 * (self.heat_capacity_frozen + self.heat_capacity_unfrozen)

    @property
    def enthalpy_at_liquidus(self) -> float:
        """J/m3, enthalpy at the liquidus (``0`` at the solidus): sensible + latent heat."""
        return self.mushy_heat_capacity_sensible * (self.liquidus - self.solidus) + self.latent_heat

    @property
    def perfusion_coefficient(self) -> float:
        """W/m3/K, ``w * rho_b c_b``, the perfusion sink per kelvin below arterial temperature."""
        return self.perfusion * self.blood_heat_capacity

    def frozen_conductivity_at(self, temperature):
        """W/m/K of fully frozen tissue at ``temperature`` (degC, scalar or array)."""
        temperature = np.asarray(temperature, dtype=float)
        if not self.frozen_conductivity_varies:
            return np.full_like(temperature, self.conductivity_frozen)
        return self.conductivity_frozen * KELVIN / (temperature + KELVIN)

    def enthalpy(self, temperature):
        """Volumetric enthalpy, J/m3, at ``temperature`` (degC, scalar or array)."""
        t = np.asarray(temperature, dtype=float)
        h_l = self.enthalpy_at_liquidus
        frozen = self.heat_capacity_frozen * (t - self.solidus)
        unfrozen = h_l + self.heat_capacity_unfrozen * (t - self.liquidus)
        width = self.liquidus - self.solidus
        mushy = (t - self.solidus) / width * h_l if width > 0 else np.zeros_like(t)
        return np.where(t < self.solidus, frozen, np.where(t > self.liquidus, unfrozen, mushy))

    def temperature(self, enthalpy):
        """Temperature, degC, at volumetric ``enthalpy`` (J/m3, scalar or array)."""
        h = np.asarray(enthalpy, dtype=float)
        h_l = self.enthalpy_at_liquidus
        frozen = self.solidus + h / self.heat_capacity_frozen
        unfrozen = self.liquidus + (h - h_l) / self.heat_capacity_unfrozen
        mushy = self.solidus + (self.liquidus - self.solidus) * h / h_l if h_l > 0 else np.full_like(h, self.solidus)
        return np.where(h < 0, frozen, np.where(h > h_l, unfrozen, mushy))

    def unfrozen_fraction(self, temperature):
        """Unfrozen fraction ``f_u`` in [0, 1] at ``temperature`` (degC)."""
        t = np.asarray(temperature, dtype=float)
        width = self.liquidus - self.solidus
        if width <= 0:
            return (t > self.solidus).astype(float)
        return np.clip((t - self.solidus) / width, 0.0, 1.0)

    def conductivity(self, temperature):
        """W/m/K at ``temperature`` (degC): ``f_u k_u + (1 - f_u) k_f(T)``."""
        f_u = self.unfrozen_fraction(temperature)
        t = np.minimum(np.asarray(temperature, dtype=float), self.liquidus)
        return f_u * self.conductivity_unfrozen + (1.0 - f_u) * self.frozen_conductivity_at(t)

    def max_diffusivity(self, min_temperature: float) -> float:
        """m2/s, the largest ``k / C`` reachable down to ``min_temperature`` (degC).

        Sets the explicit stability limit: cold ice has the largest diffusivity.
        """
        coldest = min(min_temperature, self.solidus)
        k_frozen = float(self.frozen_conductivity_at(coldest))
        return max(
            k_frozen / self.heat_capacity_frozen,
            self.conductivity_unfrozen / self.heat_capacity_unfrozen,
        )


def generic_soft_tissue(
    *,
    perfusion: float = 0.0,
    liquidus: float = -1.0,
    solidus: float = -8.0,
    latent_heat: float = 300e6,
    frozen_conductivity_varies: bool = True,
    name: str = "generic soft tissue",
) -> TissueProperties:
    """The generic soft-tissue set used by most cryosurgery papers (PHYSICS.md "R98").

    ``k_u = 0.5``, ``k_f = 2.0`` W/m/K; ``C_u = 3.6``, ``C_f = 1.8`` MJ/m3/K; latent heat
    300 MJ/m3 by default; blood ``rho_b c_b = 4.0`` MJ/m3/K.
    """
    return TissueProperties(
        name=name,
        conductivity_unfrozen=0.5,
        conductivity_frozen=2.0,
        heat_capacity_unfrozen=3.6e6,
        heat_capacity_frozen=1.8e6,
        latent_heat=latent_heat,
        liquidus=liquidus,
        solidus=solidus,
        perfusion=perfusion,
        blood_heat_capacity=4.0e6,
        frozen_conductivity_varies=frozen_conductivity_varies,
        source="generic soft tissue (R98 set), see shared PHYSICS.md",
    )
